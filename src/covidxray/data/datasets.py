"""Getting the real data: the COVID-19 Radiography Database from Kaggle, or a local copy of it; and
what is known about each image source (:data:`KNOWN_SOURCES`).

Online, ``kagglehub`` downloads and caches the dataset (Kaggle credentials may be needed:
``~/.kaggle/kaggle.json`` or ``KAGGLE_USERNAME``/``KAGGLE_KEY``). Offline, or behind a proxy,
download the ZIP elsewhere and pass it with ``--archive``; nothing else changes.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from covidxray.atomic import TMP_TAG, check_free_space
from covidxray.errors import DownloadError

KAGGLE_HANDLE = "tawsifurrahman/covid19-radiography-database"
KAGGLE_URL = f"https://www.kaggle.com/datasets/{KAGGLE_HANDLE}"


@dataclass(frozen=True)
class SourceInfo:
    """What is known about one image source (a manifest's ``source`` / ``source_repo`` value).

    Attributes:
        name: The value as it appears in manifests.
        origin: Where the images come from, with the paper to cite.
        population: Who is imaged (age group, hospital, country), as far as documented.
        confounds: Known ways the source can stand in for the label (shortcuts).
    """

    name: str
    origin: str
    population: str
    confounds: str


#: Documented sources of the datasets this project uses (``covidxray card`` names them and their
#: confounds; the details are in each dataset's SOURCES.txt).
KNOWN_SOURCES = {s.name: s for s in (
    SourceInfo("rtchanon/Machine-Learning-for-COVID-19-detection-from-chest-X-RAYS",
               "COVID-19 Radiography Database v4 (Chowdhury et al. IEEE Access 2020; Rahman et al. 2020), "
               "re-saved at 224x224; COVID-19 from BIMCV/PadChest, Hannover, SIRM/eurorad/ieee8023 and others; "
               "Normal from the RSNA pneumonia challenge (NIH ChestX-ray14 films) and Kermany et al. 2018",
               "adults (COVID-19, RSNA Normal); a minority of its Normal films are pediatric Kermany images",
               "COVID-19 and Normal come from different hospitals inside this repository, so hospital, scanner and "
               "processing differences can separate them; pediatric Normal films share the Viral Pneumonia source"),
    SourceInfo("waliatushar/ai-pneumonia-detection",
               "Kermany et al. 2018 ChestXRay2017 (Guangzhou Women and Children's Medical Center), 224x224 copy; "
               "the Radiography Database's Viral Pneumonia folder is the same images",
               "pediatric (ages 1-5), one hospital in Guangzhou",
               "holds only Viral Pneumonia in cxr-dev: age (child anatomy), hospital and processing predict the "
               "class without any pneumonia sign"),
    SourceInfo("nih-chestxray14", "NIH Clinical Center ChestX-ray14 (Wang et al. 2017), via Ozturk et al. 2020",
               "adults, one US hospital", "text-mined labels; cxr-dev's Normal films are mostly NIH-origin too"),
    SourceInfo("hannover", "Hannover Medical School COVID-19 image repository (ml-workgroup, CC BY 3.0)",
               "adults, mostly AP (bedside) films, one German hospital",
               "holds only COVID-19: AP projection and bedside devices go with the label"),
    SourceInfo("phantom", "synthetic radiographs of covidxray.data.phantoms (no patients)",
               "none: procedurally drawn anatomy with lesions",
               "none unless phantoms.confounder plants a marker (then the marker predicts COVID-19)"),
)}




def extract_archive(archive: str | Path, out: str | Path) -> Path:
    """Unpack a downloaded ZIP of the dataset into ``out`` (refusing paths that escape it).

    The free space is checked first, and the archive is unpacked into a temporary folder beside
    ``out`` whose top-level entries are then moved in, so a full disk or a kill never leaves a
    half-unpacked data set that ``covidxray index`` would read as a smaller one.

    Args:
        archive: The ZIP file.
        out: Destination folder.

    Returns:
        ``out``.

    Raises:
        DownloadError: Missing or invalid ZIP, a member escaping ``out``, or an entry of the
            archive that already exists in ``out``.
        DiskSpaceError: Not enough free space for the unpacked files.
    """
    archive, out = Path(archive), Path(out)
    if not archive.is_file():
        raise DownloadError(f"archive '{archive}' does not exist")
    try:
        with zipfile.ZipFile(archive) as zf:
            root = out.resolve()
            for member in zf.namelist():
                if not (root / member).resolve().is_relative_to(root):
                    raise DownloadError(f"{archive}: member '{member}' would be written outside {out}")
            check_free_space(out.parent, sum(i.file_size for i in zf.infolist()), f"unpacking {archive.name}")
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / f".unpack.{os.getpid()}{TMP_TAG}"
            try:
                zf.extractall(tmp)
                entries = sorted(tmp.iterdir())
                clash = [e.name for e in entries if (out / e.name).exists()]
                if clash:
                    raise DownloadError(f"{out}: already holds {', '.join(clash)} from the archive; "
                                        "unpack into an empty folder")
                for entry in entries:
                    os.replace(entry, out / entry.name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except zipfile.BadZipFile as err:
        raise DownloadError(f"{archive}: not a valid ZIP file ({err})") from None
    return out


def download_kaggle(out: str | Path, archive: str | Path | None = None, handle: str = KAGGLE_HANDLE) -> Path:
    """Put the COVID-19 Radiography Database into ``out`` (from Kaggle, or from a local ZIP).

    Args:
        out: Destination folder; index it afterwards with ``covidxray index OUT``.
        archive: A ZIP downloaded by hand; when given, nothing is downloaded.
        handle: Kaggle dataset handle.

    Returns:
        ``out``.

    Raises:
        DownloadError: Offline, missing credentials or kagglehub, with what to do instead.
    """
    out = Path(out)
    if archive is not None:
        return extract_archive(archive, out)
    manual = (f"Download it by hand from {KAGGLE_URL} (the 'Download' button gives a ZIP), then run "
              f"`covidxray download {out} --archive PATH/TO/archive.zip`, or unzip it anywhere and point "
              "`covidxray index` / `--data` at the folder.")
    try:
        import kagglehub
    except ImportError:
        raise DownloadError(f"the kagglehub package is not installed (pip install kagglehub). {manual}") from None
    try:
        cached = Path(kagglehub.dataset_download(handle))
    except Exception as err:  # noqa: BLE001 - network, auth and HTTP errors come in many types
        raise DownloadError(f"could not download '{handle}' from Kaggle ({type(err).__name__}: {err}). "
                            f"{manual}") from None
    shutil.copytree(cached, out, dirs_exist_ok=True)
    return out
