"""Read and write the package's CSV tables (manifests, splits files) so that an incomplete one is refused.

Why a sidecar: a CSV cut at a row boundary (disk full, an interrupted copy: 39 of 90 rows, one
class gone) is still well-formed, and nothing in its content can tell. So every manifest and
splits file the package writes (:func:`write_table`) gets ``NAME.meta.json`` beside it: the
writer, the row count, the columns and the SHA-256 of the CSV bytes. :func:`read_table` then
refuses a file whose row count or columns differ from its sidecar (naming both numbers and how to
proceed if the edit was on purpose), or whose bytes differ and that lacks its final newline (the
last row cut inside its last field), and accepts with a warning one whose bytes alone changed (a
hand-edited label): such a table is not ``verified``, so hash columns in it are recomputed.
A trailing checksum line inside the CSV would do the same but break every other CSV reader.

Every table, with or without a sidecar, is also checked for its structure: a header, a
comma delimiter (a ``;``/tab header gets a hint), the required columns, every row with as many
fields as the header (a row cut in the middle has fewer), and no empty required field.
File names that are not valid UTF-8 are read and written as the same bytes (surrogate escapes).
"""

from __future__ import annotations

import csv
import errno
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from covidxray import atomic
from covidxray.errors import DiskSpaceError, TableError
from covidxray.runinfo import file_sha256

SIDECAR_SUFFIX = ".meta.json"
FORMAT = "covidxray-table/1"




@dataclass
class Table:
    """A table read by :func:`read_table`.

    Attributes:
        df: The rows.
        verified: True when a sidecar matches the file byte for byte (the package wrote it as is).
        writer: The sidecar's writer (``"covidxray index"``, ...), "" without a sidecar.
        warnings: Messages about the file the caller should show.
    """

    df: pd.DataFrame
    verified: bool = False
    writer: str = ""
    warnings: list[str] = field(default_factory=list)


