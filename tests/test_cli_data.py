"""The data commands as a user runs them: phantoms -> index -> split, bad input, exit statuses."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from covidxray.cli import app
from fixtures_images import write_bad_input_folder, write_class_folders, write_noise_png

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error(res, *words: str) -> str:
    """Assert the CLI failed with exit status 2 and exactly one ``error:`` line (no traceback)."""
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors="surrogateescape")


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


# --- issue 11 -------------------------------------------------------------------------------------


def test_index_non_utf8_file_name_roundtrips_through_split(tmp_path):
    """Item 2: a file name that is not UTF-8 is written back as the same bytes; OUT is not left header-only."""
    data = write_class_folders(tmp_path / "data", 6)
    odd = os.fsdecode(b"caf\xe9-\xff.png")
    write_noise_png(tmp_path / "data" / "Normal" / odd, 99)
    out = tmp_path / "m.csv"
    out.write_text("old content\n")
    res = invoke("index", data, "-o", out)
    assert res.exit_code == 0, res.output
    assert b"caf\xe9-\xff.png" in out.read_bytes()
    manifest = read(out)
    assert len(manifest) == 19 and str(data / "Normal" / odd) in set(manifest["path"])
    res = invoke("split", out, "-o", tmp_path / "s.csv", "--val", 0.2, "--test", 0.2)
    assert res.exit_code == 0, res.output
    splits = read(tmp_path / "s.csv")
    assert str(data / "Normal" / odd) in set(splits["path"]) and all(map(os.path.isfile, splits["path"]))


def test_index_refuses_output_over_its_input_or_a_folder(tmp_path):
    """Item 2: -o the input CSV (or the folder's manifest it reads) or a folder: one error line, input intact."""
    data = write_class_folders(tmp_path / "data", 2)
    csv = tmp_path / "in.csv"
    pd.DataFrame({"path": [str(p) for p in sorted(data.rglob("*.png"))], "label": "Normal"}).to_csv(csv, index=False)
    before = csv.read_bytes()
    one_error(invoke("index", csv, "-o", csv), "overwrite the input manifest")
    assert csv.read_bytes() == before
    shutil.copy(csv, data / "manifest.csv")  # a foreign manifest: the folder is read through it
    one_error(invoke("index", data, "-o", data / "manifest.csv"), "overwrite the input manifest")
    one_error(invoke("index", data, "-o", tmp_path), "is a folder")


def test_index_disk_full_keeps_the_previous_manifest(tmp_path, monkeypatch):
    """Item 3: disk full while writing: one error line, the old manifest untouched, no partial file."""
    from covidxray import atomic

    data = write_class_folders(tmp_path / "data", 2)
    out = tmp_path / "m.csv"
    out.write_text("previous manifest\n")

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "fsync_file", full)
    one_error(invoke("index", data, "-o", out), "disk full")
    assert out.read_text() == "previous manifest\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "m.csv"]


def test_split_refuses_a_truncated_manifest(tmp_path):
    """Item 3: 39 of 90 rows (one class gone) is refused; without the sidecar a cut row is refused and
    a missing class is a warning."""
    data = write_class_folders(tmp_path / "data", 30)
    out = tmp_path / "m.csv"
    assert invoke("index", data, "-o", out).exit_code == 0
    lines = out.read_text().splitlines(keepends=True)
    assert len(lines) == 91
    out.write_text("".join(lines[:40]))  # header + 39 rows, cut at a row boundary
    one_error(invoke("split", out, "-o", tmp_path / "s.csv"), "39 rows", "wrote 90", "truncated")
    assert not (tmp_path / "s.csv").exists()
    (tmp_path / "m.csv.meta.json").unlink()
    out.write_text("".join(lines[:40]) + lines[40][:30])  # a row cut in the middle
    one_error(invoke("split", out, "-o", tmp_path / "s.csv"), "row 40 has", "truncated")
    out.write_text("".join(lines[:40]))
    res = invoke("split", out, "-o", tmp_path / "s.csv", "--allow-empty")
    assert res.exit_code == 0, res.output
    assert "warning: no image of class(es) Viral Pneumonia" in res.output


