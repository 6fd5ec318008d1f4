"""One loaded run for the viewer: model, calibration, OOD score, CAM layer, loaded once.

:class:`Viewer` loads everything a page needs when it is created; :meth:`Viewer.analyse` then
scores one upload with the prediction path of ``covidxray predict``
(:func:`covidxray.evaluation.predict.score_images`: temperature-scaled probabilities, the
validation-chosen COVID-19 threshold, the OOD score) and explains it with one method of the
registry (:func:`covidxray.explain.registry.explain`). The model's traced functions are built on the
first image and reused for every later one (Keras' predict function, the OOD feature model, the
explanation functions of :mod:`covidxray.explain.core`), so a series of uploads does not retrace.

Lung contour: the image's own lung mask when the run's ``splits.csv`` has one for it (matched by
the SHA-1 of its pixels, so a copy or an upload of the same file is found), else the lung segmenter
of :mod:`covidxray.lungs.segment` when that module exists (the page says the contour is predicted,
with its held-out Dice), else none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from covidxray import runinfo
from covidxray.data.cache import load_masks
from covidxray.data.imageio import image_hash
from covidxray.data.inputs import for_run as run_inputs
from covidxray.evaluation import ood
from covidxray.evaluation.calibration import Calibration
from covidxray.evaluation.predict import decision_column, fit_calibration, score_images
from covidxray.explain.registry import METHODS, NAMES, explain, method_options
from covidxray.explain.report import cam_layer, resolve_layer
from covidxray.viewer import card
from covidxray.viewer.choice import default_method
from covidxray.viewer.inputs import Reference, Upload, example_paths, input_warnings, read_upload, reference
from covidxray.viewer.render import overlay_rgb


@dataclass
class Analysis:
    """What the page shows for one upload."""

    name: str
    probs: dict[str, float]
    prediction: str
    flagged: bool | None
    decision: str
    method: str
    heatmap: np.ndarray
    overlay: np.ndarray
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lungs: str = ""
    ood_score: float | None = None


def lung_segmenter(log: Callable[[str], None] = print):
    """``(segmenter, description)``: the shipped segmenter (:func:`covidxray.lungs.segment.installed_segmenter`),
    or ``(None, why)``."""
    from covidxray.lungs.segment import dice_text, installed_segmenter

    seg = installed_segmenter(log)
    if seg is None:
        return None, "no lung segmenter installed: a contour only for images with a known mask"
    return seg, f"lung contour predicted by the lung segmenter ({dice_text(seg.metrics)})"


class Viewer:
    """A run loaded for the viewer (see the module docstring).

    Args:
        run_dir: Run folder (``model.keras``, ``run.json``, ``splits.csv``, ``calibration.json``...).
        log: Where loading messages go.
        segmenter: Use the lung segmenter when available.

    Raises:
        RunError: Incomplete run (see :func:`covidxray.runinfo.load_run`).
    """

    def __init__(self, run_dir: str | Path, log: Callable[[str], None] = print, segmenter: bool = True) -> None:
        from covidxray.data.pipeline import read_splits

        self.run = Path(run_dir)
        self.model, self.meta = runinfo.load_run(self.run)
        self.cfg = runinfo.run_config(self.run)
        self.classes, self.size = list(self.meta["classes"]), int(self.meta["image_size"])
        self.notes: list[str] = []
        self.cal = self._calibration()
        self.inputs = run_inputs(self.meta, self.run)  # the run's own normalization / lung field
        try:
            self.detector: ood.Detector | None = ood.Detector.load(self.run)
        except ood.OODError as err:
            self.detector = None
            self.notes.append(f"no OOD check: {err}")
        self.layer = resolve_layer(self.model, self.meta, cam_layer(self.run))
        self.options = method_options(self.cfg.to_dict(), self.layer)
        self.methods = list(NAMES)
        self.default_method, self.method_reason = default_method(self.run, NAMES,
                                                                  [m for m in NAMES if METHODS[m].expensive])
        splits = self.run / "splits.csv"
        self.table = read_splits(splits, self.classes) if splits.is_file() else None
        self.reference = reference(self.table, self.size, seed=self.cfg.seed) if self.table is not None else Reference(
            note="no splits.csv: no comparison with the training images")
        self.examples = example_paths(self.table, self.classes) if self.table is not None else []
        self._known = {} if self.table is None or "sha1" not in self.table else {
            str(r["sha1"]): r for r in self.table.to_dict("records")}
        self.segmenter, self.segmenter_note = lung_segmenter(log) if segmenter else (None, "lung segmenter off")
        self.test_line = card.test_operating_point(self.run)
        self.card = card.model_card(self.run)
        self._lock = threading.Lock()
        log(f"loaded {self.run}: {self.size} px, classes {', '.join(self.classes)}, CAM layer {self.layer}, "
            f"default method {self.default_method}")

    def _calibration(self) -> Calibration:
        path = self.run / "calibration.json"
        try:
            return Calibration.load(path)
        except (OSError, ValueError) as err:
            self.notes.append(f"calibration.json {'unreadable' if path.is_file() else 'missing'} ({err}): fitted on "
                              f"validation for this session, not saved; `covidxray calibrate {self.run}` writes it")
            return fit_calibration(self.run, self.model, self.meta, self.cfg)

    @property
    def threshold_line(self) -> str:
        """The decision rule in words."""
        if self.cal.threshold is None or self.cal.positive_class not in self.classes:
            return "no decision threshold for this run (no positive class in its calibration)"
        return (f"flag for review when p({self.cal.positive_class}) >= {self.cal.threshold:.3f} (chosen on validation "
                f"for sensitivity {self.cal.target_sensitivity:.2f}; calibration.json, temperature "
                f"{self.cal.temperature:.2f})")

    def _lung_mask(self, up: Upload) -> tuple[np.ndarray | None, str, dict | None]:
        row = self._known.get(image_hash(up.image)[0])
        if row is not None and str(row.get("lung_mask") or ""):
            return load_masks([str(row["lung_mask"])], self.size, self.run)[0], "lung contour from the dataset's mask", row
        if self.segmenter is not None:
            mask = np.asarray(self.segmenter.predict(up.x[None]))[0].astype(bool)
            return mask, self.segmenter_note, row
        return None, "", row

    def analyse(self, path: str | Path, method: str | None = None) -> Analysis:
        """Score and explain one uploaded file.

        Args:
            path: The file (PNG, JPEG, DICOM... anything :func:`covidxray.data.imageio.read_image` reads).
            method: A registry method (default :attr:`default_method`).

        Returns:
            The :class:`Analysis`.

        Raises:
            ImageReadError: The file cannot be used (the reason ``covidxray index`` gives).
        """
        method = method or self.default_method
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; known: {', '.join(NAMES)}")
        up = read_upload(path, self.size)
        with self._lock:
            x = self.inputs(up.x[None])  # what the model sees (cropped / normalized as the run was trained)
            row = score_images(self.model, x, self.classes, self.cal, self.detector, 1).iloc[0]
            heat = explain(self.model, x, method, batch_size=self.cfg.explain.batch_size, **self.options[method])[0]
            lungs, lung_note, known = self._lung_mask(up)
            if not self.inputs.identity:  # the map is over the transformed image: show that, without a contour
                up_shown, lungs = x[0], None
                lung_note = f"shown as the model sees it ({self.inputs.spec.to_dict()})"
            else:
                up_shown = up.x
        probs = {c: float(row[f"p_{c}"]) for c in self.classes}
        pos, col = self.cal.positive_class, decision_column(self.cal.positive_class)
        flagged = bool(row[col]) if col in row else None
        decision = ("no decision threshold" if flagged is None else
                    f"{'FLAG FOR REVIEW' if flagged else 'not flagged'}: p({pos}) = {probs[pos]:.3f} "
                    f"{'>=' if flagged else '<'} {self.cal.threshold:.3f}")
        score = float(row["ood_score"]) if "ood_score" in row else None
        warnings = input_warnings(up, self.reference, self.size, score,
                                  self.detector.threshold if self.detector is not None else None)
        if known is not None and known.get("split") in ("train", "val"):
            warnings.append(f"this image is in the run's {known['split']} split (label {known.get('label')}): the "
                            "model has seen it, its probabilities are optimistic")
        return Analysis(up.name, probs, str(row["prediction"]), flagged, decision, method, heat,
                        overlay_rgb(up_shown, heat, lungs), warnings, up.notes, lung_note, score)
