"""External validation: does a model hold on images from hospitals it never saw?

The pieces of the external report that need no model, each a plain function of arrays and tables:

* :func:`metric_difference`: each headline metric on the run's own test split and on the external
  set, with stratified-bootstrap 95% intervals for both and for their difference (external minus
  internal; the two sets are independent, so each is resampled on its own and the resampled
  differences give the percentile interval).
* :func:`group_breakdown`: per value of a manifest column (``source``, ``view``, ``sex``, an age band),
  n, accuracy, per-class sensitivity, the positive-class decision's specificity, and where each
  group's errors go ("Normal, source S: 5 of 27 correct, 20 called COVID-19"). Small groups keep
  their intervals (Wilson score intervals for proportions; Wilson 1927, Brown et al. 2001) rather
  than being hidden. Labels outside the model's classes (another pneumonia) are scored too: what
  the model calls them and how often the positive decision fires on them.
* :func:`calibration_transfer`: ECE on both sets with and without the run's temperature, and whether
  scaling fitted on validation made external calibration worse.
* :func:`covidxray.evaluation.shift.feature_probe`: how far the external images are from the training data in the model's own
  feature space: a cross-validated logistic regression that tells internal test images from
  external ones (AUC with a bootstrap interval over its out-of-fold scores, overall and per group).
  AUC near 0.5: the model sees the two alike; near 1: it can tell where an image comes from, the
  failure DeGrave et al. (Nature Machine Intelligence 2021) describe.
* :func:`covidxray.evaluation.shift.image_statistics`: the simple image statistics a shortcut could use, per group.
* :func:`findings`: a few sentences that state the results in words, generated from the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest

from covidxray.evaluation.bootstrap import bootstrap_indices, percentile_intervals, resample_counts
from covidxray.evaluation.calibration import expected_calibration_error
from covidxray.evaluation.metrics import HEADLINE, bootstrap_distributions


def wilson(k: int, n: int, level: float = 0.95) -> list[float] | None:
    """Wilson score interval of a proportion ``k / n`` (None when ``n == 0``)."""
    if n == 0:
        return None
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]


def _distributions(y, probs, classes, n_boot, seed, operating_point):
    counts = resample_counts(bootstrap_indices(y, n_boot, seed, stratified=True), y.size)
    return bootstrap_distributions(y, probs, counts, classes, operating_point)


def metric_difference(y_int: np.ndarray, p_int: np.ndarray, y_ext: np.ndarray, p_ext: np.ndarray,
                      classes: Sequence[str], n_boot: int = 1000, seed: int = 0,
                      operating_point: tuple[int, float] | None = None) -> dict:
    """Headline metrics internal vs external, with 95% intervals for each and for the difference.

    Args:
        y_int: Internal test labels (indices into ``classes``), ``(n,)``.
        p_int: Internal probabilities, ``(n, K)``.
        y_ext: External labels (indices into ``classes``; rows of other labels left out), ``(m,)``.
        p_ext: External probabilities, ``(m, K)``.
        classes: Class names.
        n_boot: Resamples of each set.
        seed: Seed (the external set uses ``seed + 1``).
        operating_point: ``(positive index, threshold)`` to add the decision's sensitivity and
            specificity.

    Returns:
        ``{metric: {"internal", "internal_ci", "external", "external_ci", "difference",
        "difference_ci"}}``; a metric undefined on a set (e.g. an AUC of a class the external set
        lacks) has None there.
    """
    a = _distributions(y_int, p_int, classes, n_boot, seed, operating_point)
    b = _distributions(y_ext, p_ext, classes, n_boot, seed + 1, operating_point)
    exact_a = sample_metrics(y_int, p_int, classes, operating_point)
    exact_b = sample_metrics(y_ext, p_ext, classes, operating_point)
    keys = list(HEADLINE) + [f"per_class.{c}.{m}" for c in classes for m in ("sensitivity", "auc")]
    if operating_point is not None:
        keys += ["operating_point.sensitivity", "operating_point.specificity"]
    ci_a, _ = percentile_intervals({k: a[k] for k in keys})
    ci_b, _ = percentile_intervals({k: b[k] for k in keys})
    ci_d, _ = percentile_intervals({k: b[k] - a[k] for k in keys})
    out = {}
    for key in keys:
        pa, pb = exact_a[key], exact_b[key]
        out[key] = {"internal": pa, "internal_ci": ci_a[key], "external": pb, "external_ci": ci_b[key],
                    "difference": None if pa is None or pb is None else pb - pa, "difference_ci": ci_d[key]}
    return out


def sample_metrics(y, probs, classes, operating_point) -> dict[str, float | None]:
    """Every metric on the sample itself: the bootstrap formulas with each sample drawn once.

    Args:
        y: ``(n,)`` class indices.
        probs: ``(n, K)`` probabilities.
        classes: Class names.
        operating_point: ``(positive index, threshold)`` or None.

    Returns:
        Metric (the keys of :func:`covidxray.evaluation.metrics.bootstrap_distributions`) -> value,
        None where undefined.
    """
    dist = bootstrap_distributions(y, probs, np.ones((1, y.size)), classes, operating_point)
    return {k: float(v[0]) if np.isfinite(v[0]) else None for k, v in dist.items()}


def group_breakdown(labels: Sequence[str], probs: np.ndarray, classes: Sequence[str], groups: Sequence,
                    positive: str, threshold: float | None, by: str = "source") -> dict:
    """Per group: n, accuracy, sensitivities, decision specificity, and where the errors go.

    Args:
        labels: True label names; names outside ``classes`` are scored (what the model calls them,
            how often the positive decision fires) but count in no accuracy.
        probs: Probabilities ``(n, K)`` in the order of ``classes``.
        classes: The model's classes.
        groups: The group of each image (e.g. its source); missing values become ``"(none)"``.
        positive: The decision's class (``COVID-19``).
        threshold: The run's validation-chosen threshold on ``p(positive)``; None: argmax only.
        by: The column's name, for the sentences.

    Returns:
        ``{"by": by, "groups": [row, ...], "errors": [row, ...]}``. A group row holds ``group``,
        ``n``, ``accuracy`` and ``accuracy_ci`` (over in-class images), ``sensitivity`` per class
        (with ``_ci``), ``decision_specificity`` (share of non-positive in-class images not flagged)
        and ``flag_rate_other`` (share of out-of-class images flagged). An error row is one
        (group, true label) with counts of what the model called them and a sentence.
    """
    labels = np.asarray([str(x) for x in labels])
    groups = np.asarray(["(none)" if (g is None or (isinstance(g, float) and np.isnan(g)) or g == "")
                         else str(g) for g in groups])
    pred = np.asarray(classes)[probs.argmax(axis=1)]
    pos_idx = list(classes).index(positive) if positive in classes else None
    flagged = (probs[:, pos_idx] >= threshold) if (pos_idx is not None and threshold is not None) else None
    rows, errors = [], []
    for g in sorted(set(groups)):
        sel = groups == g
        inc = sel & np.isin(labels, classes)
        correct = int((pred[inc] == labels[inc]).sum())
        row = {"group": g, "n": int(sel.sum()), "n_in_classes": int(inc.sum()),
               "accuracy": correct / inc.sum() if inc.sum() else None,
               "accuracy_ci": wilson(correct, int(inc.sum())), "sensitivity": {}, "sensitivity_ci": {}}
        for c in classes:
            m = sel & (labels == c)
            if m.any():
                k = int((pred[m] == c).sum())
                row["sensitivity"][c], row["sensitivity_ci"][c] = k / m.sum(), wilson(k, int(m.sum()))
        if flagged is not None:
            neg = inc & (labels != positive)
            k = int((~flagged[neg]).sum())
            row["decision_specificity"] = k / neg.sum() if neg.any() else None
            row["decision_specificity_ci"] = wilson(k, int(neg.sum()))
            pos = sel & (labels == positive)
            k = int(flagged[pos].sum())
            row["decision_sensitivity"] = k / pos.sum() if pos.any() else None
            row["decision_sensitivity_ci"] = wilson(k, int(pos.sum()))
            other = sel & ~np.isin(labels, classes)
            k = int(flagged[other].sum())
            row["flag_rate_other"] = k / other.sum() if other.any() else None
            row["flag_rate_other_ci"] = wilson(k, int(other.sum()))
        rows.append(row)
        for lab in sorted(set(labels[sel])):
            m = sel & (labels == lab)
            called = {c: int((pred[m] == c).sum()) for c in classes}
            err = {"group": g, "label": lab, "n": int(m.sum()), "in_classes": lab in classes,
                   "called": called, "flagged": int(flagged[m].sum()) if flagged is not None else None}
            err["sentence"] = _error_sentence(err, by, positive)
            errors.append(err)
    return {"by": by, "groups": rows, "errors": errors}


def _error_sentence(err: dict, by: str, positive: str) -> str:
    head = f"{err['label']}, {by} {err['group']}"
    wrong = sorted(((k, c) for c, k in err["called"].items() if c != err["label"] and k), reverse=True)
    if err["in_classes"]:
        text = f"{head}: {err['called'][err['label']]} of {err['n']} correct"
    else:
        text = f"{head} (not a model class): {err['n']} image{'s' if err['n'] != 1 else ''}"
    if wrong:
        text += ", " + ", ".join(f"{k} called {c}" for k, c in wrong)
    if err["flagged"] is not None and err["label"] != positive:
        text += f"; the {positive} decision fires on {err['flagged']}"
    return text


def calibration_transfer(y_int, raw_int, cal_int, y_ext, raw_ext, cal_ext, n_bins: int = 15) -> dict:
    """ECE on both sets with (``cal_*``) and without (``raw_*``) the run's temperature.

    Returns:
        ``{"internal": {"uncalibrated", "calibrated"}, "external": {...}, "scaling_hurts_external":
        bool, "note": str}``.
    """
    out = {"internal": {"uncalibrated": expected_calibration_error(y_int, raw_int, n_bins),
                        "calibrated": expected_calibration_error(y_int, cal_int, n_bins)},
           "external": {"uncalibrated": expected_calibration_error(y_ext, raw_ext, n_bins),
                        "calibrated": expected_calibration_error(y_ext, cal_ext, n_bins)},
           "ece_bins": n_bins}
    e = out["external"]
    out["scaling_hurts_external"] = bool(e["calibrated"] > e["uncalibrated"])
    out["note"] = ("temperature scaling fitted on validation makes external calibration worse "
                   f"(ECE {e['uncalibrated']:.3f} -> {e['calibrated']:.3f})" if out["scaling_hurts_external"]
                   else f"temperature scaling also helps externally (ECE {e['uncalibrated']:.3f} -> "
                        f"{e['calibrated']:.3f})")
    return out


def findings(report: dict, positive: str = "COVID-19") -> list[str]:
    """A few sentences that state the external report's results in words.

    Args:
        report: The ``external.json`` content (keys ``metrics``, ``breakdown``, ``calibration``,
            ``feature_probe``).
        positive: The decision's class.

    Returns:
        Sentences, most important first.
    """
    out = []
    m = report["metrics"]
    for key, label in (("accuracy", "Accuracy"), ("macro_auc", "Macro-AUC")):
        r = m.get(key)
        if r and r["internal"] is not None and r["external"] is not None:
            ci = r["difference_ci"]
            change = ("falls" if r["difference"] < 0 else "rises" if r["difference"] > 0 else "stays the same,")
            sig = "" if ci is None else (" (the 95% interval of the difference excludes 0)" if ci[0] > 0 or ci[1] < 0
                                         else " (within noise: the interval of the difference includes 0)")
            out.append(f"{label} {change} from {r['internal']:.3f} on the run's own test split to "
                       f"{r['external']:.3f} on the external set{sig}.")
    for key, label in (("operating_point.sensitivity", "sensitivity"), ("operating_point.specificity", "specificity")):
        r = m.get(key)
        if r and r["external"] is not None:
            out.append(f"At the validation-chosen threshold, {positive} {label} is {r['external']:.2f} "
                       f"externally (internal {r['internal']:.2f}).")
    bd = report.get("breakdown")
    if bd:
        worst = [e for e in bd["errors"] if e["in_classes"] and e["n"]
                 and e["called"][e["label"]] / e["n"] < 0.6]
        for e in sorted(worst, key=lambda e: e["called"][e["label"]] / e["n"])[:3]:
            out.append(f"Weakest group: {e['sentence']}.")
        for e in bd["errors"]:
            if not e["in_classes"] and e["flagged"] is not None:
                out.append(f"Outside the model's classes: {e['sentence']}.")
    probe = report.get("feature_probe")
    if probe:
        auc = probe["auc"]
        verdict = ("its features tell the external images from its own test images almost perfectly: it can "
                   "recognise where an image comes from" if auc >= 0.95 else
                   "its features largely tell the external images from its own test images, so the source is "
                   "visible to it" if auc >= 0.8 else
                   "its features separate the two sets only partly" if auc >= 0.65 else
                   "its features see the two sets alike")
        out.append(f"Feature probe AUC {probe['auc']:.2f}: {verdict}.")
    cal = report.get("calibration")
    if cal:
        out.append(cal["note"][0].upper() + cal["note"][1:] + ".")
    return out
