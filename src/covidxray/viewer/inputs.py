"""Uploads for the viewer: read them as training does, and say when one is not what the model saw.

Reading goes through :func:`covidxray.data.imageio.read_image` and
:func:`covidxray.data.cache.resize_for_model` (the two steps of ``load_for_model``), so a file that
``covidxray index`` quarantines is refused here with the same reason (:class:`ImageReadError`),
and a 16-bit or CMYK file is converted the same way (and the page says how).

Warnings compare the upload with the run's training split (:class:`Reference`): the aspect ratio
and size of the original film (``splits.csv`` records each image's height and width), colour
saturation (an X-ray is grayscale; a photograph or a colour-mapped picture is not), the mean grey
level and contrast of the model input against those of a sample of training images (more than
:data:`Z_LIMIT` standard deviations away), and the run's out-of-distribution score
(:mod:`covidxray.evaluation.ood`; Lee et al. 2018).

References:
    Lee, K., Lee, K., Lee, H., Shin, J. (2018). A simple unified framework for detecting
    out-of-distribution samples and adversarial attacks. NeurIPS 31.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from covidxray.data.cache import resize_for_model
from covidxray.data.imageio import ImageReadError, is_dicom, read_image

Z_LIMIT = 3.0  # grey-level mean / contrast this many training standard deviations away is "far outside"
SATURATION_LIMIT = 0.15  # mean HSV saturation (0..1) above which an upload is called colourful
ASPECT_SLACK = 0.1  # relative margin around the training images' aspect-ratio range
REFERENCE_IMAGES = 200  # training images decoded for the grey-level reference


@dataclass
class Upload:
    """One readable upload.

    Attributes:
        name: File name shown in the page.
        image: ``(H, W)`` uint8 grayscale as decoded.
        x: ``(S, S)`` uint8 model input.
        saturation: Mean HSV saturation in 0..1 (None for DICOM).
        notes: How the file was converted (16-bit, colour, DICOM).
    """

    name: str
    image: np.ndarray
    x: np.ndarray
    saturation: float | None
    notes: list[str] = field(default_factory=list)


@dataclass
class Reference:
    """The training split's images, summarised for the warnings.

    Attributes:
        aspect: ``(min, max)`` width / height of the training films (None when unknown).
        mean: ``(mean, sd)`` of the per-image mean grey level of model inputs (None when unknown).
        contrast: ``(mean, sd)`` of the per-image standard deviation.
        n: Training images decoded for ``mean`` and ``contrast``.
        note: Why a part is missing ("" when complete).
    """

    aspect: tuple[float, float] | None = None
    mean: tuple[float, float] | None = None
    contrast: tuple[float, float] | None = None
    n: int = 0
    note: str = ""


def _notes_and_saturation(path: Path) -> tuple[list[str], float | None]:
    from PIL import Image

    if is_dicom(path):
        return ["DICOM: modality LUT and VOI LUT / window applied, MONOCHROME1 inverted, as in training"], None
    notes = []
    with Image.open(path) as im:
        mode = im.mode
        if mode.startswith("I;16") or mode in ("I", "F"):
            notes.append(f"{'16' if mode.startswith('I;16') else '32'}-bit image ({mode}): scaled to 8 bits by its "
                         "own min-max, as `covidxray index` and training do")
        if mode == "CMYK":
            notes.append("CMYK image: converted to grayscale by ITU-R 601 luma, as `covidxray index` does")
        if mode in ("L", "LA", "1", "F") or mode.startswith("I"):
            return notes, 0.0
        thumb = im.convert("RGB")
        thumb.thumbnail((256, 256))
        sat = np.asarray(thumb.convert("HSV"))[..., 1].astype(np.float64) / 255.0
    return notes, float(sat.mean())


def read_upload(path: str | Path, size: int) -> Upload:
    """Decode an upload for the model.

    Args:
        path: The uploaded file.
        size: Model input size.

    Returns:
        The :class:`Upload`.

    Raises:
        ImageReadError: Anything ``covidxray index`` would quarantine (the same reason).
    """
    path = Path(path)
    image = read_image(path)
    try:
        notes, saturation = _notes_and_saturation(path)
    except Exception:  # decoded above; the notes are extras
        notes, saturation = [], None
    return Upload(path.name, image, resize_for_model(image, size), saturation, notes)


def upload_error(err: ImageReadError) -> str:
    """The page's line for a refused upload: file name and the reader's reason."""
    return f"cannot use {Path(err.path).name}: {err.reason}"


def reference(table, size: int, n: int = REFERENCE_IMAGES, seed: int = 0) -> Reference:
    """Summarise the training rows of a run's ``splits.csv`` (see :class:`Reference`).

    Args:
        table: The run's splits table (``split``, ``path``; ``height``/``width`` when recorded).
        size: Model input size.
        n: Training images to decode for the grey-level statistics (a seeded sample).
        seed: Sample seed.
    """
    train = table[table["split"] == "train"]
    ref, notes = Reference(), []
    if {"height", "width"} <= set(train.columns) and len(train):
        hw = train[["height", "width"]].apply(lambda c: np.asarray(c, np.float64)).to_numpy()
        ok = (hw > 0).all(axis=1)
        if ok.any():
            ratio = hw[ok, 1] / hw[ok, 0]
            ref.aspect = (float(ratio.min()), float(ratio.max()))
    pick = train.sample(min(n, len(train)), random_state=seed) if len(train) else train
    means, stds = [], []
    for p in pick["path"]:
        try:
            x = resize_for_model(read_image(p), size).astype(np.float64)
        except ImageReadError:
            continue
        means.append(x.mean())
        stds.append(x.std())
    if len(means) >= 2:
        ref.mean = (float(np.mean(means)), float(np.std(means)))
        ref.contrast = (float(np.mean(stds)), float(np.std(stds)))
        ref.n = len(means)
    else:
        notes.append("training images not readable here: no grey-level check")
    if ref.aspect is None:
        notes.append("splits.csv has no image sizes: no aspect-ratio check")
    ref.note = "; ".join(notes)
    return ref


def _z(value: float, stats: tuple[float, float]) -> float:
    return (value - stats[0]) / max(stats[1], 1e-6)


def input_warnings(up: Upload, ref: Reference, size: int, ood_score: float | None = None,
                   ood_threshold: float | None = None) -> list[str]:
    """One line per way the upload differs from the training images (empty when none).

    Args:
        up: The upload.
        ref: The training reference.
        size: Model input size.
        ood_score: The run's OOD score of the upload (None without a detector).
        ood_threshold: The detector's threshold.
    """
    out: list[str] = []
    h, w = up.image.shape
    if ref.aspect is not None:
        lo, hi = ref.aspect
        if not lo * (1 - ASPECT_SLACK) <= w / h <= hi * (1 + ASPECT_SLACK):
            out.append(f"aspect ratio {w / h:.2f} (width / height) is outside the training films' {lo:.2f}-{hi:.2f}: "
                       f"it is squashed to {size}x{size} without padding")
    if min(h, w) < size:
        out.append(f"smaller than the model input ({w}x{h} px < {size} px): upsampled, fine detail is missing")
    if up.saturation is not None and up.saturation > SATURATION_LIMIT:
        out.append(f"not grayscale-like (mean colour saturation {up.saturation:.2f} > {SATURATION_LIMIT}): "
                   "X-rays are gray; a photograph or a colour-mapped picture is not what the model saw")
    x = up.x.astype(np.float64)
    for name, value, stats in (("mean grey level", x.mean(), ref.mean), ("contrast (std)", x.std(), ref.contrast)):
        if stats is not None and abs(_z(value, stats)) > Z_LIMIT:
            out.append(f"{name} {value:.0f} is far outside the training range ({stats[0]:.0f} +/- {stats[1]:.0f}, "
                       f"{ref.n} training images; {abs(_z(value, stats)):.1f} SD away)")
    if ood_score is not None and ood_threshold is not None and ood_score > ood_threshold:
        out.append(f"out-of-distribution score {ood_score:.2f} > the run's threshold {ood_threshold:.2f} (ood.json): "
                   "the image looks unlike the training images; its probabilities are not meaningful")
    return out


def example_paths(table, classes: Sequence[str], per_class: int = 2) -> list[str]:
    """Up to ``per_class`` existing test-split images per class (in class order) for the examples row."""
    test = table[table["split"] == "test"]
    out = []
    for c in classes:
        paths = [p for p in test.loc[test["label"] == c, "path"] if Path(p).is_file()]
        out += paths[:per_class]
    return out
