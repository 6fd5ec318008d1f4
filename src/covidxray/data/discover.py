"""Find the images of a chest X-ray dataset, whatever its layout, and vet each one.

The layout and the labelled candidates come from :mod:`covidxray.data.layouts` (``csv-manifest``,
``radiography-v4``, ``class-folders``, ``nested-class-folders``); here each candidate is vetted and
the result reported. Nothing is dropped silently: files with another or unknown label, non-images and
unreadable images go to ``quarantine`` with a reason; metadata files (``*.csv``, ``*.txt``, ``*.md``,
``*.xlsx``, ...) outside class folders, masks without an image, a manifest ``covidxray index`` wrote
into a folder tree that is read instead, and image files on disk that a manifest does not list
(counted by :func:`summarize`) are listed in ``ignored``. One image (exact or near duplicate) with two
labels, and one manifest path listed with two labels, put every copy in ``quarantine``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from covidxray.data.imageio import ImageReadError, image_hash, read_image, sniff_format
from covidxray.data.integrity import quarantine_conflicts
from covidxray.data.layouts import (
    BASE_COLUMNS,
    COMPUTED_COLUMNS,
    DEFAULT_CLASSES,
    MANIFEST_NAME,
    UNLISTED,
    detect_layout,
    read_manifest,
    scan_folders,
    unlisted_images,
)
from covidxray.data.tables import shown


@dataclass
class Discovery:
    """Result of :func:`discover`.

    Attributes:
        manifest: One row per usable image, columns ``path,label,patient_id,source,
            lung_mask,lesion_mask,height,width,sha1,phash`` + extra CSV columns,
            absolute paths, sorted by path.
        quarantine: Refused files, columns ``path,reason``, sorted by path.
        layout: Detected layout name.
        ignored: Metadata files and unused masks, columns ``path,reason``.
        classes: The configured classes.
        manifest_csv: The manifest read (csv-manifest layout), else "".
    """

    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    layout: str
    ignored: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "reason"]))
    classes: tuple[str, ...] = DEFAULT_CLASSES
    manifest_csv: str = ""


def _inspect(path: str, min_size: int) -> tuple[int, int, str, str, str]:
    """Read one image: (height, width, sha1, phash, "") or (0, 0, "", "", reason)."""
    try:
        img = read_image(path, min_size)
    except ImageReadError as err:
        return 0, 0, "", "", err.reason
    except Exception as err:  # never let one odd file abort a whole scan
        return 0, 0, "", "", f"unreadable: {type(err).__name__}: {err}"
    sha1, phash = image_hash(img)
    return img.shape[0], img.shape[1], sha1, phash, ""


def _sniff(path: str) -> str:
    """Cheap content check without decoding: "" for an image, else a reason."""
    if sniff_format(path) is not None:
        return ""
    if not os.path.exists(path):
        return "file not found"
    return "zero-byte file" if os.path.getsize(path) == 0 else "not an image (unrecognised format)"


def manifest_source(root: str | Path, classes: Sequence[str] = DEFAULT_CLASSES) -> Path | None:
    """The manifest CSV :func:`discover` would read for ``root`` (None: it walks the folders)."""
    return detect_layout(Path(root).absolute(), tuple(classes))[1]


def discover(root: str | Path, classes: Sequence[str] = DEFAULT_CLASSES, min_size: int = 32,
             check_images: bool = True, workers: int = 1, near_dup_threshold: int | None = None) -> Discovery:
    """Find, label and vet every image of a dataset.

    Args:
        root: Dataset folder or CSV manifest file.
        classes: Classes to keep; files of other classes are quarantined.
        min_size: Smallest accepted image side in pixels.
        check_images: Decode every image (quarantining bad ones and filling
            ``height,width,sha1,phash``); False only sniffs file headers.
        workers: Processes used to decode images (1 = in this process).
        near_dup_threshold: pHash distance of near duplicates for the label-conflict check
            (None: :func:`covidxray.data.duplicates.default_threshold`).

    Returns:
        The :class:`Discovery` with manifest, quarantine, layout and ignored files.

    Raises:
        FileNotFoundError: When ``root`` does not exist.
        DataError: A root that is neither a folder nor a CSV; ``TableError`` (both ValueErrors) for
            an unreadable or incomplete manifest or one without ``path``/``label``.
    """
    root, classes = Path(root).absolute(), tuple(classes)
    layout, manifest_csv = detect_layout(root, classes)
    if manifest_csv is not None:
        rows, quarantine, ignored, extras = read_manifest(manifest_csv, classes)
        listed = {p for p, _ in quarantine} | {r["path"] for r in rows}
        masks = {r[c] for r in rows for c in ("lung_mask", "lesion_mask")} | {str(manifest_csv)}
        ignored += unlisted_images(root, listed, masks, ignored)
    else:
        (rows, quarantine, ignored), extras = scan_folders(root, classes), []
        own = str(root / MANIFEST_NAME)
        ignored = [(p, "manifest written by covidxray index (the folders are read instead)")
                   if p == own else (p, r) for p, r in ignored]
    paths = [r["path"] for r in rows]
    if check_images and workers > 1 and len(paths) > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            chunk = max(1, len(paths) // (workers * 8))
            results = list(pool.map(_inspect, paths, repeat(min_size), chunksize=chunk))
    elif check_images:
        results = [_inspect(p, min_size) for p in paths]
    else:
        results = [(pd.NA, pd.NA, "", "", _sniff(p)) for p in paths]
    kept = []
    for row, (height, width, sha1, phash, reason) in zip(rows, results, strict=True):
        if reason:
            quarantine.append((row["path"], reason))
        else:
            kept.append({**row, "height": height, "width": width, "sha1": sha1, "phash": phash})
    columns = BASE_COLUMNS + COMPUTED_COLUMNS + extras
    manifest = pd.DataFrame(kept, columns=columns).astype({"height": "Int64", "width": "Int64"})
    for col in COMPUTED_COLUMNS:  # a re-indexed manifest: drop CSV copies equal to the new values
        if f"csv_{col}" in manifest and manifest[f"csv_{col}"].equals(manifest[col].astype(str)):
            manifest = manifest.drop(columns=f"csv_{col}")
    if check_images:
        manifest = quarantine_conflicts(manifest, quarantine, near_dup_threshold)

    def table(items: list) -> pd.DataFrame:
        return pd.DataFrame(items, columns=["path", "reason"]).sort_values("path").reset_index(drop=True)

    return Discovery(manifest.sort_values("path").reset_index(drop=True), table(quarantine), layout,
                     table(ignored), classes, str(manifest_csv or ""))


def summarize(d: Discovery) -> str:
    """Format a discovery as a printable report.

    Args:
        d: Result of :func:`discover`.

    Returns:
        Multi-line text: layout, images per class, quarantined files per reason
        (reasons grouped by the text before any ``:``), ignored files per reason.
    """
    counts = d.manifest["label"].value_counts()
    lines = [f"Layout detected: {d.layout}"]
    if d.manifest_csv:
        unlisted = int((d.ignored["reason"] == UNLISTED).sum())
        lines.append(f"Reading the manifest {shown(d.manifest_csv)}: labels and paths come from it; "
                     f"{unlisted} image file(s) on disk that it does not list are ignored"
                     + (" (add them to the manifest to use them)" if unlisted else ""))
    lines.append(f"Images: {len(d.manifest)}")
    lines += [f"  {cls:<40} {counts.get(cls, 0):>7}" for cls in d.classes]
    for title, table in (("Quarantined", d.quarantine), ("Ignored", d.ignored)):
        lines.append(f"{title}: {len(table)}")
        kinds = table["reason"].str.split(":").str[0]
        lines += [f"  {kind:<40} {n:>7}" for kind, n in kinds.value_counts().sort_index().items()]
    metadata = d.ignored.loc[d.ignored["reason"] == "metadata file", "path"].map(lambda p: shown(os.path.basename(p)))
    if len(metadata):
        names = ", ".join(metadata[:10]) + (", ..." if len(metadata) > 10 else "")
        lines.append(f"Ignored metadata files: {names}")
    return "\n".join(lines)
