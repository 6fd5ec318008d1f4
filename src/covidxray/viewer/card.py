"""Texts of the viewer's side panel: the run's model card and the operating point's test numbers.

``covidxray card RUN`` writes ``RUN/MODEL_CARD.md`` (the model-card format of Mitchell et al. 2019);
the panel shows it when present and otherwise the same card made from the run folder on the spot.
The COVID-19 decision's sensitivity and specificity come from ``RUN/eval/test/metrics.json``
(``covidxray evaluate RUN``; operating point chosen on validation, 95% stratified bootstrap intervals).

References:
    Mitchell, M. et al. (2019). Model cards for model reporting. FAT* '19.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from covidxray.report.card import CARD, card_markdown

TEST_METRICS = Path("eval") / "test" / "metrics.json"


def _ci(ci: Mapping | None, key: str) -> str:
    lo_hi = (ci or {}).get(key)
    return f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi and None not in lo_hi else ""


def test_operating_point(run: str | Path) -> str:
    """One line: the threshold's sensitivity / specificity on the run's test split, or which command writes them."""
    path = Path(run) / TEST_METRICS
    try:
        doc = json.loads(path.read_text())
        op = doc["operating_point"]
        sens, spec = float(op["sensitivity"]), float(op["specificity"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"test-split sensitivity / specificity unknown: `covidxray evaluate {run}` writes {TEST_METRICS}"
    ci = op.get("ci95")
    return (f"on the run's test split (n = {doc.get('n', '?')}) this threshold had sensitivity {sens:.3f}"
            f"{_ci(ci, 'sensitivity')} and specificity {spec:.3f}{_ci(ci, 'specificity')} (95% CI)")


def model_card(run: str | Path) -> str:
    """``RUN/MODEL_CARD.md`` when present, else the card :func:`covidxray.report.card.card_markdown` writes."""
    path = Path(run) / CARD
    if path.is_file():
        try:
            return path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            return f"{CARD} unreadable ({err}); the card made from the run folder now:\n\n" + card_markdown(run)
    return f"*Made from the run folder now: `covidxray card {run}` saves it as {CARD}.*\n\n" + card_markdown(run)
