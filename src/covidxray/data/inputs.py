"""Deterministic per-image input transforms against acquisition shortcuts, applied alike in train and predict.

A from-scratch model on cxr-dev learns how each class's images were produced (contrast, borders,
burned-in text) more than the lungs (DeGrave et al. 2021, "AI for radiographic COVID-19 detection
selects shortcuts over signal", Nat. Mach. Intell.). Two counter-measures act on the pixels the
model sees, after decoding and resizing (:func:`covidxray.data.cache.load_for_model`):

* ``data.normalize``: ``equalize`` maps each image's histogram to a flat one (``cv2.equalizeHist``);
  ``clahe`` equalizes tile by tile with a clip limit (contrast-limited adaptive histogram
  equalization, Zuiderveld 1994; ``cv2.createCLAHE(clipLimit, (tile, tile))``). Either removes
  per-source differences of exposure and contrast.
* ``data.lung_field``: ``crop`` cuts the lungs' bounding box (plus ``data.lung_margin`` x the side on
  each side) and resizes it back to the model size; ``mask`` zeroes every pixel farther than the margin
  from the lungs. The lung masks come from a lung segmenter (:mod:`covidxray.data.lungsource`).

Order: crop, then normalize (the histogram of what the model sees), then mask (zeroes stay zero).
The settings are recorded in ``run.json`` (``mitigations.input``) and every reader of a run rebuilds
them from there (:func:`for_run`), so a run is never fed images prepared another way. A run without
the key is "none" for both. Cached inputs live beside the plain decode-once cache in a folder whose
name adds the hash of these settings (and of the segmenter), so a plain array is never reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from covidxray import atomic
from covidxray.errors import ConfigError

NORMALIZE = ("none", "equalize", "clahe")
LUNG_FIELD = ("none", "crop", "mask")
CHUNK = 64  # images transformed per step while building a cache


@dataclass(frozen=True)
class InputSpec:
    """What happens to a decoded, resized image before the model (all "none": nothing).

    Args:
        normalize: ``none`` | ``equalize`` | ``clahe``.
        clahe_clip: CLAHE clip limit (OpenCV's; 1 = no contrast amplification beyond a flat histogram).
        clahe_tile: CLAHE tiles per side.
        lung_field: ``none`` | ``crop`` | ``mask``.
        lung_margin: Margin around the lungs as a fraction of the image side, in [0, 0.5].
        segmenter_sha256: SHA-256 of the lung segmenter's file ("" without a lung field).
    """

    normalize: str = "none"
    clahe_clip: float = 2.0
    clahe_tile: int = 8
    lung_field: str = "none"
    lung_margin: float = 0.05
    segmenter_sha256: str = ""

    def __post_init__(self):
        check_choice("data.normalize", self.normalize, NORMALIZE)
        check_choice("data.lung_field", self.lung_field, LUNG_FIELD)
        if not self.clahe_clip > 0:
            raise ConfigError(f"'data.clahe_clip' must be > 0, got {self.clahe_clip!r}")
        if not 1 <= self.clahe_tile <= 64:
            raise ConfigError(f"'data.clahe_tile' must be in [1, 64], got {self.clahe_tile!r}")
        if not 0.0 <= self.lung_margin <= 0.5:
            raise ConfigError(f"'data.lung_margin' must be in [0, 0.5], got {self.lung_margin!r}")

    @property
    def identity(self) -> bool:
        """True when the images pass unchanged."""
        return self.normalize == "none" and self.lung_field == "none"

    def to_dict(self) -> dict:
        """The settings as recorded in ``run.json`` (``mitigations.input``)."""
        return asdict(self)

    def key(self) -> str:
        """Short hash of the settings: part of the cache folder's name."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_config(cls, cfg, segmenter_sha256: str = "") -> InputSpec:
        """The ``data`` section's settings (``segmenter_sha256`` of the segmenter a lung field uses)."""
        d = cfg["data"]
        return cls(d["normalize"], float(d["clahe_clip"]), int(d["clahe_tile"]), d["lung_field"],
                   float(d["lung_margin"]), segmenter_sha256 if d["lung_field"] != "none" else "")

    @classmethod
    def from_meta(cls, meta: dict) -> InputSpec:
        """A run's recorded settings; a run from before ``mitigations`` existed gets "none"."""
        rec = dict((meta.get("mitigations") or {}).get("input") or {})
        unknown = set(rec) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"run.json mitigations.input has unknown keys {sorted(unknown)} (newer code?)")
        return cls(**rec)


def check_choice(key: str, value, choices) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"'{key}' must be one of {' | '.join(choices)}, got {value!r}")


