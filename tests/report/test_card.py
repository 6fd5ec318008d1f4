"""The model card: its numbers are the run's metrics files, and a cxr-dev card names the source confound."""

from __future__ import annotations

import json
import re
import sys

import pandas as pd
import pytest
import yaml

from covidxray import cli, paths
from covidxray.data.cache import PREPROCESSING
from covidxray.errors import RunError
from covidxray.evaluation.evaluate import evaluate
from covidxray.report.card import CARD, card_markdown, write_card
from helpers_runs import copy_run

ROW = re.compile(r"^\| (?P<label>[^|]+?) \| (?P<value>-?\d+\.\d+) \| \[(?P<lo>-?\d+\.\d+), (?P<hi>-?\d+\.\d+)\] \|$")


def _rows(card: str) -> dict[str, tuple[float, float, float]]:
    """``label -> (value, ci low, ci high)`` of every three-column number row of the card's tables."""
    return {m["label"]: (float(m["value"]), float(m["lo"]), float(m["hi"]))
            for m in map(ROW.match, card.splitlines()) if m}


def _section(card: str, title: str) -> str:
    return card.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def carded(smoke_run, tmp_path_factory):
    run = copy_run(smoke_run, tmp_path_factory.mktemp("card") / "run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "CACHE", tmp_path_factory.getbasetemp() / "card-cache")
        out = evaluate(run, n_boot=50, log=lambda *_: None)
    path = write_card(run)
    return {"run": run, "card": path.read_text(), "metrics": json.loads((out / "metrics.json").read_text()),
            "cal": json.loads((run / "calibration.json").read_text()), "path": path}


def test_card_numbers_are_the_metrics_files(carded):
    rows, m = _rows(carded["card"]), carded["metrics"]
    expected = {"accuracy": "accuracy", "balanced accuracy": "balanced_accuracy", "macro-F1": "macro_f1",
                "macro-AUC": "macro_auc", "Brier score": "brier"}
    expected |= {f"{c} {s}": f"per_class.{c}.{s}" for c in m["classes"] for s in ("sensitivity", "specificity", "auc")}
    for label, key in expected.items():
        value = m[key] if "." not in key else m["per_class"][key.split(".")[1]][key.split(".")[2]]
        if value is None:
            continue
        got = rows[label]
        assert got[0] == pytest.approx(value, abs=5e-4), label
        assert got[1:] == pytest.approx(tuple(m["ci95"][key]), abs=5e-4), label
    op = m["operating_point"]
    for stat in ("sensitivity", "specificity"):
        got = rows[f"{stat} at the threshold"]
        assert got == pytest.approx((op[stat], *op["ci95"][stat]), abs=5e-4)
    cal = carded["cal"]
    assert f"T = {cal['temperature']:.3f}" in carded["card"]
    assert f">= {cal['threshold']:.4f}" in carded["card"]
    assert f"n = {m['n']} " in _section(carded["card"], "Metrics")


def test_card_sections_links_and_missing_checks(carded):
    card, run = carded["card"], carded["run"]
    for title in ("Model details", "Intended use", "Out-of-scope uses", "Training data", "Evaluation data", "Metrics",
                  "Calibration", "Operating point", "External evaluations", "Explanation checks",
                  "Robustness to image corruptions", "Shortcut probes", "Out-of-distribution inputs",
                  "Caveats and recommendations"):
        assert f"\n## {title}\n" in card, title
    assert f"Not measured yet: `covidxray robustness {run}`" in card
    assert f"Not measured yet: `covidxray shortcut --run {run}`" in card
    assert "Not measured yet: `covidxray evaluate" in _section(card, "External evaluations")
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", card)
    assert "eval/test/confusion_counts.png" in links
    assert all(not link.startswith("/") and (run / link).is_file() for link in links)
    assert "| phantom |" in card and "synthetic radiographs" in card  # the phantom source, described
    assert "not confounded" in _section(card, "Training data")
    assert "ood.json" not in card or "Score " in _section(card, "Out-of-distribution inputs")
    assert not list(run.glob(f".{CARD}*")), "no temporary file left beside the card"


def test_cli_card_and_its_error(carded, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["covidxray", "card", str(carded["run"])])
    with pytest.raises(SystemExit) as ok:
        cli.main()
    assert ok.value.code == 0 and str(carded["path"]) in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["covidxray", "card", str(tmp_path)])
    with pytest.raises(SystemExit) as bad:
        cli.main()
    err = capsys.readouterr().err
    assert bad.value.code == 2 and err.startswith("error: ") and "run.json" in err
    with pytest.raises(RunError):
        card_markdown(tmp_path)


@pytest.mark.data
def test_cxr_dev_card_names_the_viral_pneumonia_source_confound(cxr_dev, tmp_path):
    """A run folder built from real cxr-dev manifest rows (no model: the card reads files only)."""
    manifest = pd.read_csv(cxr_dev / "manifest.csv", keep_default_na=False)
    rows = manifest.groupby("label").head(10).reset_index(drop=True)
    splits = pd.DataFrame({"path": [str(cxr_dev / p) for p in rows["path"]], "label": rows["label"],
                           "source": rows["source_repo"], "split": ["train", "val", "test", "train", "train"] * 6})
    run = tmp_path / "cxr-dev-run"
    run.mkdir()
    splits.to_csv(run / "splits.csv", index=False)
    counts = splits.groupby(["split", "label"]).size().unstack(fill_value=0).to_dict()
    (run / "run.json").write_text(json.dumps({"classes": ["COVID-19", "Normal", "Viral Pneumonia"], "image_size": 128,
                                              "preprocessing": PREPROCESSING, "backbone": "inceptionv3",
                                              "positive_class": "COVID-19", "counts": counts}))
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"dataset": str(cxr_dev)}}))
    card = card_markdown(run)
    caveats = _section(card, "Caveats and recommendations")
    assert "every Viral Pneumonia image comes from `waliatushar/ai-pneumonia-detection`" in caveats
    assert "pediatric" in caveats
    assert "`rtchanon/Machine-Learning-for-COVID-19-detection-from-chest-X-RAYS`" in caveats
    data = _section(card, "Training data")
    assert "CONFOUNDED" in data and "SOURCES.txt" in data and "Kermany" in data
    assert "| waliatushar/ai-pneumonia-detection | 0 | 0 | 10 |" in data
    assert f"Not measured yet: `covidxray evaluate {run}`" in card
