"""The model card's sections on the checks a run has had: external evaluations, explanation checks,
the corruption sweep, the shortcut probes and the out-of-distribution score.

Each function reads result files of the run folder (never the model) and returns Markdown lines plus
caveats in words; a check whose results do not exist yet says which command produces them.
"""

from __future__ import annotations

import json
from pathlib import Path


def num(value, digits: int = 3) -> str:
    """A number as the card prints it (``n/a`` for None)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def ci(pair) -> str:
    """A 95% interval as the card prints it (empty when unknown)."""
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]" if pair else ""


def link(run: Path, path: Path, text: str) -> str:
    """A Markdown image link relative to the run folder ('' when the figure is missing)."""
    return f"\n![{text}]({path.relative_to(run).as_posix()})" if path.is_file() else ""


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def not_measured(command: str) -> list[str]:
    """The line of a section whose results do not exist yet."""
    return [f"Not measured yet: `{command}`."]


def external(run: Path) -> tuple[list[str], list[str]]:
    """Every ``eval/<name>/external.json``: internal vs external metrics, findings, feature probe."""
    files = sorted((run / "eval").glob("*/external.json"))
    if not files:
        return not_measured(f"covidxray evaluate {run} --data EXTERNAL_DATASET"), []
    lines, caveats = [], []
    for f in files:
        rep = _json(f)
        lines += ["", f"### {f.parent.name}: {rep['dataset']}",
                  f"{rep['n_external_in_classes']} images of the model's classes ({rep['n_external']} in all; "
                  f"labels {rep['labels_external']}), the run's temperature and threshold unchanged.", "",
                  "| metric | own test split | external | difference (external - own) |", "| --- | --- | --- | --- |"]
        for key, m in rep["metrics"].items():
            if key.startswith("per_class") or m["internal"] is None and m["external"] is None:
                continue
            lines.append(f"| {key} | {num(m['internal'])} {ci(m['internal_ci'])} | {num(m['external'])} "
                         f"{ci(m['external_ci'])} | {num(m['difference'])} {ci(m['difference_ci'])} |")
        probe = rep.get("feature_probe") or {}
        if probe.get("auc") is not None:
            lines += ["", f"Feature probe (internal vs external images in the model's own features): AUC "
                          f"{num(probe['auc'])} {ci(probe.get('auc_ci'))}; 0.5 = indistinguishable."]
        lines += ["", "Findings:"] + [f"- {s}" for s in rep.get("findings", [])]
        lines += [link(run, f.parent / "external_groups.png", f"per-source results, {f.parent.name}")]
        acc = rep["metrics"].get("accuracy", {})
        if acc.get("difference_ci") and acc["difference_ci"][1] < 0:
            caveats.append(f"On {f.parent.name} (hospitals not in training) accuracy falls by "
                           f"{-acc['difference']:.3f} (difference {acc['difference']:+.3f} {ci(acc['difference_ci'])}): "
                           "the test-split numbers overstate performance elsewhere.")
        note = (rep.get("calibration") or {}).get("note")
        if (rep.get("calibration") or {}).get("scaling_hurts_external"):
            caveats.append(f"{f.parent.name}: {note}.")
    return lines, caveats


def explanations(run: Path) -> tuple[list[str], list[str]]:
    """``interpret/<split>/interpret.json`` (localisation, sanity) and ``interpret/*/interpret_data.json``."""
    splits = sorted((run / "interpret").glob("*/interpret.json"))
    data = sorted((run / "interpret").glob("*/interpret_data.json"))
    if not splits and not data:
        return not_measured(f"covidxray interpret {run}` (and `covidxray interpret {run} --data ANNOTATED"), []
    lines, caveats = [], []
    for f in splits:
        rep = _json(f)
        chance = rep.get("chance", {})
        lines += ["", f"### {f.parent.name} split ({rep['images']['n']} images, layer {rep['layer']})", "",
                  "| method | lung energy | lesion energy | pointing game | randomisation Spearman | flagged |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for m, r in rep["methods"].items():
            loc, san = r["localisation"], r["sanity"]
            lines.append(f"| {m} | {num(loc.get('lung_energy'))} | {num(loc.get('lesion_energy'))} | "
                         f"{num(loc.get('pointing_lesion'))} | {num(san.get('spearman'))} | "
                         f"{'yes' if san.get('flagged') else 'no'} |")
        lines.append(f"| uniform map (chance) | {num(chance.get('lung_energy'))} | {num(chance.get('lesion_energy'))} "
                     f"| {num(chance.get('pointing_lesion'))} | | |")
        lines += [link(run, f.parent / "localisation.png", "localisation per method"),
                  link(run, f.parent / "randomization.png", "cascading randomisation")]
        if rep.get("flagged"):
            caveats.append(f"Explanation methods {', '.join(rep['flagged'])} barely change when the model's weights "
                           "are randomised (Adebayo et al. 2018): their maps do not show what the model uses.")
    for f in data:
        rep = _json(f)
        lines += ["", f"### {f.parent.name}: {rep['dataset']} ({rep['n']} annotated images, masks {rep['masks']})", "",
                  "| method | lungs | opacities | devices | pointing, opacities |", "| --- | --- | --- | --- | --- |"]
        for r in rep["methods"]:
            lines.append(f"| {r['method']} | {num(r.get('lung_energy'))} {ci(r.get('lung_energy_ci'))} | "
                         f"{num(r.get('lesion_energy'))} {ci(r.get('lesion_energy_ci'))} | "
                         f"{num(r.get('device_energy'))} {ci(r.get('device_energy_ci'))} | "
                         f"{num(r.get('pointing_lesion'))} {ci(r.get('pointing_lesion_ci'))} |")
        lines.append(link(run, f.parent / "gallery_data.png", f"maps on {f.parent.name}"))
    return lines, caveats


def robustness(run: Path) -> tuple[list[str], list[str]]:
    """``robustness/robustness.json``: clean vs mean-corrupted metrics and the worst corruption."""
    f = run / "robustness" / "robustness.json"
    if not f.is_file():
        return not_measured(f"covidxray robustness {run}"), []
    rep = _json(f)
    lines = [f"{len(rep['corruptions'])} corruptions x 5 severities on {rep['dataset']} (split {rep['split']}, "
             f"n = {rep['n']}), applied at the model input.", "", "| metric | clean | mean under corruption | drop |",
             "| --- | --- | --- | --- |"]
    for m, label in rep["metrics"].items():
        o = rep["summary"]["overall"][m]
        lines.append(f"| {label} | {num(o['clean'])} | {num(o['mean_corrupted'])} | {num(o['drop'])} |")
    per = {c: v.get("accuracy") for c, v in rep["summary"]["per_corruption"].items() if v.get("accuracy") is not None}
    caveats = []
    if per:
        worst = min(per, key=per.get)
        lines += ["", f"Weakest: {worst} (mean accuracy {num(per[worst])} over its severities)."]
        caveats.append(f"Under {worst} the mean accuracy is {num(per[worst])} (clean "
                       f"{num(rep['summary']['overall']['accuracy']['clean'])}).")
    lines.append(link(run, run / "robustness" / "robustness_accuracy.png", "accuracy under corruption"))
    return lines, caveats


def shortcuts(run: Path) -> tuple[list[str], list[str]]:
    """``shortcut/probe.json``: attribution outside the lungs and per-source metrics."""
    f = run / "shortcut" / "probe.json"
    if not f.is_file():
        return not_measured(f"covidxray shortcut --run {run}"), []
    rep = _json(f)
    o = rep["outside_lung"]
    lines = [f"{rep['cam']['method']} on {rep['cam']['layer']}, {rep['n']} images of {rep['dataset']}: "
             f"{num(o['mean'])} of the energy outside the lungs ({o['definition']}; a uniform map: "
             f"{num(o['uniform_baseline'])}; {o['n_lung_masks']} lung masks, {o['n_border_band']} border-band "
             "approximations)."]
    caveats = []
    if rep.get("per_source"):
        lines += ["", "| source | n | accuracy |", "| --- | --- | --- |"]
        lines += [f"| {s} | {v['n']} | {num(v.get('accuracy'))} {ci(v.get('accuracy_ci'))} |"
                  for s, v in rep["per_source"].items()]
    if rep.get("sources"):
        lines += ["", rep["sources"]["note"]]
        if rep["sources"]["confounded"]:
            caveats.append("Shortcut probe: " + rep["sources"]["note"])
    lines.append(link(run, run / "shortcut" / "probe.png", "shortcut probe"))
    return lines, caveats


def ood(run: Path) -> tuple[list[str], list[str]]:
    """``ood.json`` and the share each evaluation flagged."""
    f = run / "ood.json"
    if not f.is_file():
        return not_measured(f"covidxray ood {run}"), []
    rep = _json(f)
    lines = [f"Score {rep['method']} ({', '.join(rep.get('components', []))}), fitted on {rep.get('n_train')} "
             f"training images; threshold {num(rep['threshold'])} passes {rep['val_pass_rate']:.1%} of validation "
             "images. Share flagged per evaluation:", ""]
    caveats = []
    for m in sorted((run / "eval").glob("*/metrics.json")):
        flag = _json(m).get("ood")
        if flag:
            lines.append(f"- {m.parent.name}: {flag['flagged_share']:.1%} ({flag['flagged']} of {flag['n']})")
            if m.parent.name != "test" and flag["flagged_share"] > 0.1:
                caveats.append(f"{flag['flagged_share']:.0%} of {m.parent.name} is flagged out-of-distribution: "
                               "the model's outputs on such images are not meaningful.")
    return lines, caveats
