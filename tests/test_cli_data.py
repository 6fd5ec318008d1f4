"""The data commands as a user runs them: phantoms -> index -> split, bad input, exit statuses."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from covidxray.cli import app
from fixtures_images import write_bad_input_folder

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_phantoms_index_split_roundtrip(tmp_path):
    out = tmp_path / "p"
    res = invoke("phantoms", out, "--n-per-class", 12, "--size", 96, "--seed", 3)
    assert res.exit_code == 0, res.output
    res = invoke("index", out, "-o", tmp_path / "m.csv")
    assert res.exit_code == 0, res.output
    assert "Quarantined: 0" in res.output
    manifest = pd.read_csv(tmp_path / "m.csv", keep_default_na=False)
    assert manifest["label"].value_counts().to_dict() == {"COVID-19": 12, "Normal": 12, "Viral Pneumonia": 12}
    assert (manifest["lung_mask"] != "").all()
    res = invoke("split", tmp_path / "m.csv", "-o", tmp_path / "s.csv", "--seed", 1)
    assert res.exit_code == 0, res.output
    assert "leakage: OK" in res.output
    splits = pd.read_csv(tmp_path / "s.csv")
    assert set(splits["split"]) == {"train", "val", "test"} and len(splits) == 36


def test_bad_input_folder_quarantines_each_bad_file_with_its_reason(tmp_path):
    expected = write_bad_input_folder(tmp_path / "data" / "COVID-19")
    assert sum(v != "ok" for v in expected.values()) >= 8 and len(expected) >= 10
    res = invoke("index", tmp_path / "data", "-o", tmp_path / "m.csv")
    assert res.exit_code == 0, res.output  # usable images remain
    assert "Traceback" not in res.output
    manifest = pd.read_csv(tmp_path / "m.csv")
    quarantine = pd.read_csv(tmp_path / "m.quarantine.csv")
    kept = {p.split("/")[-1] for p in manifest["path"]}
    reasons = {p.split("/")[-1]: r for p, r in zip(quarantine["path"], quarantine["reason"], strict=True)}
    for name, outcome in expected.items():
        if outcome == "ok":
            assert name in kept, name
        else:
            assert outcome in reasons[name], (name, reasons.get(name))
    assert len(kept) + len(reasons) == len(expected)  # nothing dropped silently


def test_index_exit_status_says_nothing_usable_remains(tmp_path):
    folder = tmp_path / "data" / "Normal"
    folder.mkdir(parents=True)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    res = invoke("index", tmp_path / "data", "-o", tmp_path / "m.csv")
    assert res.exit_code == 1
    assert "no usable images" in res.output and "zero-byte file" in res.output


@pytest.mark.data
def test_index_and_split_real_sample(cxr_dev, tmp_path):
    res = invoke("index", cxr_dev, "-o", tmp_path / "m.csv")
    assert res.exit_code == 0, res.output
    manifest = pd.read_csv(tmp_path / "m.csv")
    assert len(manifest) == 1800 and "Quarantined: 0" in res.output
    assert manifest["label"].value_counts().to_dict() == {"COVID-19": 600, "Normal": 600, "Viral Pneumonia": 600}
    res = invoke("split", tmp_path / "m.csv", "-o", tmp_path / "s.csv")
    assert res.exit_code == 0 and "patients 0, groups 0" in res.output, res.output