def test_readme_reindex_into_the_dataset_folder_sees_new_images(tmp_path):
    """Item 6: the package's own manifest.csv does not switch the folder to the csv-manifest layout."""
    data = write_class_folders(tmp_path / "kaggle", 3)
    res = invoke("index", data, "-o", data / "manifest.csv")
    assert res.exit_code == 0 and "Images: 9" in res.output, res.output
    write_noise_png(data / "Normal" / "new-1.png", 501)
    write_noise_png(data / "COVID-19" / "new-2.png", 502)
    res = invoke("index", data, "-o", data / "manifest.csv")
    assert res.exit_code == 0, res.output
    assert "Layout detected: class-folders" in res.output and "Images: 11" in res.output
    assert len(read(data / "manifest.csv")) == 11


def test_foreign_manifest_layout_says_so_and_counts_unlisted_images(tmp_path):
    """Item 6: reading a manifest is announced, with the number of image files on disk it leaves out."""
    data = write_class_folders(tmp_path / "data", 2)
    listed = sorted(data.rglob("*.png"))
    pd.DataFrame({"path": [str(p.relative_to(data)) for p in listed],
                  "label": [p.parent.name for p in listed]}).to_csv(data / "manifest.csv", index=False)
    write_noise_png(data / "Normal" / "added.png", 77)
    write_noise_png(data / "Viral Pneumonia" / "added.jpg", 78)
    res = invoke("index", data, "-o", tmp_path / "m.csv")
    assert res.exit_code == 0, res.output
    assert "Layout detected: csv-manifest" in res.output
    assert "2 image file(s) on disk that it does not list are ignored" in res.output


def test_split_refuses_one_image_with_two_labels(tmp_path):
    """Item 7: the same bytes under two classes in a foreign manifest: one error line naming both files."""
    data = write_class_folders(tmp_path / "data", 4)
    shutil.copy(data / "Normal" / "normal-000.png", data / "COVID-19" / "copy.png")
    rows = [(str(p.relative_to(tmp_path)), p.parent.name) for p in sorted(data.rglob("*.png"))]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(tmp_path / "m.csv", index=False)
    one_error(invoke("split", tmp_path / "m.csv", "-o", tmp_path / "s.csv"), "two labels", "copy.png",
              "normal-000.png")


def test_index_quarantines_one_image_with_two_labels(tmp_path):
    """Item 7: index quarantines both copies with a reason naming the other one."""
    data = write_class_folders(tmp_path / "data", 3)
    shutil.copy(data / "Normal" / "normal-000.png", data / "COVID-19" / "copy.png")
    res = invoke("index", data, "-o", tmp_path / "m.csv")
    assert res.exit_code == 0, res.output
    quarantine = read(tmp_path / "m.quarantine.csv")
    assert sorted(Path(p).name for p in quarantine["path"]) == ["copy.png", "normal-000.png"]
    assert quarantine["reason"].str.startswith("conflicting labels").all()
    assert len(read(tmp_path / "m.csv")) == 8  # 9 + the copy, less both copies