def normalize_image(img: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``data.normalize`` on one ``(H, W)`` uint8 image (returned unchanged for ``none``)."""
    if spec.normalize == "equalize":
        return cv2.equalizeHist(img)
    if spec.normalize == "clahe":
        return cv2.createCLAHE(clipLimit=spec.clahe_clip, tileGridSize=(spec.clahe_tile,) * 2).apply(img)
    return img


def lung_box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """Bounding box ``(r0, r1, c0, c1)`` (end exclusive) of a mask, grown by ``margin`` x the side.

    An empty mask gives the whole image (nothing is cut when the segmenter finds no lungs).
    """
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return 0, h, 0, w
    mr, mc = int(round(margin * h)), int(round(margin * w))
    return (max(0, rows[0] - mr), min(h, rows[-1] + 1 + mr), max(0, cols[0] - mc), min(w, cols[-1] + 1 + mc))


def crop_box(img: np.ndarray, box: tuple[int, int, int, int], nearest: bool = False) -> np.ndarray:
    """The box of ``img`` resized back to ``img``'s shape (bilinear; nearest for masks)."""
    r0, r1, c0, c1 = box
    part = np.ascontiguousarray(img[r0:r1, c0:c1])
    if part.shape == img.shape:
        return part.copy()
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(part, img.shape[::-1], interpolation=flags)


def dilate(mask: np.ndarray, margin: float) -> np.ndarray:
    """The mask grown by ``margin`` x the side (elliptical structuring element)."""
    r = int(round(margin * mask.shape[0]))
    if r <= 0:
        return mask.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def apply(images: np.ndarray, spec: InputSpec, masks: np.ndarray | None = None,
          extra: tuple[np.ndarray, ...] = ()) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Transform ``(N, S, S)`` uint8 images; ``extra`` masks (lesions, lungs) follow a crop.

    Args:
        images: Decoded, resized images.
        spec: The settings.
        masks: ``(N, S, S)`` bool lung masks (needed unless ``spec.lung_field`` is ``none``).
        extra: Further ``(N, S, S)`` bool masks cropped like the images (unchanged by ``mask``).

    Returns:
        ``(images, extra)`` transformed, uint8 and bool.
    """
    x = np.asarray(images)
    if spec.lung_field != "none" and (masks is None or masks.shape != x.shape):
        raise ValueError(f"lung_field {spec.lung_field!r} needs lung masks of shape {x.shape}")
    out = np.empty_like(x, dtype=np.uint8)
    more = [np.array(e, bool, copy=True) for e in extra]
    for i in range(len(x)):
        img = x[i]
        if spec.lung_field == "crop":
            box = lung_box(masks[i], spec.lung_margin)
            img = crop_box(img, box)
            for e in more:
                e[i] = crop_box(e[i].astype(np.uint8), box, nearest=True) > 0
        img = normalize_image(np.ascontiguousarray(img, dtype=np.uint8), spec)
        if spec.lung_field == "mask":
            img = np.where(dilate(masks[i], spec.lung_margin), img, 0).astype(np.uint8)
        out[i] = img
    return out, tuple(more)


@dataclass
class ModelInputs:
    """An :class:`InputSpec` with the segmenter its lung field uses: callable on raw model-size images.

    Attributes:
        spec: The settings.
        segmenter: Object with ``predict(uint8 (N, H, W)) -> bool (N, H, W)`` (None without a lung field).
    """

    spec: InputSpec = field(default_factory=InputSpec)
    segmenter: object | None = None

    @property
    def identity(self) -> bool:
        return self.spec.identity

    def lungs(self, images: np.ndarray) -> np.ndarray | None:
        """The segmenter's lung masks of raw images (None without a lung field)."""
        if self.spec.lung_field == "none":
            return None
        if self.segmenter is None:
            raise ValueError(f"lung_field {self.spec.lung_field!r} needs a lung segmenter")
        return np.asarray(self.segmenter.predict(np.asarray(images, np.uint8)), bool)

    def __call__(self, images: np.ndarray, extra: tuple[np.ndarray, ...] = ()):
        """Transformed images (and, when ``extra`` is given, ``(images, extra)``)."""
        if self.identity:
            return (np.asarray(images), extra) if extra else np.asarray(images)
        x, more = apply(images, self.spec, self.lungs(images), extra)
        return (x, more) if extra else x

    def cached(self, base: np.ndarray) -> np.ndarray:
        """The transformed copy of a decode-once cache array, built once beside it (read-only memmap)."""
        if self.identity:
            return base
        src = Path(base.filename)
        folder = src.parent.with_name(f"{src.parent.name}-in{self.spec.key()}")
        target = folder / "images.npy"
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            atomic.remove_stale_tmp(folder)
            atomic.check_free_space(folder, base.nbytes + 2**16, f"the transformed image cache of {len(base)} images")
            with atomic.atomic_path(target) as tmp:
                arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=base.shape)
                for i in range(0, len(base), CHUNK):
                    arr[i : i + CHUNK] = self(np.asarray(base[i : i + CHUNK]))
                arr.flush()
                del arr
            atomic.write_json(folder / "meta.json", {"n": len(base), "from": src.parent.name, **self.spec.to_dict()})
        return np.load(target, mmap_mode="r")


def for_config(cfg, segmenter=None) -> ModelInputs:
    """The inputs a training run with this config uses (``segmenter`` loaded by the caller)."""
    return ModelInputs(InputSpec.from_config(cfg, getattr(segmenter, "sha256", "")), segmenter)


def for_run(meta: dict, run_dir: str | Path | None = None) -> ModelInputs:
    """The inputs a trained run was trained on, from its ``run.json`` (its own segmenter copy)."""
    spec = InputSpec.from_meta(meta)
    if spec.lung_field == "none":
        return ModelInputs(spec)
    from covidxray.data.lungsource import run_segmenter

    return ModelInputs(spec, run_segmenter(run_dir or meta["run_dir"], spec.segmenter_sha256))
