"""``covidxray`` command line: thin wrappers around the package's functions.

Known failure kinds (bad config, missing data, unreadable files, incomplete runs, unavailable
weights) end with one clear ``error:`` line and exit status 2, never a TensorFlow traceback.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import typer  # noqa: E402

from covidxray.explain.registry import NAMES as METHOD_NAMES  # noqa: E402 (light: no TensorFlow)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="COVID-19 / Normal / Viral Pneumonia on chest X-rays: data, training, evaluation, "
                       "explanations.")

ConfigOpt = Annotated[list[str], typer.Option("--config", "-c", help="Config overlay(s): name or YAML path.")]
SetOpt = Annotated[list[str], typer.Option("--set", help="Override: dotted.key=value (repeatable).")]


def _cfg(config: list[str] | None, overrides: list[str] | None):
    from covidxray.config import load_config

    return load_config(config or [], overrides or [])


def _echo(msg: str) -> None:
    typer.echo(msg)


def _known_errors() -> tuple[type[Exception], ...]:
    from covidxray.errors import CovidxrayError

    return (CovidxrayError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)


def command(name: str | None = None):
    """``app.command`` whose known errors end with one ``error:`` line and exit status 2."""
    def register(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except _known_errors() as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from None

        return app.command(name)(run)

    return register


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
    from covidxray.errors import UsageError

    try:
        df = generate_dataset(out, n_per_class=n_per_class, size=size, seed=seed, difficulty=difficulty,
                              confounder=None if confounder == "none" else confounder,
                              confounder_strength=confounder_strength, workers=workers)
    except ValueError as err:  # the generator's argument checks (size 64..1024, counts, strength)
        raise UsageError(f"phantoms: {err}") from None
    counts = df["label"].value_counts().sort_index()
    _echo(f"wrote {len(df)} phantoms to {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@command()
def download(
    out: Annotated[Path, typer.Argument(help="Destination folder.")],
    archive: Annotated[Path | None, typer.Option(help="A ZIP downloaded by hand (no download).")] = None,
) -> None:
    """Get the Kaggle COVID-19 Radiography Database (or unpack a ZIP of it you downloaded)."""
    from covidxray.data.datasets import download_kaggle

    download_kaggle(out, archive)
    _echo(f"dataset in {out}; next: covidxray index {out} -o {out}/manifest.csv")


@command()
def index(
    data: Annotated[Path, typer.Argument(help="Dataset folder or manifest CSV.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Manifest CSV to write.")] = Path("manifest.csv"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Find images and labels in any supported layout; quarantine unreadable files with a reason."""
    from covidxray.atomic import write_csv
    from covidxray.data.discover import INDEX_WRITER, discover, manifest_source, summarize
    from covidxray.data.tables import shown, write_table
    from covidxray.errors import UsageError

    cfg = _cfg(config, set_)
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
    _echo(summarize(found))
    _echo(f"manifest: {shown(output)} ({len(found.manifest)} images)")
    if len(found.quarantine):
        write_csv(found.quarantine, qpath)
        _echo(f"quarantine report: {shown(qpath)} ({len(found.quarantine)} files)")
    if found.manifest.empty:
        _echo("error: no usable images found")
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
    from covidxray.data.integrity import split_warnings
    from covidxray.data.split import (
        check_leakage,
        duplicate_stats,
        format_summary,
        make_splits,
        split_summary,
    )
    from covidxray.data.tables import read_table, shown, write_table
    from covidxray.errors import UsageError

    if output.is_dir():
        raise IsADirectoryError(f"-o {shown(output)} is a folder; give the splits CSV to write")
    if output.exists() and manifest.exists() and output.resolve() == manifest.resolve():
        raise UsageError(f"-o {shown(output)} would overwrite the input manifest; write the splits elsewhere")
    table = read_table(manifest, ("path", "label"), "manifest", nonempty=("path", "label"))
    for warning in table.warnings:
        _echo(f"warning: {warning}")
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
    _echo(format_summary(split_summary(df), report, duplicate_stats(df, near_dup_threshold)))
    for warning in split_warnings(df, val, test, DEFAULT_CLASSES):
        _echo(f"warning: {warning}")
    _echo(f"splits: {shown(output)}")
    if not report.ok:
        raise typer.Exit(1)


