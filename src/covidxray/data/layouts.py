"""Dataset layouts: which one a root has, and the labelled image candidates each one yields.

Held apart from :mod:`covidxray.data.discover`, which vets the candidates found here (decoding every
image, quarantining bad ones and conflicting labels) and reports the result: this module only reads
folder names and manifest rows, never image content.

Layouts (auto-detected by :func:`detect_layout`, reported in ``Discovery.layout``):

* ``csv-manifest``: a CSV file given as root, or a folder holding ``manifest.csv``
  with a ``label`` column (phantom output, ``cxr-dev``). Columns ``path,label``
  plus optional ``patient_id,source,lung_mask,lesion_mask`` (``source_repo`` is
  used as ``source`` when ``source`` is absent) and any extra columns, which are
  kept (those clashing with computed columns get a ``csv_`` prefix). Relative
  paths are relative to the CSV's folder. A ``manifest.csv`` that ``covidxray index`` wrote into
  a folder with class folders does not make it a csv-manifest folder: the folders are read.
  Whenever a manifest is read, image files on disk that it does not list are found by
  :func:`unlisted_images`.
* ``radiography-v4``: COVID-19 Radiography Database v4, ``<class>/images`` with
  lung masks of the same file name in ``<class>/masks``.
* ``class-folders``: v1/v2 layout, images directly in ``<class>/``.
* ``nested-class-folders``: folder-per-class at any depth.

In the folder layouts (:func:`scan_folders`) the label of a file is its nearest ancestor folder whose
name maps to a class (:func:`canonical_label`); ``images``/``masks`` folders are looked through, and
files in ``masks`` folders are only used as masks. Symlinked folders are followed, each real folder
once (a loop or a second link to one folder is listed as ignored).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from covidxray.data.tables import TableError, read_meta, read_table, shown
from covidxray.errors import DataError

DEFAULT_CLASSES = ("COVID-19", "Normal", "Viral Pneumonia")
LABEL_ALIASES = {
    **dict.fromkeys(["covid", "covid-19", "covid19", "covid_19", "covid 19", "sars-cov-2"], "COVID-19"),
    **dict.fromkeys(["normal", "healthy", "no finding", "no_finding"], "Normal"),
    **dict.fromkeys(["viral pneumonia", "viral_pneumonia", "pneumonia-viral", "pneumonia_viral",
                     "viral", "virus"], "Viral Pneumonia"),
    **dict.fromkeys(["lung opacity", "lung_opacity", "lung-opacity"], "Lung Opacity"),
}
MANIFEST_NAME = "manifest.csv"
METADATA_SUFFIXES = {".csv", ".txt", ".md", ".rst", ".xlsx", ".xls", ".json", ".yaml", ".yml", ".pdf"}
IMAGE_DIRS = {"images", "image", "imgs"}
MASK_DIRS = {"masks", "mask", "lung masks"}
BASE_COLUMNS = ["path", "label", "patient_id", "source", "lung_mask", "lesion_mask"]
COMPUTED_COLUMNS = ["height", "width", "sha1", "phash"]
INDEX_WRITER = "covidxray index"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".dcm", ".dicom", ".webp"}
UNLISTED = "image file not listed in the manifest"


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower())


_NORMALISED_ALIASES = {_norm(k): v for k, v in LABEL_ALIASES.items()}


def canonical_label(name: str, classes: Sequence[str] = DEFAULT_CLASSES) -> str | None:
    """Map a folder name or label to its canonical class name.

    Matching ignores case and treats spaces, ``_`` and ``-`` alike. Configured
    class names match themselves, so custom classes work without an alias.

    Args:
        name: Raw label, e.g. ``"COVID_19"`` or ``"viral pneumonia"``.
        classes: Configured class names.

    Returns:
        The canonical name (possibly one outside ``classes``, e.g. ``"Lung
        Opacity"``), or None when the name is not a known label.
    """
    key = _norm(name)
    for cls in classes:
        if _norm(cls) == key:
            return cls
    return _NORMALISED_ALIASES.get(key)


def _label_reason(raw: str, classes: Sequence[str]) -> tuple[str | None, str]:
    """Return (label, "") for a usable label, else (None, quarantine reason)."""
    label = canonical_label(raw, classes)
    if label is None:
        return None, f"unknown label '{raw}'"
    if label not in classes:
        return None, f"label '{label}' not in the configured classes"
    return label, ""


def _row(path: str, label: str, **values: str) -> dict:
    row = dict.fromkeys(BASE_COLUMNS, "")
    row.update(values, path=path, label=label)
    return row


def _walk(root: Path, skipped: list) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` in sorted order that follows symlinked folders, each real folder once.

    A folder reached again (a symlink loop, or a second link to one folder) is not entered and is
    appended to ``skipped`` as ``(path, reason)``.
    """
    def key(p: str) -> tuple[int, int]:
        st = os.stat(p)
        return st.st_dev, st.st_ino

    seen = {key(str(root)): str(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            try:
                k = key(full)
            except OSError as err:
                skipped.append((full, f"unreadable folder: {err.strerror}"))
                continue
            if k in seen:
                skipped.append((full, f"symlinked folder already read as {seen[k]} (loop or second link)"))
                continue
            seen[k] = full
            keep.append(d)
        dirnames[:] = keep
        yield dirpath, dirnames, filenames


def scan_folders(root: Path, classes: Sequence[str]) -> tuple[list[dict], list, list]:
    """Collect labelled image candidates from a folder-per-class tree.

    Returns:
        ``(rows, quarantine, ignored)``: one row dict per candidate (:data:`BASE_COLUMNS`), and
        ``(path, reason)`` lists of refused and of ignored files.
    """
    rows, quarantine, ignored = [], [], []
    walked, all_masks = [], []
    masks: dict[tuple[str, str], str] = {}  # (folder holding masks/, file name or stem) -> mask
    for dirpath, _, filenames in _walk(root, ignored):
        parts = Path(dirpath).relative_to(root).parts
        in_masks = [i for i, p in enumerate(parts) if _norm(p) in MASK_DIRS]
        if not in_masks:
            walked.append((dirpath, parts, sorted(filenames)))
            continue
        for name in filenames:
            all_masks.append(os.path.join(dirpath, name))
            if in_masks[-1] == len(parts) - 1:
                masks[(os.path.dirname(dirpath), name)] = all_masks[-1]
                masks.setdefault((os.path.dirname(dirpath), Path(name).stem), all_masks[-1])
    used_masks = set()
    for dirpath, parts, filenames in walked:
        named = [p for p in reversed(parts) if _norm(p) not in IMAGE_DIRS]
        label_dir = next((p for p in named if canonical_label(p, classes)), None)
        mask_parent = os.path.dirname(dirpath) if parts and _norm(parts[-1]) in IMAGE_DIRS else None
        for name in filenames:
            path = os.path.join(dirpath, name)
            mask = ""
            if mask_parent is not None:
                mask = masks.get((mask_parent, name)) or masks.get((mask_parent, Path(name).stem), "")
                used_masks.add(mask)
            if label_dir is None:
                if Path(name).suffix.lower() in METADATA_SUFFIXES:
                    ignored.append((path, "metadata file"))
                else:
                    quarantine.append((path, f"unknown label '{named[0]}'" if named else "not in a class folder"))
                continue
            label, reason = _label_reason(label_dir, classes)
            if label is None:
                quarantine.append((path, reason))
                continue
            rows.append(_row(path, label, lung_mask=mask))
    ignored += [(m, "mask without matching image") for m in all_masks if m not in used_masks]
    return rows, quarantine, ignored


def _resolve(base: str, value: str) -> str:
    value = value.strip().replace("\\", "/")
    return os.path.normpath(os.path.join(base, value)) if value else ""


def read_manifest(csv_path: Path, classes: Sequence[str]) -> tuple[list[dict], list, list, list[str]]:
    """Collect labelled image candidates from a CSV manifest (one path with two labels: quarantined).

    Returns:
        ``(rows, quarantine, ignored, extras)``: one row dict per candidate (absolute paths),
        ``(path, reason)`` lists of refused and of ignored entries, and the extra CSV columns kept.
    """
    df = read_table(csv_path, ("path", "label"), "manifest").df
    if "source" not in df.columns and "source_repo" in df.columns:
        df = df.rename(columns={"source_repo": "source"})
    df = df.rename(columns={c: f"csv_{c}" for c in COMPUTED_COLUMNS if c in df.columns})
    extras = [c for c in df.columns if c not in BASE_COLUMNS]
    base = os.path.abspath(csv_path.parent)
    rows, quarantine, ignored, seen = [], [], [], set()
    labels_of: dict[str, set] = {}
    for rec in df.to_dict("records"):
        labels_of.setdefault(_resolve(base, rec["path"]), set()).add(canonical_label(rec["label"], classes)
                                                                     or rec["label"].strip())
    for rec in df.to_dict("records"):
        path = _resolve(base, rec["path"])
        label, reason = _label_reason(rec["label"], classes)
        if not path:
            quarantine.append((f"{csv_path} (row without path)", "empty path in manifest"))
        elif len(labels_of[path]) > 1:
            quarantine.append((path, f"conflicting labels: manifest rows give {', '.join(sorted(labels_of[path]))}"))
        elif path in seen:
            quarantine.append((path, "duplicate manifest row"))
        elif label is None:
            quarantine.append((path, reason))
        else:
            seen.add(path)
            row = _row(path, label, **{c: rec.get(c, "") for c in BASE_COLUMNS[2:]}, **{c: rec[c] for c in extras})
            for col in ("lung_mask", "lesion_mask"):
                row[col] = _resolve(base, row[col])
                if row[col] and not os.path.isfile(row[col]):
                    ignored.append((path, f"{col} not found (mask dropped): {row[col]}"))
                    row[col] = ""
            rows.append(row)
    return rows, quarantine, ignored, extras


def own_index(manifest: Path, header: Sequence[str]) -> bool:
    """True for a manifest ``covidxray index`` wrote (its sidecar says so; without one, its columns)."""
    meta = read_meta(manifest)
    if meta is not None:
        return meta.get("writer") == INDEX_WRITER
    return list(header[: len(BASE_COLUMNS + COMPUTED_COLUMNS)]) == BASE_COLUMNS + COMPUTED_COLUMNS


def detect_layout(root: Path, classes: Sequence[str]) -> tuple[str, Path | None]:
    """The layout of a dataset root (see the module docstring) and the manifest CSV to read.

    Args:
        root: Absolute dataset folder or CSV manifest file.
        classes: Configured class names (folders named after them are class folders).

    Returns:
        ``(layout, manifest)``; ``manifest`` is None for the folder layouts.

    Raises:
        FileNotFoundError: When ``root`` does not exist.
        DataError: A root that is neither a folder nor a CSV; ``TableError`` for an unreadable
            ``manifest.csv``.
    """
    if not root.exists():
        raise FileNotFoundError(f"dataset root not found: {root}")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"{shown(root)}: dataset root must be a folder or a CSV manifest, not a "
                            f"{root.suffix or 'suffix-less'} file")
        return "csv-manifest", root
    manifest, own = root / MANIFEST_NAME, False
    if manifest.is_file():
        try:
            header = list(pd.read_csv(manifest, nrows=0, encoding_errors="surrogateescape").columns)
        except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise TableError(f"{shown(manifest)}: cannot read manifest: {err}") from None
        own = own_index(manifest, header)
        if "label" in header and not own:
            return "csv-manifest", manifest

    def class_dirs(folder: Path) -> list[Path]:
        return [d for d in sorted(folder.iterdir()) if d.is_dir() and canonical_label(d.name, classes)]

    def is_v4(folder: Path) -> bool:  # <class>/images beside <class>/masks
        return any(_norm(s.name) in IMAGE_DIRS for d in class_dirs(folder) for s in d.iterdir() if s.is_dir())

    tops = class_dirs(root)
    # the Kaggle ZIP wraps the v4 tree in one folder (COVID-19_Radiography_Dataset/)
    if is_v4(root) or (not tops and any(is_v4(d) for d in root.iterdir() if d.is_dir())):
        return "radiography-v4", None
    if own and not tops:  # our own index of a tree the folder walk cannot label: read it
        return "csv-manifest", manifest
    return ("class-folders" if tops else "nested-class-folders"), None


def unlisted_images(root: Path, listed: set[str], masks: set[str], skipped: list) -> list[tuple[str, str]]:
    """Image files on disk a manifest does not list: the whole tree of a folder root (mask
    folders aside), else the folders holding the listed images (not below them)."""
    if root.is_dir():
        files = [os.path.join(d, f) for d, _, names in _walk(root, skipped)
                 if not any(_norm(p) in MASK_DIRS for p in Path(d).relative_to(root).parts) for f in names]
    else:
        folders = {os.path.dirname(p) for p in listed if p}
        files = [os.path.join(d, f) for d in sorted(folders) if os.path.isdir(d) for f in sorted(os.listdir(d))]
    return [(f, UNLISTED) for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES
            and os.path.normpath(f) not in listed and os.path.normpath(f) not in masks]

