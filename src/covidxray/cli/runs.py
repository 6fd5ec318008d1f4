"""Run commands: ``train``, ``evaluate`` (with the external report), ``predict``, ``calibrate``, ``ood``, ``compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from covidxray import paths
from covidxray.cli.base import ConfigOpt, SetOpt, command, echo, load_cfg
from covidxray.errors import UsageError


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
    cfg = None if resume else load_cfg(config, overrides)
    train_fn(cfg, dataset=data, out=out, resume=resume, log=echo)


@command("evaluate")
def evaluate_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder (models/RUN).")],
    data: Annotated[Path | None, typer.Option(help="Other dataset: folder, manifest or splits CSV.")] = None,
    split: Annotated[str, typer.Option(help="Split of the run's (or --data's) splits file.")] = "test",
    name: Annotated[str | None, typer.Option(help="Result folder name under RUN/eval/.")] = None,
    n_boot: Annotated[int | None, typer.Option(help="Bootstrap resamples (default: config).")] = None,
    by: Annotated[list[str] | None, typer.Option(
        help="With --data: manifest column to break the external report down by (repeatable; default: "
             "source, and view / sex / age band when present).")] = None,
) -> None:
    """Metrics with 95% CIs, calibrated predictions and figures in RUN/eval/NAME/; with --data (a dataset
    that is not a splits file) also the external-validation report (external.json) beside them."""
    import json

    from covidxray.data.pipeline import is_splits_file
    from covidxray.evaluation.evaluate import evaluate, format_summary
    from covidxray.evaluation.external_report import external_report

    out = evaluate(run, data=data, split=split, name=name, n_boot=n_boot, log=echo)
    echo(format_summary(json.loads((out / "metrics.json").read_text())))
    if data is not None and not is_splits_file(paths.resolve(data)):
        external_report(run, data, out=out, by=by, n_boot=n_boot, log=echo)
    elif by:
        raise UsageError("--by needs --data: the external report compares the run's test split with a dataset")
    echo(f"results: {out}")


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
    df = predict(run, inputs, output, classes=expected, log=echo)
    errors = df.attrs["errors"]
    echo(f"predicted {len(df)} image(s): {output}")
    if len(errors):
        echo(f"{len(errors)} input(s) failed (listed in {df.attrs['errors_csv']}):")
        for path, reason in errors.itertuples(index=False):
            echo(f"  {path}: {reason}")
    elif df.empty:
        echo("no image files found in the inputs given")
    if len(errors) or df.empty:
        raise typer.Exit(1)


@command("calibrate")
def calibrate_cmd(run: Annotated[Path, typer.Argument(help="Run folder (models/RUN).")]) -> None:
    """Fit temperature scaling and the COVID-19 threshold on the run's validation split."""
    from covidxray.evaluation.predict import calibrate

    cal = calibrate(run, log=echo)
    threshold = "none" if cal.threshold is None else f"{cal.threshold:.4f}"
    echo(f"validation n={cal.n}: temperature {cal.temperature:.3f}, ECE {cal.ece_before:.3f} -> "
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

    fit_run(run, method=method or DEFAULT_METHOD, log=echo)


@command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run folders; the first is the reference.")],
    data: Annotated[Path | None, typer.Option(
        help="Dataset (folder, manifest or splits CSV) all runs score; default: the first run's test split "
             "(the runs' splits must then be the same).")] = None,
    split: Annotated[str, typer.Option(help="Split of the runs' (or --data's) splits file.")] = "test",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder (default RUN_A/compare/SET).")] = None,
    n_boot: Annotated[int | None, typer.Option(help="Bootstrap resamples (default: the first run's config).")] = None,
) -> None:
    """Score every run on the same images: each metric with its 95% CI, the paired difference to the first
    run with its paired-bootstrap CI, DeLong's test of the COVID-19 AUCs and McNemar's test of the
    accuracies (comparison.csv / .md / .json / .png)."""
    from covidxray.evaluation.compare import compare_runs

    report = compare_runs(runs, data=data, split=split, out=output, n_boot=n_boot, log=echo)
    echo(Path(report["files"]["markdown"]).read_text())
    echo(f"results: {Path(report['files']['csv']).parent}")
