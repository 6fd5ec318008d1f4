"""Data commands: ``phantoms``, ``download``, ``index``, ``split``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from covidxray.cli.base import ConfigOpt, SetOpt, command, echo, load_cfg
from covidxray.errors import UsageError


@command()
def phantoms(
    out: Annotated[Path, typer.Argument(help="Output folder.")],
    n_per_class: Annotated[int, typer.Option(help="Images per class.")] = 100,
    size: Annotated[int, typer.Option(help="Image size in pixels.")] = 256,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    difficulty: Annotated[float, typer.Option(help="1 = visible lesions; larger = fainter.")] = 1.0,
    confounder: Annotated[str, typer.Option(help="none | marker")] = "none",
    confounder_strength: Annotated[float, typer.Option(help="Marker-class correlation, 0..1.")] = 0.0,
    workers: Annotated[int, typer.Option(help="Processes.")] = 1,
) -> None:
    """Generate synthetic chest radiographs with lung and lesion masks."""
    from covidxray.data.phantoms import generate_dataset

    try:
        df = generate_dataset(out, n_per_class=n_per_class, size=size, seed=seed, difficulty=difficulty,
                              confounder=None if confounder == "none" else confounder,
                              confounder_strength=confounder_strength, workers=workers)
    except ValueError as err:  # the generator's argument checks (size 64..1024, counts, strength)
        raise UsageError(f"phantoms: {err}") from None
    counts = df["label"].value_counts().sort_index()
    echo(f"wrote {len(df)} phantoms to {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@command()
def download(
    out: Annotated[Path, typer.Argument(help="Destination folder.")],
    archive: Annotated[Path | None, typer.Option(help="A ZIP downloaded by hand (no download).")] = None,
) -> None:
    """Get the Kaggle COVID-19 Radiography Database (or unpack a ZIP of it you downloaded)."""
    from covidxray.data.datasets import download_kaggle

    download_kaggle(out, archive)
    echo(f"dataset in {out}; next: covidxray index {out} -o {out}/manifest.csv")


@command()
def index(
    data: Annotated[Path, typer.Argument(help="Dataset folder or manifest CSV.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Manifest CSV to write.")] = Path("manifest.csv"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Find images and labels in any supported layout; quarantine unreadable files with a reason."""
    from covidxray.atomic import write_csv
    from covidxray.data.discover import discover, manifest_source, summarize
    from covidxray.data.layouts import INDEX_WRITER
    from covidxray.data.tables import shown, write_table

    cfg = load_cfg(config, set_)
    qpath = output.with_name(output.stem + ".quarantine.csv")
    if output.is_dir():  # checked before the scan, which can take long
        raise IsADirectoryError(f"-o {shown(output)} is a folder; give the manifest CSV to write")
    src = manifest_source(data, cfg.classes)
    if src is not None:
        for target in (output, qpath):
            if target.exists() and target.resolve() == src.resolve():
                raise UsageError(f"-o {shown(output)} would overwrite the input manifest {shown(src)}; "
                                 "write the new manifest elsewhere")
    found = discover(data, classes=cfg.classes, min_size=cfg.data.min_size, workers=cfg.data.workers,
                     near_dup_threshold=cfg.data.near_dup_threshold)
    write_table(found.manifest, output, INDEX_WRITER)
    echo(summarize(found))
    echo(f"manifest: {shown(output)} ({len(found.manifest)} images)")
    if len(found.quarantine):
        write_csv(found.quarantine, qpath)
        echo(f"quarantine report: {shown(qpath)} ({len(found.quarantine)} files)")
    if found.manifest.empty:
        echo("error: no usable images found")
        raise typer.Exit(1)


@command("split")
def split_cmd(
    manifest: Annotated[Path, typer.Argument(help="Manifest CSV from `covidxray index`.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Splits CSV to write.")] = Path("splits.csv"),
    val: Annotated[float, typer.Option(help="Validation fraction.")] = 0.15,
    test: Annotated[float, typer.Option(help="Test fraction.")] = 0.15,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    near_dup_threshold: Annotated[int | None, typer.Option(
        help="Largest phash distance of near-duplicates (default: 1/16 of the bits, 16 of 256).")] = None,
    allow_empty: Annotated[bool, typer.Option(
        help="Accept a split that gets no image of some class (tiny data sets).")] = False,
) -> None:
    """Stratified train/val/test split that keeps patients and duplicate groups together.

    Relative paths in MANIFEST are relative to its folder; OUTPUT gets absolute paths. Hash columns
    are used only from a manifest `covidxray index` wrote unchanged; otherwise they are recomputed.
    """
    from covidxray import DEFAULT_CLASSES
    from covidxray.data.duplicates import duplicate_stats
    from covidxray.data.integrity import split_warnings
    from covidxray.data.split import check_leakage, format_summary, make_splits, split_summary
    from covidxray.data.tables import read_table, shown, write_table

    if output.is_dir():
        raise IsADirectoryError(f"-o {shown(output)} is a folder; give the splits CSV to write")
    if output.exists() and manifest.exists() and output.resolve() == manifest.resolve():
        raise UsageError(f"-o {shown(output)} would overwrite the input manifest; write the splits elsewhere")
    table = read_table(manifest, ("path", "label"), "manifest", nonempty=("path", "label"))
    for warning in table.warnings:
        echo(f"warning: {warning}")
    df = table.df
    base = manifest.absolute().parent
    for col in ("path", "lung_mask", "lesion_mask"):
        if col in df:
            df[col] = [os.path.normpath(base / p) if p and not os.path.isabs(p) else p for p in df[col].astype(str)]
    if not table.verified:  # another tool's (or an edited) sha1/phash may be stale: recompute
        df = df.drop(columns=[c for c in ("sha1", "phash") if c in df])
    df = make_splits(df, val=val, test=test, seed=seed, near_dup_threshold=near_dup_threshold,
                     allow_empty=allow_empty)
    write_table(df, output, "covidxray split")
    report = check_leakage(df, near_dup_threshold)
    echo(format_summary(split_summary(df), report, duplicate_stats(df, near_dup_threshold)))
    for warning in split_warnings(df, val, test, DEFAULT_CLASSES):
        echo(f"warning: {warning}")
    echo(f"splits: {shown(output)}")
    if not report.ok:
        raise typer.Exit(1)
