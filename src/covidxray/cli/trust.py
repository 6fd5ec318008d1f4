"""Trust commands: ``explain``, ``interpret`` (also on annotated data), ``robustness``, ``shortcut``, ``card``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from covidxray import paths
from covidxray.cli.base import ConfigOpt, SetOpt, command, echo, load_cfg
from covidxray.errors import UsageError
from covidxray.explain.registry import NAMES as METHOD_NAMES  # light: no TensorFlow


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
                           target=target, cmap=cmap, alpha=alpha, batch_size=batch_size, log=echo,
                           layer=cam_layer(run, layer))
    echo(f"wrote {len(report.figures)} figure(s) and explain.csv to {output}")
    if report.skipped:
        echo(f"{len(report.skipped)} input(s) skipped:")
        for reason in report.skipped:
            echo(f"  {reason}")
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
    data: Annotated[Path | None, typer.Option(
        help="Annotated dataset (manifest with lung_mask / lesion_mask / device_mask columns) to check the "
             "maps against instead of the run's split; rows with in_dev=1 are left out.")] = None,
    target: Annotated[str | None, typer.Option(help="With --data: class to explain (default: the predicted one).")] = None,
    boxes: Annotated[Path | None, typer.Option(
        help="With --data: boxes (CSV path,label,x,y,w,h or COCO JSON) that become lesion masks.")] = None,
) -> None:
    """Can the explanations be trusted? Localisation (energy in lungs / lesion, pointing game),
    faithfulness (deletion / insertion AUC), sanity (cascading randomisation) and cost per method,
    on the run's split images with lung and lesion masks; interpret.json and figures. With --data:
    energy in the lungs, on lesions and on devices and the pointing game on real annotated images."""
    from covidxray.explain.report import format_table, report

    if data is not None:
        from covidxray.explain.annotated import interpret_dataset
        from covidxray.runinfo import run_config

        cfg = run_config(run, set_ or ())
        out = output or run / "interpret" / f"data-{paths.resolve(data).name}"
        rep = interpret_dataset(run, paths.resolve(data), method or list(cfg.explain.methods), out, target,
                                boxes, n_boot=int(cfg.evaluate.n_boot), log=echo)
        echo(f"results: {out}")
        return
    if target or boxes:
        raise UsageError("--target and --boxes need --data (an annotated dataset)")
    rep = report(run, split, method or None, n_per_class, layer, output, set_ or (), log=echo)
    echo(format_table(rep))
    echo(f"results: {Path(rep['figures']['gallery']).parent}")


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

    report = sweep(run, data=data, split=split, corruptions=corruption, tta=tta, out=out, log=echo)
    echo(format_summary(report))
    echo(f"results: {out or run / 'robustness'}")


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

        echo(format_probe(probe_run(run, data=data, split=split, out=out, log=echo)))
        echo(f"results: {out or run / 'shortcut'}")
        return
    from covidxray.robustness.shortcut import format_report, run_probe

    report = run_probe(load_cfg(config, set_), out=out, log=echo)
    echo(format_report(report))
    echo(f"results: {out or 'models/shortcut'}")


@command("card")
def card_cmd(run: Annotated[Path, typer.Argument(help="Run folder (models/RUN).")]) -> None:
    """Write RUN/MODEL_CARD.md from the run folder: model details, intended use, data sources and their
    confounds, metrics with 95% CIs, calibration, operating point and every check's results."""
    from covidxray.report.card import write_card

    echo(f"model card: {write_card(run)}")
