"""Out-of-distribution (OOD) score: does an input look like the run's training images at all?

A classifier returns confident probabilities for anything, a holiday photo or an inverted film
included. Every run therefore carries an OOD detector fitted on its *training* split, with its
threshold set on the *validation* split so that :data:`PASS_RATE` of in-distribution images pass.
It is stored in the run folder as ``ood.json`` (method, threshold, components, validation pass
rate, SHA-256 of the arrays) and ``ood_stats.npz`` (class means, precision matrices) and named in
``run.json`` under ``ood``. Higher scores mean "less like the training images"; an input is
flagged when its score exceeds the threshold.

Components (a method is one or several, see :data:`METHODS`):

* ``mahalanobis:<layer>``: class-conditional Mahalanobis distance with one shared (tied)
  covariance on the globally average-pooled activations of a layer, the smallest over classes
  (Lee et al., 2018). The covariance is a Ledoit-Wolf shrinkage estimate on standardised
  features: at 128 px the ``gap`` features are 2048-d and a split has about 1,260 images.
* ``mahalanobis:thumb``: the same on an 8x8 area-resized thumbnail of the input (64-d), an image
  statistic that sees global intensity layout (an inverted film has bright lungs).
* ``energy``: free energy ``-logsumexp(logits)`` of the classifier (Liu et al., 2020).
* ``msp``: negative maximum softmax probability (the usual baseline).

A multi-component method standardises each component by the median and spread of its validation
scores and takes the maximum. The default was chosen by measurement (``benchmarks/ood_auroc.py``).

References:
    Lee, K., Lee, K., Lee, H., Shin, J. (2018). A simple unified framework for detecting
    out-of-distribution samples and adversarial attacks. NeurIPS 31.
    Liu, W., Wang, X., Owens, J. D., Li, Y. (2020). Energy-based out-of-distribution detection.
    NeurIPS 33.
"""

from __future__ import annotations

import io
import json
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from covidxray import atomic, runinfo

OOD_JSON = "ood.json"
OOD_NPZ = "ood_stats.npz"
PASS_RATE = 0.95
THUMB = 8
#: Candidate methods: name -> components.
METHODS: dict[str, tuple[str, ...]] = {
    "msp": ("msp",),
    "energy": ("energy",),
    "mahalanobis": ("mahalanobis:gap",),
    "thumbnail": ("mahalanobis:thumb",),
    "lowlevel": ("mahalanobis:mixed0", "mahalanobis:mixed1"),
    "multilayer": ("mahalanobis:mixed0", "mahalanobis:mixed2", "mahalanobis:gap"),
    "mahalanobis+thumbnail": ("mahalanobis:gap", "mahalanobis:thumb"),
    "multilayer+thumbnail": ("mahalanobis:mixed0", "mahalanobis:mixed2", "mahalanobis:gap", "mahalanobis:thumb"),
    "energy+thumbnail": ("energy", "mahalanobis:thumb"),
}
#: Chosen on the cxr-dev 128 px model (benchmarks/ood_auroc.py): the logit scores (msp, energy) miss
#: most non-CXRs, Mahalanobis on ``gap`` alone misses inverted films, the first Inception block
#: (mixed0) catches them; early + middle + pooled layers together are the best all-round.
DEFAULT_METHOD = "multilayer"


class OODError(runinfo.RunError):
    """A run's OOD files are missing, unreadable or do not belong together."""


def feature_keys(components: Sequence[str]) -> list[str]:
    """The feature arrays the components need: layer names, ``thumb``, ``logits``."""
    keys = []
    for comp in components:
        key = comp.split(":", 1)[1] if comp.startswith("mahalanobis:") else "logits"
        if key not in keys:
            keys.append(key)
    return keys


