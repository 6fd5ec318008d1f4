"""Getting the real data: local ZIP of the Kaggle database, and a clear message when offline."""

from __future__ import annotations

import zipfile

import cv2
import numpy as np
import pytest

from covidxray.data import datasets
from covidxray.data.discover import discover


def _kaggle_zip(path):
    rng = np.random.default_rng(0)
    mask = cv2.imencode(".png", np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1)))[1].tobytes()
    with zipfile.ZipFile(path, "w") as zf:
        for folder in ("COVID", "Normal", "Viral Pneumonia", "Lung_Opacity"):
            for i in range(2):
                # distinct images: one image under two classes would be quarantined (conflicting labels)
                img = cv2.imencode(".png", rng.integers(0, 256, (64, 64), dtype=np.uint8))[1].tobytes()
                zf.writestr(f"COVID-19_Radiography_Dataset/{folder}/images/{folder}-{i}.png", img)
                zf.writestr(f"COVID-19_Radiography_Dataset/{folder}/masks/{folder}-{i}.png", mask)
        zf.writestr("COVID-19_Radiography_Dataset/README.md.txt", "metadata")
    return path


def test_local_archive_unpacks_into_an_indexable_v4_tree(tmp_path):
    out = datasets.download_kaggle(tmp_path / "kaggle", archive=_kaggle_zip(tmp_path / "a.zip"))
    found = discover(out)
    assert found.layout == "radiography-v4"
    assert found.manifest["label"].value_counts().to_dict() == {"COVID-19": 2, "Normal": 2, "Viral Pneumonia": 2}
    assert found.manifest["lung_mask"].str.len().gt(0).all()
    assert any("Lung Opacity" in r for r in found.quarantine["reason"])


def test_bad_archives_are_refused_clearly(tmp_path):
    with pytest.raises(datasets.DownloadError, match="does not exist"):
        datasets.extract_archive(tmp_path / "none.zip", tmp_path / "o")
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(datasets.DownloadError, match="not a valid ZIP"):
        datasets.extract_archive(tmp_path / "bad.zip", tmp_path / "o")
    with zipfile.ZipFile(tmp_path / "slip.zip", "w") as zf:
        zf.writestr("../escape.png", b"x")
    with pytest.raises(datasets.DownloadError, match="outside"):
        datasets.extract_archive(tmp_path / "slip.zip", tmp_path / "o")
    assert not (tmp_path / "escape.png").exists()


def test_offline_download_says_what_to_do(monkeypatch, tmp_path):
    import kagglehub

    def offline(*a, **k):
        raise ConnectionError("Failed to resolve 'www.kaggle.com' ([Errno -2] Name or service not known)")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(datasets.DownloadError) as err:
        datasets.download_kaggle(tmp_path / "k")
    msg = str(err.value)
    assert "Failed to resolve" in msg and "--archive" in msg and datasets.KAGGLE_URL in msg


def test_unpacking_checks_space_and_leaves_nothing_half_done(tmp_path, monkeypatch):
    """A full disk is refused before unpacking; an archive over an existing copy is refused whole."""
    import shutil as sh

    from covidxray.errors import DiskSpaceError

    archive = _kaggle_zip(tmp_path / "a.zip")
    monkeypatch.setattr(sh, "disk_usage", lambda p: sh._ntuple_diskusage(10**9, 10**9, 10))
    with pytest.raises(DiskSpaceError, match="not enough free disk space"):
        datasets.extract_archive(archive, tmp_path / "o")
    assert not (tmp_path / "o").exists()
    monkeypatch.undo()
    datasets.extract_archive(archive, tmp_path / "o")
    with pytest.raises(datasets.DownloadError, match="already holds COVID-19_Radiography_Dataset"):
        datasets.extract_archive(archive, tmp_path / "o")
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["COVID-19_Radiography_Dataset"]
