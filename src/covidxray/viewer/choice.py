"""The viewer's default explanation method, chosen from the run's own checks (``RUN/interpret/``).

``covidxray interpret RUN`` writes ``interpret/<split>/interpret.json`` (:mod:`covidxray.explain.report`:
per method localisation against a uniform map, and the cascading model-randomisation check of Adebayo
et al. 2018, whose ``flagged`` list names the methods whose maps barely depend on the weights);
``covidxray interpret RUN --data DATASET`` writes ``interpret/data-<name>/interpret_data.json``
(:mod:`covidxray.explain.annotated`: localisation on radiologist masks, a ``uniform`` row as chance).

A method *passes* when no randomisation check flagged it and its maps put more energy in the lungs
than a uniform map in every report that scored it (``lung_energy`` above chance). Among the methods
that pass, the default is the one with the largest mean margin over chance (lung energy plus lesion
energy where lesions were scored). Without any report, or when no method passes, the default is
Grad-CAM (Selvaraju et al. 2017) and the reason says why.

References:
    Adebayo, J., Gilmer, J., Muelly, M., Goodfellow, I., Hardt, M., Kim, B. (2018). Sanity checks
    for saliency maps. NeurIPS 31.
    Selvaraju, R. R. et al. (2017). Grad-CAM: visual explanations from deep networks via
    gradient-based localization. ICCV.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

FALLBACK = "gradcam"


@dataclass
class Evidence:
    """What the run's reports say about one method.

    Attributes:
        margins: Per report, lung (+ lesion) energy minus a uniform map's.
        lung: Per report, ``(lung energy, chance)``.
        flagged: Flagged by a randomisation check; None when no check covered it.
        spearman: Trained-vs-randomised map rank correlation of the check that covered it.
    """

    margins: list[float] = field(default_factory=list)
    lung: list[tuple[float, float, str]] = field(default_factory=list)
    flagged: bool | None = None
    spearman: float | None = None


def _num(v) -> float | None:
    return float(v) if isinstance(v, int | float) and v == v else None


def _split_report(doc: dict, where: str, ev: dict[str, Evidence]) -> None:
    chance = doc.get("chance", {})
    flagged = set(doc.get("flagged") or [])
    for m, r in (doc.get("methods") or {}).items():
        e = ev.setdefault(m, Evidence())
        sanity = r.get("sanity", {})
        if _num(sanity.get("spearman")) is not None:
            e.flagged = bool(e.flagged) or m in flagged or bool(sanity.get("flagged"))
            e.spearman = _num(sanity.get("spearman"))
        _add_localisation(e, r.get("localisation", {}), chance, where)


def _data_report(doc: dict, where: str, ev: dict[str, Evidence]) -> None:
    rows = {r.get("method"): r for r in doc.get("methods") or []}
    chance = rows.pop("uniform", {})
    for m, r in rows.items():
        _add_localisation(ev.setdefault(m, Evidence()), r, chance, where)


def _add_localisation(e: Evidence, loc: dict, chance: dict, where: str) -> None:
    lung, lung0 = _num(loc.get("lung_energy")), _num(chance.get("lung_energy"))
    if lung is None or lung0 is None:
        return
    margin = lung - lung0
    lesion, lesion0 = _num(loc.get("lesion_energy")), _num(chance.get("lesion_energy"))
    if lesion is not None and lesion0 is not None:
        margin += lesion - lesion0
    e.margins.append(margin)
    e.lung.append((lung, lung0, where))


def read_evidence(run: str | Path) -> dict[str, Evidence]:
    """Method -> :class:`Evidence` from every report under ``RUN/interpret/`` (empty when none)."""
    ev: dict[str, Evidence] = {}
    base = Path(run) / "interpret"
    for path in sorted(base.glob("*/interpret.json")) + sorted(base.glob("*/interpret_data.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        where = f"interpret/{path.parent.name}"
        (_split_report if path.name == "interpret.json" else _data_report)(doc, where, ev)
    return ev


def default_method(run: str | Path, known: tuple[str, ...] | list[str], slow: tuple[str, ...] | list[str] = ()
                   ) -> tuple[str, str]:
    """The method the viewer shows first, and a one-line reason.

    Args:
        run: Run folder.
        known: The registry's method names (:data:`covidxray.explain.registry.NAMES`).
        slow: Methods that cost hundreds of model passes per image (the registry's ``expensive``):
            never the default of an interactive page; the reason names one that did better.

    Returns:
        ``(method, reason)``.
    """
    ev = {m: e for m, e in read_evidence(run).items() if m in known}
    if not ev:
        return FALLBACK, (f"Grad-CAM by default: no explanation checks in {Path(run).name}/interpret/ "
                          f"(`covidxray interpret {run}` runs them)")
    passing = {m: e for m, e in ev.items() if not e.flagged and e.margins and all(x > 0 for x in e.margins)}

    def margin(m: str) -> float:
        return sum(passing[m].margins) / len(passing[m].margins)

    ranked = sorted(passing, key=margin, reverse=True)
    fast = [m for m in ranked if m not in slow]
    if not fast:
        flagged = sorted(m for m, e in ev.items() if e.flagged)
        return FALLBACK, ("Grad-CAM by default: no method passed both the randomisation check and beat a uniform "
                          "map in the lungs" + (f" (flagged: {', '.join(flagged)})" if flagged else "")
                          + (f"; only slow ones did ({', '.join(ranked)})" if ranked else ""))
    best, e = fast[0], passing[fast[0]]
    lung, chance, where = max(e.lung, key=lambda t: t[0] - t[1])
    sanity = (f"passed the randomisation check (Spearman {e.spearman:.2f})" if e.flagged is False
              else "randomisation check not run on this run")
    better = [m for m in ranked[: ranked.index(best)]]
    return best, (f"{best}: {sanity}; {lung:.2f} of its energy in the lungs vs {chance:.2f} for a uniform map "
                  f"({where}), the best of {len(passing)} method(s) that passed"
                  + (f" (better but slow, hundreds of model passes per image: {', '.join(better)})" if better else ""))