@command()
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: Annotated[Path | None, typer.Option(help="Dataset folder, manifest or splits CSV.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder to create.")] = None,
    weights: Annotated[str | None, typer.Option(help="imagenet | none | auto | PATH.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue an interrupted run folder.")] = None,
) -> None:
    """Train InceptionV3 (or another backbone) and write a run folder under models/."""
    from covidxray.training.train import train as train_fn

    overrides = list(set_ or []) + ([f"model.weights={weights}"] if weights else [])
    cfg = None if resume else _cfg(config, overrides)
    train_fn(cfg, dataset=data, out=out, resume=resume, log=_echo)


@command("evaluate")
def evaluate_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder (models/RUN).")],
    data: Annotated[Path | None, typer.Option(help="Other dataset: folder, manifest or splits CSV.")] = None,
    split: Annotated[str, typer.Option(help="Split of the run's (or --data's) splits file.")] = "test",
    name: Annotated[str | None, typer.Option(help="Result folder name under RUN/eval/.")] = None,
    n_boot: Annotated[int | None, typer.Option(help="Bootstrap resamples (default: config).")] = None,
) -> None:
    """Metrics with 95% CIs, calibrated predictions and figures in RUN/eval/NAME/."""
    import json

    from covidxray.evaluation.evaluate import evaluate, format_summary

    out = evaluate(run, data=data, split=split, name=name, n_boot=n_boot, log=_echo)
    _echo(format_summary(json.loads((out / "metrics.json").read_text())))
    _echo(f"results: {out}")


@command("predict")
def predict_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder (models/RUN).")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Predictions CSV.")] = Path("predictions.csv"),
    classes: Annotated[str | None, typer.Option(help="Expected class order, comma-separated.")] = None,
) -> None:
    """Calibrated probabilities and the COVID-19 decision for each image.

    Unreadable inputs are listed in OUTPUT's .errors.csv and named here; the exit status is 1
    when any input failed or no image was found.
    """
    from covidxray.evaluation.predict import predict

    expected = [c.strip() for c in classes.split(",")] if classes else None
    df = predict(run, inputs, output, classes=expected, log=_echo)
    errors = df.attrs["errors"]
    _echo(f"predicted {len(df)} image(s): {output}")
    if len(errors):
        _echo(f"{len(errors)} input(s) failed (listed in {df.attrs['errors_csv']}):")
        for path, reason in errors.itertuples(index=False):
            _echo(f"  {path}: {reason}")
    elif df.empty:
        _echo("no image files found in the inputs given")
    if len(errors) or df.empty:
        raise typer.Exit(1)


@command("calibrate")
def calibrate_cmd(run: Annotated[Path, typer.Argument(help="Run folder (models/RUN).")]) -> None:
    """Fit temperature scaling and the COVID-19 threshold on the run's validation split."""
    from covidxray.evaluation.predict import calibrate

    cal = calibrate(run, log=_echo)
    threshold = "none" if cal.threshold is None else f"{cal.threshold:.4f}"
    _echo(f"validation n={cal.n}: temperature {cal.temperature:.3f}, ECE {cal.ece_before:.3f} -> "
          f"{cal.ece_after:.3f}; {cal.positive_class} threshold {threshold} "
          f"(sensitivity >= {cal.target_sensitivity} on validation)")


@command("ood")
def ood_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder (models/RUN).")],
    method: Annotated[str | None, typer.Option(help="OOD method (default: the package's; see covidxray.evaluation.ood.METHODS).")]
    = None,
) -> None:
    """(Re)fit the out-of-distribution score on the run's training split, threshold on validation
    (95% of validation images pass); for runs trained before OOD scores existed."""
    from covidxray.evaluation.ood import DEFAULT_METHOD, fit_run

    fit_run(run, method=method or DEFAULT_METHOD, log=_echo)