def shown(path: object) -> str:
    """``str(path)`` safe to print: bytes that are not UTF-8 become U+FFFD."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def sidecar(path: str | Path) -> Path:
    """The sidecar of a table: ``manifest.csv`` -> ``manifest.csv.meta.json``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_meta(path: str | Path) -> dict | None:
    """The sidecar of ``path`` as a dict, or None when it is missing or not one of ours."""
    try:
        meta = json.loads(sidecar(path).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None




def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() == 0:
            return False
        fh.seek(-1, 2)
        return fh.read(1) in (b"\n", b"\r")


def write_table(df: pd.DataFrame, path: str | Path, writer: str) -> Path:
    """Write ``df`` as CSV atomically, then its sidecar (row count, columns, SHA-256).

    Args:
        df: The table (written without index).
        path: Target CSV; an existing folder is an error.
        writer: Who wrote it, e.g. ``"covidxray index"`` (stored in the sidecar).

    Returns:
        ``path``.

    Raises:
        DiskSpaceError: The disk is full (checked before, or hit while writing); any previous
            file at ``path`` is left as it was.
        IsADirectoryError: ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{shown(path)} is a folder; give a file name for the CSV")
    size = len(df.to_csv(index=False).encode("utf-8", "surrogateescape")) + 4096  # + the sidecar
    atomic.check_free_space(path.parent, size, shown(path.name))
    stage = "csv"
    try:
        sidecar(path).unlink(missing_ok=True)  # a failed write must not leave the old sidecar on a new CSV
        atomic.write_csv(df, path)
        stage = "sidecar"
        meta = {"format": FORMAT, "writer": writer, "rows": len(df), "columns": [str(c) for c in df.columns],
                "sha256": file_sha256(path)}
        atomic.write_json(sidecar(path), meta)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            what = ("the CSV was written, its sidecar was not" if stage == "sidecar"
                    else "nothing was written (any previous file is unchanged)")
            raise DiskSpaceError(f"{shown(path)}: disk full while writing it; {what}: {err.strerror}") from None
        raise
    return path


def _structure(path: Path, kind: str) -> tuple[list[str], int]:
    """Header and row count of a CSV, refusing rows whose field count differs from the header's."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            rows = csv.reader(fh)
            header = next(rows, None)
            if not header or not any(h.strip() for h in header):
                raise TableError(f"{shown(path)}: empty {kind} (no header line)")
            n = 0
            for row in rows:
                if not row:
                    continue  # blank line (pandas skips them too)
                n += 1
                if len(row) != len(header):
                    raise TableError(f"{shown(path)}: row {n} has {len(row)} of {len(header)} fields: "
                                     f"the {kind} is truncated or malformed")
    except csv.Error as err:
        raise TableError(f"{shown(path)}: not a readable CSV {kind}: {err}") from None
    except UnicodeDecodeError as err:  # pragma: no cover - surrogateescape decodes any bytes
        raise TableError(f"{shown(path)}: cannot decode {kind}: {err}") from None
    return header, n


def read_table(path: str | Path, required: Sequence[str], kind: str = "table", dtype=str,
               nonempty: Sequence[str] = (), allow_empty: bool = False) -> Table:
    """Read a CSV table, refusing one that is incomplete or lacks columns.

    Args:
        path: The CSV.
        required: Columns that must be present.
        kind: What the file is ("manifest", "splits file"), for messages.
        dtype: Passed to ``pandas.read_csv`` (str: every column as text).
        nonempty: Required columns that must have a value on every row.
        allow_empty: Accept a table with a header and no rows.

    Returns:
        The :class:`Table`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.
        TableError: Empty, not comma-separated, missing columns, rows with missing fields or empty
            required values, or a sidecar whose rows/columns do not match.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{shown(path)} is a folder, not a CSV {kind}")
    if not path.is_file():
        raise FileNotFoundError(f"{shown(path)}: {kind} not found")
    header, n_rows = _structure(path, kind)
    missing = [c for c in required if c not in header]
    if missing:
        hint = ""
        if len(header) == 1 and any(d in header[0] for d in ";\t|"):
            delim = next(d for d in ";\t|" if d in header[0])
            hint = f" (the header looks {delim!r}-delimited; covidxray reads comma-separated CSV)"
        raise TableError(f"{shown(path)}: {kind} lacks column(s) {', '.join(missing)}{hint}; "
                         f"it has {', '.join(header)}")
    if n_rows == 0 and not allow_empty:
        raise TableError(f"{shown(path)}: {kind} has a header but no rows")
    table = Table(pd.DataFrame())
    meta = read_meta(path)
    if meta is not None:
        table.writer = str(meta.get("writer", ""))
        note = (f"if you changed it on purpose, delete {shown(sidecar(path).name)}")
        if meta.get("columns") != header:
            raise TableError(f"{shown(path)}: columns differ from those {table.writer or 'covidxray'} wrote "
                             f"({len(header)} vs {len(meta.get('columns') or [])}): incomplete file; {note}")
        if meta.get("rows") != n_rows:
            raise TableError(f"{shown(path)}: {n_rows} rows but {table.writer or 'covidxray'} wrote "
                             f"{meta.get('rows')}: the file is truncated or incomplete; {note}")
        table.verified = meta.get("sha256") == file_sha256(path)
        if not table.verified and not _ends_with_newline(path):  # the last row cut inside its last field
            raise TableError(f"{shown(path)}: the last row is cut short (no final newline, and the bytes "
                             f"differ from what {table.writer or 'covidxray'} wrote): truncated; {note}")
        if not table.verified:
            table.warnings.append(f"{shown(path)} was changed after {table.writer or 'covidxray'} wrote it "
                                  "(same rows and columns): its hash columns are recomputed")
    try:
        df = pd.read_csv(path, dtype=dtype, keep_default_na=False, encoding_errors="surrogateescape")
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise TableError(f"{shown(path)}: cannot read {kind}: {err}") from None
    for col in nonempty:
        empty = df.index[df[col].astype(str).str.strip() == ""]
        if len(empty):
            raise TableError(f"{shown(path)}: {len(empty)} row(s) with an empty '{col}' "
                             f"(first: row {empty[0] + 1}): the {kind} is incomplete")
    table.df = df
    return table
