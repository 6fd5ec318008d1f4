"""Tests of covidxray.data.discover on small dataset trees of every supported layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import fixtures_images as fx
from covidxray.data.discover import discover, summarize
from covidxray.data.layouts import canonical_label

CLASSES4 = ("COVID-19", "Normal", "Viral Pneumonia", "Lung Opacity")


def _img(path: Path, seed: int, size: int = 40) -> Path:
    """Write a distinct random gray PNG (or JPEG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _reasons(d) -> dict[str, str]:
    return {Path(p).name: r for p, r in zip(d.quarantine["path"], d.quarantine["reason"], strict=True)}


@pytest.fixture
def v4(tmp_path):
    root = tmp_path / "COVID-19_Radiography_Dataset"
    for i, (cls, name) in enumerate([("COVID", "COVID-1.png"), ("COVID", "COVID-2.png"),
                                     ("Normal", "Normal-1.png"), ("Viral Pneumonia", "Viral-1.png"),
                                     ("Lung_Opacity", "Lung_Opacity-1.png")]):
        _img(root / cls / "images" / name, seed=i)
        if cls != "Viral Pneumonia":
            _img(root / cls / "masks" / name, seed=100 + i, size=32)
    _img(root / "Normal" / "masks" / "orphan.png", seed=99)
    (root / "README.md.txt").write_text("readme")
    (root / "COVID.metadata.xlsx").write_bytes(b"PK\x03\x04")
    return root


def test_v4_layout_with_masks_and_lung_opacity(v4):
    d = discover(v4)
    assert d.layout == "radiography-v4"
    m = d.manifest.set_index(d.manifest["path"].map(lambda p: Path(p).name))
    assert sorted(m.index) == ["COVID-1.png", "COVID-2.png", "Normal-1.png", "Viral-1.png"]
    assert m.loc["COVID-1.png", "label"] == "COVID-19" and m.loc["Viral-1.png", "label"] == "Viral Pneumonia"
    assert m.loc["COVID-2.png", "lung_mask"] == str(v4 / "COVID" / "masks" / "COVID-2.png")
    assert m.loc["Viral-1.png", "lung_mask"] == ""
    assert (m["height"] == 40).all() and m["sha1"].nunique() == 4  # masks (32 px) are not images
    assert _reasons(d) == {"Lung_Opacity-1.png": "label 'Lung Opacity' not in the configured classes"}
    ignored = dict(zip(d.ignored["path"].map(lambda p: Path(p).name), d.ignored["reason"], strict=True))
    assert ignored == {"COVID.metadata.xlsx": "metadata file", "README.md.txt": "metadata file",
                       "orphan.png": "mask without matching image"}
    text = summarize(d)
    assert "radiography-v4" in text and "label 'Lung Opacity' not in the configured classes" in text
    assert "COVID.metadata.xlsx, README.md.txt" in text


def test_four_classes_keep_lung_opacity(v4):
    d = discover(v4, classes=CLASSES4)
    assert d.manifest["label"].value_counts().to_dict() == {
        "COVID-19": 2, "Normal": 1, "Viral Pneumonia": 1, "Lung Opacity": 1}
    assert d.quarantine.empty
    row = d.manifest[d.manifest["label"] == "Lung Opacity"].iloc[0]
    assert row["lung_mask"].endswith("Lung_Opacity/masks/Lung_Opacity-1.png")


def test_v1_layout_reports_junk_files(tmp_path):
    _img(tmp_path / "COVID-19" / "a.png", 1)
    _img(tmp_path / "NORMAL" / "b.jpg", 2)
    _img(tmp_path / "Viral Pneumonia" / "c.png", 3)
    (tmp_path / "NORMAL" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "COVID-19" / "README.txt").write_text("notes")
    d = discover(tmp_path)
    assert d.layout == "class-folders"
    assert dict(zip(d.manifest["path"].map(lambda p: Path(p).name), d.manifest["label"], strict=True)) == {
        "a.png": "COVID-19", "b.jpg": "Normal", "c.png": "Viral Pneumonia"}
    assert _reasons(d) == {".DS_Store": "not an image (unrecognised format)",
                           "README.txt": "not an image (unrecognised format)"}


def test_nested_alias_folders_at_depth_three(tmp_path):
    _img(tmp_path / "site_a" / "batch1" / "covid19" / "p1.png", 1)
    _img(tmp_path / "site_a" / "batch1" / "healthy" / "images" / "p2.png", 2)
    _img(tmp_path / "site_b" / "x" / "viral_pneumonia" / "p3.png", 3)
    _img(tmp_path / "site_b" / "normal" / "COVID_19" / "p5.png", 5)  # nearest ancestor wins
    _img(tmp_path / "site_b" / "x" / "Tuberculosis" / "p4.png", 4)
    _img(tmp_path / "stray.png", 6)
    (tmp_path / "notes.txt").write_text("metadata")
    d = discover(tmp_path)
    assert d.layout == "nested-class-folders"
    labels = dict(zip(d.manifest["path"].map(lambda p: Path(p).name), d.manifest["label"], strict=True))
    assert labels == {"p1.png": "COVID-19", "p2.png": "Normal", "p3.png": "Viral Pneumonia", "p5.png": "COVID-19"}
    assert _reasons(d) == {"p4.png": "unknown label 'Tuberculosis'", "stray.png": "not in a class folder"}
    assert d.ignored["reason"].tolist() == ["metadata file"]


def test_csv_manifest_relative_paths_and_patient_ids(tmp_path):
    for i, name in enumerate(["a.png", "b.png", "c.png", "d.png", "e.png"]):
        _img(tmp_path / "data" / "imgs" / name, i)
    (tmp_path / "lists").mkdir()
    rows = [("../data/imgs/a.png", "covid", "P1", "site1", "PA"),
            ("../data/imgs/b.png", "NORMAL", "P1", "site1", "AP"),
            (str(tmp_path / "data" / "imgs" / "c.png"), "Viral_Pneumonia", "P2", "site2", "PA"),
            ("../data/imgs/d.png", "bacterial", "P3", "site2", "PA"),
            ("../data/imgs/missing.png", "covid", "P4", "site2", "PA"),
            ("../data/imgs/a.png", "covid", "P1", "site1", "PA")]
    csv = tmp_path / "lists" / "train.csv"
    pd.DataFrame(rows, columns=["path", "label", "patient_id", "source", "view"]).to_csv(csv, index=False)
    d = discover(csv)
    assert d.layout == "csv-manifest"
    assert list(d.manifest.columns) == ["path", "label", "patient_id", "source", "lung_mask", "lesion_mask",
                                        "height", "width", "sha1", "phash", "view"]
    assert d.manifest["path"].tolist() == [str(tmp_path / "data" / "imgs" / n) for n in ("a.png", "b.png", "c.png")]
    assert d.manifest["label"].tolist() == ["COVID-19", "Normal", "Viral Pneumonia"]
    assert d.manifest["patient_id"].tolist() == ["P1", "P1", "P2"]
    assert d.manifest["view"].tolist() == ["PA", "AP", "PA"]
    assert _reasons(d) == {"a.png": "duplicate manifest row", "d.png": "unknown label 'bacterial'",
                           "missing.png": "file not found"}


def test_phantom_like_manifest_folder_with_masks(tmp_path):
    out = tmp_path / "phantom"
    rows = []
    for i, label in enumerate(["COVID-19", "Normal", "Viral Pneumonia"]):
        _img(out / "images" / f"img{i}.png", i)
        _img(out / "masks" / f"lung{i}.png", 10 + i)
        lesion = ""
        if label == "COVID-19":
            lesion = f"masks/lesion{i}.png"
            _img(out / lesion, 20 + i)
        rows.append((f"images/img{i}.png", label, f"pat{i}", "phantom", f"masks/lung{i}.png", lesion, 7))
    rows.append(("images/img9.png", "Normal", "pat9", "phantom", "masks/gone.png", "", 1))
    _img(out / "images" / "img9.png", 9)
    pd.DataFrame(rows, columns=["path", "label", "patient_id", "source_repo", "lung_mask", "lesion_mask",
                                "sha1"]).to_csv(out / "manifest.csv", index=False)
    d = discover(out)
    assert d.layout == "csv-manifest" and len(d.manifest) == 4 and d.quarantine.empty
    first = d.manifest.iloc[0]
    assert first["lung_mask"] == str(out / "masks" / "lung0.png")
    assert first["lesion_mask"] == str(out / "masks" / "lesion0.png")
    assert d.manifest["source"].eq("phantom").all() and "source_repo" not in d.manifest
    assert d.manifest["csv_sha1"].tolist() == ["7", "7", "7", "1"]  # CSV's own sha1 kept, renamed
    assert d.manifest["sha1"].str.len().eq(40).all()
    last = d.manifest.iloc[-1]
    assert last["lung_mask"] == ""
    assert d.ignored["reason"].tolist() == [f"lung_mask not found (mask dropped): {out / 'masks' / 'gone.png'}"]


def test_bad_files_quarantined_with_reasons(tmp_path):
    expected = fx.write_bad_input_folder(tmp_path / "COVID-19")
    _img(tmp_path / "Normal" / "n.png", 1)
    d = discover(tmp_path)
    reasons = _reasons(d)
    kept = set(d.manifest["path"].map(lambda p: Path(p).name))
    for name, outcome in expected.items():
        if outcome == "ok":
            assert name in kept, name
        else:
            assert outcome in reasons[name], (name, reasons.get(name))
    assert kept == {n for n, o in expected.items() if o == "ok"} | {"n.png"}
    assert (d.manifest["height"] >= 32).all()
    text = summarize(d)
    assert "too small" in text and "zero-byte file" in text


def test_check_images_false_only_sniffs(tmp_path):
    fx.write_bad_input_folder(tmp_path / "Normal")
    d = discover(tmp_path, check_images=False)
    reasons = _reasons(d)
    assert reasons == {"empty.png": "zero-byte file", "text.png": "not an image (unrecognised format)"}
    assert d.manifest["height"].isna().all() and d.manifest["sha1"].eq("").all()


def test_output_is_deterministic_and_sorted(tmp_path):
    for i in range(12):
        _img(tmp_path / ["covid", "Normal", "virus"][i % 3] / f"{(i * 7) % 12:02d}.png", i)
    a = discover(tmp_path)
    b = discover(tmp_path, workers=2)
    pd.testing.assert_frame_equal(a.manifest, b.manifest)
    assert a.manifest["path"].is_monotonic_increasing and len(a.manifest) == 12


def test_canonical_label_aliases():
    for raw in ["covid", "COVID-19", "covid19", "COVID_19"]:
        assert canonical_label(raw) == "COVID-19"
    for raw in ["normal", "NORMAL", "healthy", "No Finding"]:
        assert canonical_label(raw) == "Normal"
    for raw in ["viral pneumonia", "viral_pneumonia", "pneumonia-viral", "Viral Pneumonia", "virus"]:
        assert canonical_label(raw) == "Viral Pneumonia"
    for raw in ["lung_opacity", "lung opacity", "Lung_Opacity"]:
        assert canonical_label(raw) == "Lung Opacity"
    assert canonical_label("pneumonia") is None and canonical_label("images") is None
    assert canonical_label("TUBERCULOSIS", classes=("Normal", "Tuberculosis")) == "Tuberculosis"


def test_bad_roots_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset root not found"):
        discover(tmp_path / "nope")
    csv = tmp_path / "m.csv"
    csv.write_text("path,class\na.png,covid\n")
    with pytest.raises(ValueError, match="lacks column"):
        discover(csv)


@pytest.mark.data
def test_cxr_dev_discovery():
    from covidxray.paths import shared_cxr_dev

    root = shared_cxr_dev()
    if root is None:
        pytest.skip("real CXR sample ../shared/data/cxr-dev not found")
    d = discover(root)
    assert d.layout == "csv-manifest" and d.quarantine.empty
    assert d.manifest["label"].value_counts().to_dict() == {"COVID-19": 600, "Normal": 600, "Viral Pneumonia": 600}
    assert (d.manifest["height"] == 256).all() and (d.manifest["width"] == 256).all()
    assert d.manifest["source"].str.len().gt(0).all()


def test_reindexing_own_output_is_stable(tmp_path):
    _img(tmp_path / "data" / "covid" / "a.png", 1)
    _img(tmp_path / "data" / "normal" / "b.png", 2)
    first = discover(tmp_path / "data").manifest
    first.to_csv(tmp_path / "index.csv", index=False)
    second = discover(tmp_path / "index.csv").manifest
    assert list(second.columns) == list(first.columns)
    pd.testing.assert_frame_equal(first, second)


# --- issue 11 -------------------------------------------------------------------------------------


def test_symlinked_class_folders_are_followed_once(tmp_path):
    """Item 5: a class folder that is a symlink is read; a loop and a second link are reported."""
    store = tmp_path / "store"
    _img(store / "covid" / "a.png", 1)
    _img(store / "covid" / "b.png", 2)
    root = tmp_path / "data"
    _img(root / "Normal" / "n.png", 3)
    (root / "COVID-19").symlink_to(store / "covid", target_is_directory=True)
    (root / "Normal" / "loop").symlink_to(root, target_is_directory=True)
    (root / "covid_again").symlink_to(store / "covid", target_is_directory=True)
    d = discover(root)
    assert d.layout == "class-folders"
    assert sorted(Path(p).name for p in d.manifest["path"]) == ["a.png", "b.png", "n.png"]
    assert d.manifest.set_index(d.manifest["path"].map(lambda p: Path(p).name)).at["a.png", "label"] == "COVID-19"
    ignored = dict(zip(d.ignored["path"].map(lambda p: Path(p).name), d.ignored["reason"], strict=True))
    assert "loop or second link" in ignored["loop"] and "loop or second link" in ignored["covid_again"]


def test_own_index_manifest_does_not_hide_new_images(tmp_path):
    """Item 6: manifest.csv written by `covidxray index` (sidecar, or its columns) keeps the folder layout."""
    from covidxray.data.layouts import INDEX_WRITER
    from covidxray.data.tables import sidecar, write_table

    _img(tmp_path / "covid" / "a.png", 1)
    _img(tmp_path / "normal" / "b.png", 2)
    write_table(discover(tmp_path).manifest, tmp_path / "manifest.csv", INDEX_WRITER)
    _img(tmp_path / "normal" / "new.png", 3)
    d = discover(tmp_path)
    assert d.layout == "class-folders" and len(d.manifest) == 3
    assert "manifest written by covidxray index" in dict(zip(d.ignored["path"], d.ignored["reason"],
                                                            strict=True))[str(tmp_path / "manifest.csv")]
    sidecar(tmp_path / "manifest.csv").unlink()  # an older index output: recognised by its columns
    assert discover(tmp_path).layout == "class-folders"


def test_foreign_manifest_counts_unlisted_images(tmp_path):
    """Item 6: reading a manifest lists the image files on disk it does not name, and says so."""
    _img(tmp_path / "Normal" / "a.png", 1)
    _img(tmp_path / "Normal" / "new.png", 2)
    _img(tmp_path / "masks" / "a.png", 3)  # mask folders are not counted
    pd.DataFrame({"path": ["Normal/a.png"], "label": ["Normal"]}).to_csv(tmp_path / "manifest.csv", index=False)
    d = discover(tmp_path)
    assert d.layout == "csv-manifest" and len(d.manifest) == 1
    unlisted = d.ignored.loc[d.ignored["reason"] == "image file not listed in the manifest", "path"]
    assert unlisted.tolist() == [str(tmp_path / "Normal" / "new.png")]
    assert "1 image file(s) on disk that it does not list are ignored" in summarize(d)


def test_one_image_with_two_labels_is_quarantined_twice(tmp_path):
    """Item 7: same bytes in two class folders, or one manifest path with two labels: every copy quarantined."""
    import shutil

    _img(tmp_path / "data" / "covid" / "a.png", 1)
    _img(tmp_path / "data" / "normal" / "b.png", 2)
    shutil.copy(tmp_path / "data" / "covid" / "a.png", tmp_path / "data" / "normal" / "a_copy.png")
    d = discover(tmp_path / "data")
    assert d.manifest["path"].map(lambda p: Path(p).name).tolist() == ["b.png"]
    reasons = _reasons(d)
    assert set(reasons) == {"a.png", "a_copy.png"}
    assert all(r.startswith("conflicting labels") and "a_copy.png (Normal)" in r for r in reasons.values())
    rows = [("data/covid/a.png", "covid"), ("data/covid/a.png", "normal"), ("data/normal/b.png", "normal")]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(tmp_path / "m.csv", index=False)
    d = discover(tmp_path / "m.csv")
    assert d.manifest["path"].map(lambda p: Path(p).name).tolist() == ["b.png"]
    assert d.quarantine["reason"].tolist() == ["conflicting labels: manifest rows give COVID-19, Normal"] * 2


def test_truncated_manifest_is_refused(tmp_path):
    """Item 3: a manifest with fewer rows than its sidecar records, or a row cut short, is an error."""
    from covidxray.data.tables import TableError, write_table

    for i in range(6):
        _img(tmp_path / "data" / ["covid", "normal"][i % 2] / f"{i}.png", i)
    csv = tmp_path / "m.csv"
    write_table(discover(tmp_path / "data").manifest, csv, "covidxray index")
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines[:4]))
    with pytest.raises(TableError, match="3 rows but covidxray index wrote 6"):
        discover(csv)
    csv.write_text("".join(lines[:4]) + lines[4][:20])
    with pytest.raises(TableError, match="row 4 has"):
        discover(csv)
    csv.write_text("".join(lines)[:-5])  # the last row cut inside its last field
    with pytest.raises(TableError, match="last row is cut short"):
        discover(csv)