def test_split_resolves_paths_against_the_manifest_folder(tmp_path, monkeypatch):
    """Item 9: relative paths are relative to the manifest, and the splits file has absolute ones."""
    data = write_class_folders(tmp_path / "ds" / "imgs", 4)
    rows = [(str(p.relative_to(tmp_path / "ds")), p.parent.name) for p in sorted(data.rglob("*.png"))]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(tmp_path / "ds" / "list.csv", index=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = invoke("split", tmp_path / "ds" / "list.csv", "-o", "s.csv", "--val", 0.25, "--test", 0.25)
    assert res.exit_code == 0, res.output
    splits = read(elsewhere / "s.csv")
    assert len(splits) == 12 and all(os.path.isabs(p) and os.path.isfile(p) for p in splits["path"])


@pytest.mark.parametrize("content, words", [
    ("path,class\na.png,covid\n", ["lacks column(s) label"]),
    ("path;label\na.png;covid\n", ["lacks column(s)", "';'-delimited"]),
    ("", ["empty manifest"]),
    ("path,label\n", ["no rows"]),
])
def test_bad_csv_is_one_error_line_in_index_and_split(tmp_path, content, words):
    csv = tmp_path / "m.csv"
    csv.write_text(content)
    one_error(invoke("index", csv, "-o", tmp_path / "out.csv"), *words)
    one_error(invoke("split", csv, "-o", tmp_path / "s.csv"), *words)


def test_png_as_dataset_root_is_one_error_line(tmp_path):
    png = write_noise_png(tmp_path / "x.png", 1)
    one_error(invoke("index", png, "-o", tmp_path / "m.csv"), "must be a folder or a CSV manifest")


@pytest.fixture
def manifest6(tmp_path):
    data = write_class_folders(tmp_path / "data", 2)
    assert invoke("index", data, "-o", tmp_path / "m.csv").exit_code == 0
    return tmp_path / "m.csv"


@pytest.mark.parametrize("args, words", [
    (["--val", 0.9, "--test", 0.9], ["val + test must be < 1"]),
    (["--val", -0.1], ["val fraction must be in [0, 1)"]),
    (["--test", "nan"], ["test fraction must be in [0, 1), got nan"]),
    ([], ["independent group(s)", "gets none", "--allow-empty"]),  # 2 images per class, 3 splits
])
def test_split_bad_fractions_are_one_error_line(manifest6, args, words):
    one_error(invoke("split", manifest6, "-o", manifest6.with_name("s.csv"), *args), *words)


def test_split_allow_empty_and_warnings(manifest6, tmp_path):
    """Too few images: --allow-empty (which the message names) works; val=0 and a 3-image train split warn."""
    res = invoke("split", manifest6, "-o", tmp_path / "s.csv", "--val", 0.0, "--test", 0.3, "--allow-empty")
    assert res.exit_code == 0, res.output
    assert "warning: val fraction is 0" in res.output
    assert "warning: the train split has only 3 image(s)" in res.output


def test_split_one_class_warns(tmp_path):
    data = write_class_folders(tmp_path / "data", 8, classes=("Normal",))
    assert invoke("index", data, "-o", tmp_path / "m.csv").exit_code == 0
    res = invoke("split", tmp_path / "m.csv", "-o", tmp_path / "s.csv")
    assert res.exit_code == 0, res.output
    assert "warning: only one class (Normal)" in res.output


def test_phantoms_bad_size_is_one_error_line(tmp_path):
    one_error(invoke("phantoms", tmp_path / "p", "--size", 8), "size must be between 64 and 1024")


def test_set_accepts_scientific_notation_and_range_checks(tmp_path):
    data = write_class_folders(tmp_path / "data", 1)
    res = invoke("index", data, "-o", tmp_path / "m.csv", "--set", "train.lr=1e-3")
    assert res.exit_code == 0, res.output
    for override, words in [("data.val=2", "'data.val' must be in [0.0, 1.0)"),
                            ("data.min_size=-5", "'data.min_size' must be in [1, inf]"),
                            ("data.workers=0", "'data.workers' must be in [1, inf]"),
                            ("classes=[Normal, Normal]", "more than once")]:
        one_error(invoke("index", data, "-o", tmp_path / "m.csv", "--set", override), words)


def test_index_follows_a_symlinked_class_folder(tmp_path):
    """Item 5: class folders that are symlinks are read (a loop is reported, not followed)."""
    store = write_class_folders(tmp_path / "store", 3)
    data = tmp_path / "data"
    data.mkdir()
    for cls in ("COVID-19", "Normal", "Viral Pneumonia"):
        (data / cls).symlink_to(store / cls, target_is_directory=True)
    (store / "Normal" / "loop").symlink_to(data, target_is_directory=True)
    res = invoke("index", data, "-o", tmp_path / "m.csv")
    assert res.exit_code == 0, res.output
    assert "Images: 9" in res.output and "symlinked folder already read" in res.output
    assert len(read(tmp_path / "m.csv")) == 9
