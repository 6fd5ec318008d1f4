"""Shared test helpers: tiny models with known behaviour, and run folders (the session ``smoke_run``
of conftest.py) to copy and break.

A smoke run's ``model.keras`` is about 250 MB, so :func:`copy_run` links it and copies only the
small metadata files: each test gets its own folder to change (or break) without retraining.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

#: Small files of a run folder that evaluate/predict read.
RUN_FILES = ("run.json", "config.yaml", "splits.csv", "history.csv", "ood.json", "ood_stats.npz")


def copy_run(src: Path, dst: Path) -> Path:
    """A private copy of a run folder: metadata copied, ``model.keras`` symlinked.

    Args:
        src: A finished run folder.
        dst: Folder to create.

    Returns:
        ``dst``.
    """
    dst.mkdir(parents=True)
    for name in RUN_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    os.symlink((src / "model.keras").resolve(), dst / "model.keras")
    return dst


def tiny_model_run(src: Path, dst: Path, size: int = 32, seed: int = 1) -> Path:
    """A copy of run ``src`` (same splits and config) whose model is :func:`tiny_cnn` at ``size`` px.

    A second, different model on the same images in seconds (for comparisons); it has no OOD score
    and no calibration yet (fitted on validation when first used).
    """
    copy_run(src, dst)
    for name in ("model.keras", "ood.json", "ood_stats.npz"):
        (dst / name).unlink(missing_ok=True)
    tiny_cnn(size, seed).save(dst / "model.keras")
    meta = json.loads((dst / "run.json").read_text())
    meta.pop("ood", None)
    (dst / "run.json").write_text(json.dumps({**meta, "image_size": size, "backbone": "tiny"}))
    return dst


def edit_run_json(run: Path, **changes) -> dict:
    """Overwrite keys of ``run/run.json`` and return the new metadata."""
    meta = json.loads((run / "run.json").read_text())
    meta.update(changes)
    (run / "run.json").write_text(json.dumps(meta))
    return meta


def write_bad_files(folder: Path, good_png: Path) -> dict[str, Path]:
    """Write one zero-byte, one truncated and one garbage image file into ``folder``.

    Args:
        folder: Where to write (created).
        good_png: A valid PNG whose first bytes make the truncated file.

    Returns:
        Kind (``zero``, ``truncated``, ``garbage``) -> path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = {"zero": folder / "empty.png", "truncated": folder / "truncated.png", "garbage": folder / "garbage.jpg"}
    files["zero"].write_bytes(b"")
    files["truncated"].write_bytes(good_png.read_bytes()[:120])
    files["garbage"].write_bytes(bytes(range(256)) * 3)
    return files


# ---- tiny models (Keras imported when one is built) --------------------------------------------

S = 32
CLASSES = ["COVID-19", "Normal", "Viral Pneumonia"]


def tiny_cnn(size: int = S, seed: int = 0):
    """Our model's layout in miniature: raw 0-255 gray in, rescaling, convs, gap, softmax Dense."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 1), name="image")
    x = keras.layers.Rescaling(1 / 127.5, -1.0, name="preprocess_input")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(len(CLASSES), activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="tiny")


def square_detector():
    """Hand-set weights: class 0 is 'a bright square is present' (3x3 mean of x/255 above 0.6)."""
    import keras

    inp = keras.Input((S, S, 1), name="image")
    x = keras.layers.Rescaling(1 / 255, name="preprocess_input")(inp)
    x = keras.layers.Conv2D(1, 3, padding="same", activation="relu", name="detect")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(2, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out)
    model.get_layer("detect").set_weights([np.full((3, 3, 1, 1), 1 / 9, np.float32), np.array([-0.6], np.float32)])
    model.get_layer("probs").set_weights([np.array([[40.0, -40.0]], np.float32), np.zeros(2, np.float32)])
    return model


def square_images(n: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dark noisy images, each with an 8x8 bright square somewhere; returns images and square masks."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 100, (n, S, S)).astype(np.uint8)
    masks = np.zeros((n, S, S), bool)
    for i in range(n):
        r, c = rng.integers(2, S - 10, 2)
        imgs[i, r:r + 8, c:c + 8] = 230
        masks[i, r:r + 8, c:c + 8] = True
    return imgs, masks


def tiny_phantom_run(folder: Path, phantom_dir: Path, size: int = 64, seed: int = 0) -> Path:
    """A complete small run on phantoms in seconds: an untrained :func:`tiny_cnn`, run.json, the smoke config,
    splits.csv (per class 3/5 train, 1/5 val, 1/5 test, with image sizes and pixel SHA-1 as ``index`` writes
    them), calibration.json fitted on val and an OOD score (Mahalanobis on ``gap``) fitted on train.

    Args:
        folder: Run folder to create.
        phantom_dir: A phantom dataset (``manifest.csv`` with lung/lesion masks).
        size: Model input size.
        seed: Weight seed.

    Returns:
        ``folder``.
    """
    import pandas as pd

    from covidxray.config import load_config
    from covidxray.data.cache import PREPROCESSING
    from covidxray.data.imageio import image_hash, read_image
    from covidxray.evaluation import ood
    from covidxray.evaluation.predict import calibrate

    folder.mkdir(parents=True)
    tiny_cnn(size, seed).save(folder / "model.keras")
    (folder / "run.json").write_text(json.dumps({"classes": CLASSES, "image_size": size, "preprocessing": PREPROCESSING,
                                                 "last_conv_layer": "conv2", "backbone": "tiny", "seed": seed}))
    df = pd.read_csv(phantom_dir / "manifest.csv", keep_default_na=False)
    for col in ("path", "lung_mask", "lesion_mask"):
        df[col] = [str(phantom_dir / p) if p else "" for p in df[col]]
    images = [read_image(p) for p in df["path"]]
    df["height"], df["width"] = [im.shape[0] for im in images], [im.shape[1] for im in images]
    df["sha1"] = [image_hash(im)[0] for im in images]
    rank = df.groupby("label").cumcount() % 5
    df["split"] = np.select([rank < 3, rank == 3], ["train", "val"], "test")
    df.to_csv(folder / "splits.csv", index=False)
    load_config(["smoke"], ["explain.cam_layer=conv2"]).dump(folder / "config.yaml")
    calibrate(folder, log=lambda *_: None)
    ood.fit_run(folder, method="mahalanobis", log=lambda *_: None)
    return folder
