"""The lung segmenter a run's lung field (``data.lung_field``) uses, pinned by its SHA-256.

Training loads ``data.lung_weights`` (a ``.keras`` file of :mod:`covidxray.lungs.segment`), copies it
into the run folder as ``lungs.keras`` and records its SHA-256 and held-out Dice in ``run.json``
(``mitigations.lung_segmenter``). Every later reader of the run (predict, evaluate, calibration,
OOD, interpret) loads that copy and refuses it when its hash differs from the record, so train and
test masks come from the same segmenter.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

from covidxray import atomic, paths
from covidxray.errors import RunError
from covidxray.runinfo import file_sha256

LUNGS_FILE = "lungs.keras"


def load_segmenter(path: str | Path):
    """Load a lung segmenter (:func:`covidxray.lungs.segment.load_segmenter`).

    Returns:
        An object with ``predict(uint8 (N, H, W)) -> bool (N, H, W)``, ``sha256`` and ``metrics``.

    Raises:
        RunError: The file is missing, or this checkout has no lung segmenter package.
    """
    if not Path(path).is_file():
        raise RunError(f"{path}: lung segmenter weights not found (data.lung_weights); train one with "
                       "covidxray lungs or set data.lung_field: none")
    return read_segmenter(path)


def read_segmenter(path: str | Path):
    """:func:`covidxray.lungs.segment.load_segmenter` of an existing file (tests put a stand-in here)."""
    try:
        from covidxray.lungs.segment import load_segmenter as load
    except ImportError as err:
        raise RunError(f"data.lung_field needs the lung segmenter package covidxray.lungs ({err})") from None
    return load(path)


def dice_of(segmenter) -> float | None:
    """The segmenter's held-out Dice from its ``metrics`` (None when it records none)."""
    from covidxray.lungs.segment import heldout_dice

    return heldout_dice(getattr(segmenter, "metrics", None) or {})


def install(cfg, run: Path, log=print):
    """Load ``data.lung_weights`` and copy it into the run (only when ``data.lung_field`` is not none).

    Returns:
        ``(segmenter, record)``: the loaded segmenter and the ``run.json`` record, or ``(None, None)``.
    """
    if cfg["data"]["lung_field"] == "none":
        return None, None
    src = paths.from_config(cfg["data"]["lung_weights"])
    seg = load_segmenter(src)
    target = Path(run) / LUNGS_FILE
    if not target.is_file() or file_sha256(target) != seg.sha256:
        with atomic.atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
    record_file = src.with_suffix(".json")  # the segmenter's own record (held-out metrics), read by its loader
    if record_file.is_file():
        atomic.write_bytes(target.with_suffix(".json"), record_file.read_bytes())
    record = {"file": LUNGS_FILE, "source": str(src), "sha256": seg.sha256, "dice": dice_of(seg),
              "metrics": getattr(seg, "metrics", None)}
    log(f"lung field '{cfg['data']['lung_field']}' (margin {cfg['data']['lung_margin']:g}): segmenter {src} "
        f"sha256 {seg.sha256[:12]}, held-out Dice {record['dice']}; copied to {target}")
    return seg, record


@functools.lru_cache(maxsize=4)
def _load_pinned(path: str, mtime_ns: int, sha256: str):
    actual = file_sha256(Path(path))
    if actual != sha256:
        raise RunError(f"{path}: lung segmenter sha256 {actual[:12]} differs from run.json's {sha256[:12]}; "
                       "the run's masks cannot be reproduced")
    seg = load_segmenter(path)
    if getattr(seg, "sha256", actual) != sha256:
        raise RunError(f"{path}: the loaded segmenter reports sha256 {seg.sha256[:12]}, run.json {sha256[:12]}")
    return seg


def run_segmenter(run_dir: str | Path, sha256: str):
    """The run's own segmenter copy, checked against the SHA-256 in its ``run.json``.

    Raises:
        RunError: ``lungs.keras`` is missing or differs from the record.
    """
    path = Path(run_dir) / LUNGS_FILE
    if not path.is_file():
        raise RunError(f"{run_dir}: trained with a lung field but {LUNGS_FILE} is missing")
    return _load_pinned(str(path.resolve()), path.stat().st_mtime_ns, sha256)
