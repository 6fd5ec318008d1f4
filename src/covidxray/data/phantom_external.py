"""A phantom stand-in for an external dataset: phantoms from "other hospitals".

Real external data (``../shared/data/cxr-external``) is not available on a fresh clone, so the
notebooks and tests build an external set from phantoms that differ from the training phantoms the
way another hospital's films differ: another seed (other patients), another resolution, and per
source another intensity response (gain, offset and gamma, as another detector and processing
pipeline would give). Each source is written as its own ``source`` in the manifest, so the external
report breaks the results down by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from covidxray import atomic
from covidxray.data.phantoms import generate_dataset

#: Per source: ``(gain, offset, gamma)`` applied as ``255 * (gain * (x / 255) ** gamma) + offset``.
DEFAULT_SOURCES = {"hospital-bright": (0.8, 45.0, 0.8), "hospital-dark": (0.9, -10.0, 1.3)}


def shift_intensity(img: np.ndarray, gain: float, offset: float, gamma: float) -> np.ndarray:
    """Another detector's response: ``gain * x ** gamma + offset`` on [0, 255], clipped, uint8."""
    x = (img.astype(np.float32) / 255.0) ** gamma
    return np.clip(255.0 * gain * x + offset, 0, 255).astype(np.uint8)


def make_external_phantoms(out: str | Path, n_per_class: int = 20, size: int = 192, seed: int = 1234,
                           sources: Mapping[str, tuple[float, float, float]] | None = None) -> pd.DataFrame:
    """Write one phantom dataset per source under ``out/<source>/`` and one ``out/manifest.csv``.

    Args:
        out: Output folder.
        n_per_class: Images per class and source.
        size: Image side (differs from the training phantoms' on purpose).
        seed: Base seed; source ``i`` uses ``seed + i`` (other patients than the training set's).
        sources: ``{name: (gain, offset, gamma)}`` (default :data:`DEFAULT_SOURCES`).

    Returns:
        The combined manifest (paths relative to ``out``; ``source`` set per source; masks kept).
    """
    out = Path(out)
    frames = []
    for i, (name, (gain, offset, gamma)) in enumerate((sources or DEFAULT_SOURCES).items()):
        sub = out / name
        man = generate_dataset(sub, n_per_class=n_per_class, size=size, seed=seed + i)
        for rel in man["path"]:
            img = cv2.imread(str(sub / rel), cv2.IMREAD_GRAYSCALE)
            with atomic.atomic_path(sub / rel) as tmp:
                cv2.imwrite(str(tmp), shift_intensity(img, gain, offset, gamma))
        for col in ("path", "lung_mask", "lesion_mask", "marker_mask"):
            if col in man:
                man[col] = [f"{name}/{v}" if isinstance(v, str) and v else v for v in man[col]]
        man["source"] = name
        man["patient_id"] = [f"{name}:{p}" for p in man["patient_id"]]
        frames.append(man)
    manifest = pd.concat(frames, ignore_index=True)
    atomic.write_csv(manifest, out / "manifest.csv")
    return manifest