@command("explain")
def explain_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder (models/RUN).")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")] = Path("figures/explain"),
    method: Annotated[list[str] | None, typer.Option(
        "--method", "-m", help=f"{' | '.join(METHOD_NAMES)} (repeatable; default gradcam, gradcam++, gradient, "
        "smoothgrad, integrated_gradients).")] = None,
    manifest: Annotated[list[Path] | None, typer.Option(help="Manifest CSV(s) with lung/lesion masks.")] = None,
    target: Annotated[str | None, typer.Option(help="Class to explain (default: the predicted one).")] = None,
    cmap: Annotated[str, typer.Option(help="Heat-map colour map (jet, inferno...).")] = "jet",
    alpha: Annotated[float, typer.Option(help="Heat-map opacity.")] = 0.4,
    batch_size: Annotated[int, typer.Option(help="Model inputs per pass.")] = 16,
    layer: Annotated[str | None, typer.Option(help="CAM layer (default: the run config's explain.cam_layer, "
                                              "else the backbone's last conv layer).")] = None,
) -> None:
    """Heat-map overlays per image and method, a gallery and explain.csv (with localisation scores
    where lung/lesion masks are known)."""
    from covidxray.explain.overlays import DEFAULT_METHODS, explain_files
    from covidxray.explain.report import cam_layer

    report = explain_files(run, inputs, output, methods=method or DEFAULT_METHODS, manifests=manifest or (),
                           target=target, cmap=cmap, alpha=alpha, batch_size=batch_size, log=_echo,
                           layer=cam_layer(run, layer))
    _echo(f"wrote {len(report.figures)} figure(s) and explain.csv to {output}")
    if report.skipped:
        _echo(f"{len(report.skipped)} input(s) skipped:")
        for reason in report.skipped:
            _echo(f"  {reason}")
        raise typer.Exit(1)


@command("interpret")
def interpret_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder (models/RUN).")],
    split: Annotated[str, typer.Option(help="Split of the run's splits.csv.")] = "test",
    method: Annotated[list[str] | None, typer.Option(
        "--method", "-m", help=f"Method to check: {' | '.join(METHOD_NAMES)} (repeatable; default: explain.methods).")] = None,
    layer: Annotated[str | None, typer.Option(help="CAM layer (default: the run config's explain.cam_layer, "
                                              "else the backbone's last conv layer).")] = None,
    n_per_class: Annotated[int | None, typer.Option(help="Images per class (default: explain.n_per_class).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder (default RUN/interpret/SPLIT).")] = None,
    set_: SetOpt = None,
) -> None:
    """Can the explanations be trusted? Localisation (energy in lungs / lesion, pointing game),
    faithfulness (deletion / insertion AUC), sanity (cascading randomisation) and cost per method,
    on the run's split images with lung and lesion masks; interpret.json and figures."""
    from covidxray.explain.report import format_table, report

    rep = report(run, split, method or None, n_per_class, layer, output, set_ or (), log=_echo)
    _echo(format_table(rep))
    _echo(f"results: {Path(rep['figures']['gallery']).parent}")


@command("robustness")
def robustness_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder (models/RUN).")],
    data: Annotated[Path | None, typer.Option(help="Other dataset: folder, manifest or splits CSV.")] = None,
    split: Annotated[str, typer.Option(help="Split of the run's (or --data's) splits file.")] = "test",
    tta: Annotated[bool, typer.Option(help="Also sweep with test-time augmentation and report its effect.")] = False,
    corruption: Annotated[list[str] | None, typer.Option(
        "--corruption", help="Corruption to run (repeatable; default all eight).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default RUN/robustness).")] = None,
) -> None:
    """Accuracy, macro-AUC and COVID-19 sensitivity under 8 corruptions x 5 severities (robustness.json, plots)."""
    from covidxray.robustness.sweep import format_summary, sweep

    report = sweep(run, data=data, split=split, corruptions=corruption, tta=tta, out=out, log=_echo)
    _echo(format_summary(report))
    _echo(f"results: {out or run / 'robustness'}")


@command("shortcut")
def shortcut_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default models/shortcut, or RUN/shortcut).")] = None,
    run: Annotated[Path | None, typer.Option(help="Probe this trained run on real data instead of phantoms.")] = None,
    data: Annotated[Path | None, typer.Option(help="With --run: another dataset to probe on.")] = None,
    split: Annotated[str, typer.Option(help="With --run: split to probe.")] = "test",
) -> None:
    """Shortcut probes. Default: train a marker-confounded and a clean model on phantoms (--config shortcut)
    and compare them on decorrelated phantoms. With --run: attribution outside the lungs and per-source
    metrics of a trained run."""
    if run is not None:
        from covidxray.robustness.probes import format_probe, probe_run

        _echo(format_probe(probe_run(run, data=data, split=split, out=out, log=_echo)))
        _echo(f"results: {out or run / 'shortcut'}")
        return
    from covidxray.robustness.shortcut import format_report, run_probe

    report = run_probe(_cfg(config, set_), out=out, log=_echo)
    _echo(format_report(report))
    _echo(f"results: {out or 'models/shortcut'}")


def main() -> None:
    """Entry point (the ``covidxray`` console script)."""
    app()


if __name__ == "__main__":
    main()
