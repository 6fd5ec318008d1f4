"""Train the lung segmenter on phantom and real lung masks; write ``lungs.keras`` and ``lungs.json``.

Each epoch draws a fresh set of augmented samples (:func:`covidxray.lungs.augment.augment_pair`):
a share ``real_fraction`` from the real masked films of the training patients, the rest from
in-memory phantoms. The real films' patients are split first (:func:`covidxray.lungs.data.heldout_patients`,
seeded): the held-out patients are never trained on, and no epoch or setting is chosen on them; the
final weights are scored once on them and on fresh phantoms, and the scores go into ``lungs.json``.
Adam (Kingma & Ba 2015) with cosine decay (Loshchilov & Hutter 2017) on BCE + soft Dice.

Kingma DP, Ba J. Adam: a method for stochastic optimization. ICLR 2015.
Loshchilov I, Hutter F. SGDR: stochastic gradient descent with warm restarts. ICLR 2017.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from covidxray import atomic, paths
from covidxray.lungs.augment import augment_pair, identity_pair
from covidxray.lungs.data import heldout_patients, load_pairs, masked_manifest, phantom_set
from covidxray.lungs.evaluate import predict_each, score_masks, summarize

PHANTOM_SEED_OFFSET = 1000  # held-out phantoms come from stream seed + 1000


def shared_annotated() -> Path | None:
    """``../shared/data/cxr-annotated`` beside the checkout, when it holds a manifest."""
    for cand in (paths.ROOT.parent / "shared" / "data" / "cxr-annotated", paths.ROOT / "shared" / "data" / "cxr-annotated"):
        if (cand / "manifest.csv").is_file():
            return cand.resolve()
    return None


@dataclass
class LungsTrainConfig:
    """Settings of one training run (all recorded in ``lungs.json``).

    Attributes:
        size: Working side in pixels (128 or 256).
        epochs: Epochs; each draws ``steps * batch_size`` fresh augmented samples.
        steps: Optimizer steps per epoch.
        batch_size: Samples per step.
        base_filters: U-Net first-level filters.
        depth: U-Net down-sampling steps.
        lr: Peak learning rate (cosine decay to 5% of it).
        real_fraction: Share of each epoch's samples drawn from real films (when there are any).
        heldout_fraction: Share of real patients held out.
        n_phantoms: Training phantoms (drawn at 256 px).
        n_heldout_phantoms: Held-out phantoms scored at the end.
        seed: Seed of the split, phantoms, augmentation and weights.
    """

    size: int = 128
    epochs: int = 40
    steps: int = 30
    batch_size: int = 16
    base_filters: int = 8
    depth: int = 4
    lr: float = 2e-3
    real_fraction: float = 0.6
    heldout_fraction: float = 0.2
    n_phantoms: int = 600
    n_heldout_phantoms: int = 60
    seed: int = 42
    extra: dict = field(default_factory=dict)


def _sample(rng, sets, weights, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.zeros((n, size, size, 1), np.uint8), np.zeros((n, size, size, 1), np.float32)
    choice = rng.choice(len(sets), size=n, p=weights)
    for i, s in enumerate(choice):
        images, masks = sets[s]
        j = int(rng.integers(0, len(images)))
        img, msk = augment_pair(rng, images[j], masks[j], size) if rng.random() < 0.9 else \
            identity_pair(images[j], masks[j], size)
        x[i, ..., 0], y[i, ..., 0] = img, msk
    return x, y


def fit(model, sets: Sequence[tuple], weights: Sequence[float], cfg: LungsTrainConfig,
        log: Callable[[str], None] = print) -> list[dict]:
    """Train a compiled-or-not U-Net in place on augmented samples of ``sets``.

    Args:
        model: The Keras model (compiled here with Adam, cosine decay and BCE + Dice).
        sets: ``(images, masks)`` pairs of sequences, e.g. real films and phantoms.
        weights: Sampling probability of each set (normalised here).
        cfg: The run settings.
        log: One line per epoch.

    Returns:
        One ``{"epoch", "loss", "seconds"}`` dict per epoch.
    """
    import keras

    from covidxray.lungs.unet import dice_bce_loss

    keras.utils.set_random_seed(cfg.seed)
    total = max(1, cfg.epochs * cfg.steps)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=total, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=dice_bce_loss)
    rng = np.random.default_rng(cfg.seed)
    w = np.asarray(weights, float) / np.sum(weights)
    history = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        x, y = _sample(rng, sets, w, cfg.steps * cfg.batch_size, cfg.size)
        h = model.fit(x.astype(np.float32), y, batch_size=cfg.batch_size, epochs=1, verbose=0, shuffle=False)
        loss = float(h.history["loss"][-1])
        history.append({"epoch": epoch + 1, "loss": round(loss, 5), "seconds": round(time.perf_counter() - t0, 1)})
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {loss:.4f} ({history[-1]['seconds']} s)")
    return history


def _real_sets(data: Sequence[str | Path], cfg: LungsTrainConfig) -> tuple[pd.DataFrame, list[str]]:
    frames = [masked_manifest(d).assign(dataset=str(d)) for d in data]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["path", "lung_mask", "patient_id", "source", "label", "dataset"])
    return df, heldout_patients(df["patient_id"], cfg.heldout_fraction, cfg.seed) if len(df) else []


def train_segmenter(out: str | Path, data: Sequence[str | Path], cfg: LungsTrainConfig, command: str = "",
                    log: Callable[[str], None] = print) -> dict:
    """Train, save and score a lung segmenter.

    Args:
        out: Folder for ``lungs.keras`` and ``lungs.json`` (created).
        data: Datasets with lung masks (manifest column ``lung_mask``); phantoms are always added.
        cfg: The run settings.
        command: The command line, recorded.
        log: Progress lines.

    Returns:
        The record written to ``lungs.json``.
    """
    from covidxray.lungs.segment import DEFAULT_WEIGHTS, load_segmenter, metrics_path
    from covidxray.lungs.unet import build_unet

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    real, held = _real_sets(data, cfg)
    is_held = real["patient_id"].isin(held)
    train_imgs, train_masks = load_pairs(real[~is_held])
    ph_imgs, ph_masks = phantom_set(cfg.n_phantoms, 256, cfg.seed)
    sets, weights = [(ph_imgs, ph_masks)], [1.0]
    if train_imgs:
        sets, weights = [(train_imgs, train_masks), *sets], [cfg.real_fraction, 1 - cfg.real_fraction]
    log(f"training on {len(train_imgs)} real films ({real[~is_held]['patient_id'].nunique()} patients) "
        f"and {cfg.n_phantoms} phantoms; {int(is_held.sum())} films of {len(held)} patients held out")
    model = build_unet(cfg.size, cfg.base_filters, cfg.depth)
    history = fit(model, sets, weights, cfg, log)
    weights_path = out / DEFAULT_WEIGHTS.name
    with atomic.atomic_path(weights_path) as tmp:
        clean = build_unet(cfg.size, cfg.base_filters, cfg.depth)  # no optimizer state: a smaller file
        clean.set_weights(model.get_weights())
        clean.save(tmp)
    seg = load_segmenter(weights_path)
    record = {"weights": weights_path.name, "sha256": seg.sha256, "size_bytes": seg.size,
              "architecture": {"kind": "unet", "input_size": cfg.size, "base_filters": cfg.base_filters,
                               "depth": cfg.depth, "params": int(model.count_params())},
              "config": {k: v for k, v in asdict(cfg).items() if k != "extra"} | cfg.extra,
              "seed": cfg.seed, "command": command, "history": history,
              "training_data": {"real": sorted({str(d) for d in data}), "real_films": len(train_imgs),
                                "real_patients": int(real[~is_held]["patient_id"].nunique()),
                                "phantoms": cfg.n_phantoms, "phantom_seed": cfg.seed},
              "heldout_patients": held, "train_patients": sorted(set(real[~is_held]["patient_id"])), "heldout_phantom_seed": cfg.seed + PHANTOM_SEED_OFFSET}
    if held:
        h_imgs, h_masks = load_pairs(real[is_held])
        scores = score_masks(predict_each(seg, h_imgs), h_masks)
        record["heldout_real"] = summarize(scores) | {"patients": len(held)}
        record["heldout_real_images"] = [{"path": p, "dice": round(d, 4), "hd95": round(h, 2)} for p, d, h in
                                         zip(real[is_held]["path"], scores["dice"], scores["hd95"], strict=True)]
    p_imgs, p_masks = phantom_set(cfg.n_heldout_phantoms, 256, cfg.seed + PHANTOM_SEED_OFFSET)
    record["heldout_phantoms"] = summarize(score_masks(seg.predict(p_imgs), p_masks))
    record["train_minutes"] = round((time.perf_counter() - t0) / 60, 2)
    record["machine"] = {"python": platform.python_version(), "processor": platform.machine()}
    atomic.write_json(metrics_path(weights_path), record)
    return record