def thumbnails(images: np.ndarray) -> np.ndarray:
    """``(N, 64)`` float64 8x8 area-resized thumbnails of ``(N, S, S)`` uint8 images, in 0..1."""
    return np.stack([cv2.resize(np.asarray(im), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
                     for im in images]).reshape(len(images), -1).astype(np.float64) / 255.0


_FEATURE_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _feature_model(model, layers: tuple[str, ...], logits: bool):
    """The sub-model giving pooled ``layers`` (and the logits' input), built once per model and keys so
    that scoring one image after another reuses its traced predict function."""
    import keras

    per_model = _FEATURE_MODELS.setdefault(model, {})
    if (layers, logits) not in per_model:
        tensors = []
        for name in layers:
            t = model.get_layer(name).output
            tensors.append(keras.layers.GlobalAveragePooling2D()(t) if len(t.shape) == 4 else t)
        if logits:
            tensors.append(model.get_layer("probs").input)
        per_model[(layers, logits)] = keras.Model(model.input, tensors)
    return per_model[(layers, logits)]


def extract(model, images: np.ndarray, batch_size: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Key -> ``(N, d)`` float64 features of ``(N, S, S)`` uint8 images, all in one forward pass.

    ``keys`` are layer names of ``model`` (globally average-pooled when spatial), ``thumb`` and
    ``logits`` (the input of the final dense layer ``probs`` through its kernel, before softmax).
    """
    from covidxray.data import pipeline as data

    out: dict[str, np.ndarray] = {}
    if "thumb" in keys:
        out["thumb"] = thumbnails(images)
    layers = [k for k in keys if k not in ("thumb", "logits")]
    if layers or "logits" in keys:
        sub = _feature_model(model, tuple(layers), "logits" in keys)
        if 0 < len(images) <= batch_size:  # one batch: no pipeline (see predict.model_probs)
            arrays = sub.predict_on_batch(data.as_model_batch(images))
        else:
            arrays = sub.predict(data.make_dataset(images, None, model.output_shape[-1], batch_size), verbose=0)
        arrays = arrays if isinstance(arrays, list | tuple) else [arrays]
        arrays = [np.asarray(a, np.float64) for a in arrays]
        out.update(zip(layers, arrays, strict=False))
        if "logits" in keys:
            kernel, bias = model.get_layer("probs").get_weights()
            out["logits"] = arrays[-1] @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)
    return out


def fit_mahalanobis(x: np.ndarray, labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Class means ``(K, d)`` and tied Ledoit-Wolf ``precision`` ``(d, d)`` of ``x`` (Lee et al., 2018).

    Features are standardised by their within-class spread before shrinkage (towards a scaled
    identity), so the target is diagonal in the original units; the precision is returned in them.
    ``labels`` None means one class.
    """
    from sklearn.covariance import LedoitWolf

    x = np.asarray(x, np.float64)
    y = np.zeros(len(x), int) if labels is None else np.asarray(labels)
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, y)]
    spread = centred.std(axis=0)
    spread = spread + 1e-3 * (spread.mean() + 1e-12)  # dead units must not blow up the precision
    lw = LedoitWolf(assume_centered=True).fit(centred / spread)
    return {"means": means, "precision": lw.precision_ / spread[:, None] / spread[None, :]}


