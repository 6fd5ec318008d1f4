"""Lung-segmentation commands: ``lungs train``, ``lungs predict``, ``lungs evaluate``, ``lungs figure``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from covidxray.cli.base import ConfigOpt, SetOpt, app, command, echo, load_cfg
from covidxray.errors import DataError

lungs_app = typer.Typer(no_args_is_help=True, help="Lung-field segmentation (U-Net): train, predict, evaluate.")
app.add_typer(lungs_app, name="lungs")

WeightsOpt = Annotated[Path | None, typer.Option(help="Segmenter .keras file (default: models/lungs/lungs.keras).")]


@command("train", target=lungs_app)
def train_cmd(
    data: Annotated[list[Path] | None, typer.Option(help="Dataset(s) with lung masks (default: "
                                                          "../shared/data/cxr-annotated when present).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for lungs.keras + lungs.json.")] = Path("models/lungs"),
    epochs: Annotated[int, typer.Option(help="Epochs (fresh augmented samples each).")] = 40,
    steps: Annotated[int, typer.Option(help="Steps per epoch.")] = 30,
    size: Annotated[int, typer.Option(help="Working size in pixels (128 or 256).")] = 128,
    base_filters: Annotated[int, typer.Option(help="U-Net first-level filters.")] = 8,
    phantoms: Annotated[int, typer.Option(help="Training phantoms drawn in memory.")] = 600,
    seed: Annotated[int, typer.Option(help="Seed of the split, phantoms, augmentation, weights.")] = 42,
) -> None:
    """Train the lung segmenter on phantoms + real masks; held-out patients scored into lungs.json."""
    from covidxray import paths
    from covidxray.lungs.train import LungsTrainConfig, shared_annotated, train_segmenter

    if data is None:
        found = shared_annotated()
        data = [found] if found else []
        echo(f"real masks: {found}" if found else "real masks: none found (phantoms only)")
    cfg = LungsTrainConfig(size=size, epochs=epochs, steps=steps, base_filters=base_filters, n_phantoms=phantoms,
                           seed=seed)
    cmd = "covidxray lungs " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else "covidxray lungs train"
    rec = train_segmenter(paths.resolve(out), [paths.resolve(d) for d in data], cfg, command=cmd, log=echo)
    for key in ("heldout_real", "heldout_phantoms"):
        if key in rec:
            echo(f"{key}: Dice {rec[key]['dice_mean']:.4f} (n={rec[key]['n']}), HD95 {rec[key]['hd95_mean']:.2f} px")


@command("predict", target=lungs_app)
def predict_cmd(
    data: Annotated[Path, typer.Argument(help="Dataset folder or manifest CSV (any layout `index` reads).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for masks + manifest.csv.")],
    weights: WeightsOpt = None,
    batch_size: Annotated[int, typer.Option(help="Images per model call.")] = 32,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write one PNG lung mask per image, DIR/manifest.csv pairing them, and DIR/lungs.json."""
    from covidxray.lungs.predict import predict_dataset
    from covidxray.lungs.segment import load_segmenter

    cfg = load_cfg(config, set_)
    seg = load_segmenter(weights)
    rec = predict_dataset(seg, data, output, cfg.classes, batch_size=batch_size, log=echo)
    echo(f"wrote {rec['n_masks']} lung masks to {output} ({rec['n_failed']} unreadable); "
         f"next: covidxray index {output}")


@command("evaluate", target=lungs_app)
def evaluate_cmd(
    data: Annotated[Path, typer.Argument(help="Dataset with lung masks (manifest column lung_mask).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Report folder (default: "
                                                 "models/lungs-eval/<data name>).")] = None,
    weights: WeightsOpt = None,
    heldout: Annotated[bool, typer.Option(help="Only the patients lungs.json lists as held out.")] = False,
) -> None:
    """Dice and HD95 per image against the dataset's lung masks (CSV + JSON summary)."""
    from covidxray import paths
    from covidxray.lungs.evaluate import evaluate_dataset, write_report
    from covidxray.lungs.segment import load_segmenter

    seg = load_segmenter(weights)
    out = output or paths.MODELS / "lungs-eval" / (Path(data).name + ("-heldout" if heldout else ""))
    df = evaluate_dataset(seg, data, heldout=heldout)
    s = write_report(df, out, seg, data, heldout)
    echo(f"{s['n']} images: Dice mean {s['dice_mean']:.4f} (median {s['dice_median']:.4f}, min "
         f"{s['dice_min']:.4f}); HD95 mean {s['hd95_mean']:.2f} px (median {s['hd95_median']:.2f}); "
         f"report in {out}")


@command("figure", target=lungs_app)
def figure_cmd(
    data: Annotated[list[Path], typer.Argument(help="Datasets (folders or manifests); grouped by source.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG to write.")] = Path("figures/lungs_contours.png"),
    per_source: Annotated[int, typer.Option(help="Films per source.")] = 3,
    weights: WeightsOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the film choice.")] = 0,
) -> None:
    """Predicted lung contours on a few films of each source of each dataset."""
    from covidxray.lungs.figure import contour_figure, pick_films
    from covidxray.lungs.segment import load_segmenter

    seg = load_segmenter(weights)
    films = pick_films(data, per_source, seed)
    if not films:
        raise DataError("no readable films in the given datasets")
    contour_figure(seg, films, save_to=output)
    echo(f"figure: {output} ({len(films)} films)")