def mahalanobis(x: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Smallest Mahalanobis distance of each row of ``x`` to the class ``means`` (shape ``(N,)``)."""
    x = np.asarray(x, np.float64)
    d2 = np.stack([((x - m) @ precision * (x - m)).sum(axis=1) for m in means], axis=1)
    return np.sqrt(np.maximum(d2.min(axis=1), 0.0))


def energy(logits: np.ndarray) -> np.ndarray:
    """Free energy ``-logsumexp(logits)`` per row (Liu et al., 2020); higher is more OOD."""
    from scipy.special import logsumexp

    return -logsumexp(np.asarray(logits, np.float64), axis=1)


def msp(logits: np.ndarray) -> np.ndarray:
    """Negative maximum softmax probability per row; higher is more OOD."""
    from scipy.special import softmax

    return -softmax(np.asarray(logits, np.float64), axis=1).max(axis=1)


@dataclass
class Detector:
    """A fitted OOD score: components, their arrays, the standardisation and the threshold."""

    method: str
    components: list[str]
    arrays: dict[str, np.ndarray]
    loc: list[float]
    scale: list[float]
    threshold: float
    val_pass_rate: float
    n_train: int
    n_val: int
    info: dict = field(default_factory=dict)

    def component_scores(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """``(N, C)`` raw score of each component."""
        cols = []
        for comp in self.components:
            if comp == "energy":
                cols.append(energy(feats["logits"]))
            elif comp == "msp":
                cols.append(msp(feats["logits"]))
            else:
                cols.append(mahalanobis(feats[comp.split(":", 1)[1]], self.arrays[f"{comp}/means"],
                                        self.arrays[f"{comp}/precision"]))
        return np.stack(cols, axis=1)

    def score_features(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """OOD score per image: the largest standardised component score."""
        z = (self.component_scores(feats) - np.asarray(self.loc)) / np.asarray(self.scale)
        return z.max(axis=1)

    def score(self, model, images: np.ndarray, batch_size: int) -> np.ndarray:
        """OOD score of ``(N, S, S)`` uint8 images (one extra forward pass)."""
        return self.score_features(extract(model, images, batch_size, feature_keys(self.components)))

    def flag(self, scores: np.ndarray) -> np.ndarray:
        """True where a score exceeds the threshold."""
        return np.asarray(scores) > self.threshold

    def summary(self) -> dict:
        """What run.json records under ``ood``."""
        return {"file": OOD_JSON, "method": self.method, "threshold": self.threshold,
                "val_pass_rate": self.val_pass_rate, "target_pass_rate": PASS_RATE}

    def save(self, run: str | Path) -> Path:
        """Write ``ood_stats.npz`` then ``ood.json`` (with the arrays' SHA-256) atomically."""
        buf = io.BytesIO()
        np.savez(buf, **{k: v.astype(np.float32) for k, v in self.arrays.items()})
        npz = atomic.write_bytes(Path(run) / OOD_NPZ, buf.getvalue())
        doc = {"method": self.method, "components": self.components, "loc": self.loc, "scale": self.scale,
               "threshold": self.threshold, "target_pass_rate": PASS_RATE, "val_pass_rate": self.val_pass_rate,
               "n_train": self.n_train, "n_val": self.n_val, "fitted_on": "train", "threshold_on": "val",
               "stats_file": OOD_NPZ, "stats_sha256": runinfo.file_sha256(npz), **self.info}
        return atomic.write_json(Path(run) / OOD_JSON, doc)

    @classmethod
    def load(cls, run: str | Path) -> Detector:
        """Read a run's detector; raises :class:`OODError` when missing or inconsistent."""
        run = Path(run)
        path, npz = run / OOD_JSON, run / OOD_NPZ
        if not path.is_file() or not npz.is_file():
            raise OODError(f"{run}: no OOD score ({OOD_JSON} / {OOD_NPZ}); fit one with `covidxray ood {run}`")
        try:
            doc = json.loads(path.read_text())
            if doc.get("stats_sha256") != runinfo.file_sha256(npz):
                raise ValueError(f"{OOD_NPZ} does not match {OOD_JSON}")
            with np.load(npz) as z:
                arrays = {k: z[k].astype(np.float64) for k in z.files}
            info = {k: doc[k] for k in ("layers", "fitted") if k in doc}
            return cls(doc["method"], list(doc["components"]), arrays, doc["loc"], doc["scale"],
                       float(doc["threshold"]), float(doc["val_pass_rate"]), int(doc["n_train"]),
                       int(doc["n_val"]), info)
        except (ValueError, KeyError, OSError) as err:
            raise OODError(f"{run}: unreadable OOD score ({err}); fit it again with `covidxray ood {run}`") from None


def fit_features(train: dict[str, np.ndarray], train_labels: np.ndarray | None, val: dict[str, np.ndarray],
                 method: str = DEFAULT_METHOD) -> Detector:
    """Fit a method on training features; standardise and set the threshold on validation features.

    Args:
        train: Features of the training split (:func:`extract`).
        train_labels: Their class indices (class-conditional means), or None.
        val: Features of the validation split.
        method: A key of :data:`METHODS`.

    Returns:
        The detector; ``threshold`` is the :data:`PASS_RATE` quantile of the validation scores.
    """
    from covidxray.errors import UsageError

    if method not in METHODS:
        raise UsageError(f"unknown OOD method '{method}' (known: {', '.join(METHODS)})")
    components = list(METHODS[method])
    arrays = {}
    for comp in components:
        if comp.startswith("mahalanobis:"):
            for k, v in fit_mahalanobis(train[comp.split(":", 1)[1]], train_labels).items():
                arrays[f"{comp}/{k}"] = v
    det = Detector(method, components, arrays, [0.0] * len(components), [1.0] * len(components),
                   np.inf, 1.0, len(next(iter(train.values()))), len(next(iter(val.values()))))
    raw = det.component_scores(val)
    if len(components) > 1:  # standardise so no component dominates the maximum by its units
        det.loc = [float(v) for v in np.median(raw, axis=0)]
        q75, q25 = np.percentile(raw, [75, 25], axis=0)
        det.scale = [float(max(s, 1e-9)) for s in (q75 - q25) / 1.349]
    scores = det.score_features(val)
    det.threshold = float(np.quantile(scores, PASS_RATE, method="higher"))  # >= 95% pass
    det.val_pass_rate = float(np.mean(scores <= det.threshold))
    det.info = {"layers": [k for k in feature_keys(components) if k not in ("thumb", "logits")],
                "fitted": datetime.now(UTC).isoformat()}
    return det


def fit(model, train_images: np.ndarray, train_labels: np.ndarray | None, val_images: np.ndarray,
        batch_size: int, method: str = DEFAULT_METHOD) -> Detector:
    """Fit on the training split's images and threshold on the validation split's (see :func:`fit_features`)."""
    keys = feature_keys(METHODS.get(method, ()))
    return fit_features(extract(model, train_images, batch_size, keys), train_labels,
                        extract(model, val_images, batch_size, keys), method)


def fit_run(run: str | Path, model=None, method: str = DEFAULT_METHOD, log: Callable = print) -> Detector:
    """(Re)fit a finished run's OOD score from its ``splits.csv``; writes the files and ``run.json`` key.

    ``model`` is the run's loaded model (loaded when None). Raises :class:`RunError` without
    ``splits.csv`` or with an empty train / validation split.
    """
    from covidxray.data import pipeline as data
    from covidxray.data.cache import cached_images
    from covidxray.data.inputs import for_run
    from covidxray.runinfo import run_config

    run = Path(run)
    meta = runinfo.read_run(run)
    if model is None:
        model, meta = runinfo.load_run(run)
    cfg, classes = run_config(run), list(meta["classes"])
    if not (run / "splits.csv").is_file():
        raise runinfo.RunError(f"{run}: splits.csv is missing, so there is no training split to fit the OOD score on")
    splits = data.read_splits(run / "splits.csv", classes)
    parts = {s: splits[splits["split"] == s] for s in ("train", "val")}
    if any(p.empty for p in parts.values()):
        raise runinfo.RunError(f"{run}/splits.csv: the train and val splits must both have images")
    images = {s: cached_images(list(p["path"]), meta["image_size"], cfg, for_run(meta, run)) for s, p in parts.items()}
    labels = np.array([classes.index(c) for c in parts["train"]["label"]])
    det = fit(model, images["train"], labels, images["val"], cfg.train.batch_size, method)
    det.save(run)
    meta = json.loads((run / "run.json").read_text())
    meta["ood"] = det.summary()
    atomic.write_json(run / "run.json", meta)
    log(f"OOD score ({det.method}) fitted on {det.n_train} training images; threshold {det.threshold:.3f} "
        f"passes {det.val_pass_rate:.1%} of {det.n_val} validation images: {run / OOD_JSON}")
    return det


def ensure_ood(run: str | Path, model, log: Callable = print) -> Detector | None:
    """The run's detector, fitted first when the run predates OOD scores (None when it cannot be fitted)."""
    try:
        return Detector.load(run)
    except OODError as err:
        if (Path(run) / OOD_JSON).is_file():
            log(f"{err}: fitting it again")
    try:
        return fit_run(run, model, log=log)
    except runinfo.RunError as err:
        log(f"no OOD score for this run ({err}); inputs are not checked for being chest X-rays")
        return None


def warning_line(n_flagged: int, n: int) -> str:
    """The one-line warning for flagged inputs."""
    return (f"warning: {n_flagged} of {n} inputs look unlike the training images (out-of-distribution "
            "score above the run's threshold, column 'ood'); their probabilities are not meaningful")
