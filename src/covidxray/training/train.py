"""Training stage: ``train(cfg)`` does everything; the CLI is a thin wrapper around it.

From scratch (``model.weights: none``, what runs offline): one stage, every layer trainable,
BatchNorm momentum lowered so its moving statistics keep up with the weights.
Transfer learning (ImageNet or a weights file): stage 1 trains the head on cached backbone
features (the frozen backbone runs once per image, not once per epoch), stage 2 unfreezes the
top blocks with BatchNorm kept in inference mode and a lower learning rate.
The test split is never read here.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from covidxray import atomic, paths, runinfo
from covidxray.config import Config, load_config
from covidxray.data import augment, cache
from covidxray.data import pipeline as data
from covidxray.training.mitigations import balance_sources, prepare_inputs, prior_masks, trainer


def _default_run_dir(cfg: Config) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return paths.MODELS / f"{stamp}-{cfg.model.backbone}-{cfg.model.image_size}px"


def _compile(model, lr: float, cfg: Config) -> None:
    import keras

    t = cfg.train
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=t.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.AUC(name="auc", multi_label=True, num_labels=len(cfg.classes))],
        jit_compile=t.jit_compile,
    )


def _fit(model, stage, run, cfg, train_ds, val_ds, epochs, lr_fn, class_weight, log, fit_model=None):
    from covidxray.training.callbacks import stage_callbacks
    from covidxray.training.checkpoints import (
        load_first_good,
        previous_path,
        repair_history,
        restore_backup,
    )

    best = run / f"best_{stage}.weights.h5"
    backup = run / "backup" / stage
    callbacks = []
    if (backup / "fit_done.json").is_file():  # killed after fit ended, before the stage was recorded
        log(f"stage '{stage}': training had finished; using its best weights")
    else:
        start = restore_backup(model, backup, stage, log)
        if start:
            log(f"stage '{stage}': resuming after epoch {start}")
        repair_history(run / f"history_{stage}.csv", start)
        best_valid = True
        if best.is_file() or previous_path(best).is_file():
            snapshot = model.get_weights()  # checking the best file must not change the resume point
            used = load_first_good(model, [best, previous_path(best)], log,
                                   none_left="the best epoch so far is lost; tracking it anew")
            model.set_weights(snapshot)
            if used != best:
                best_valid = False
                best.unlink(missing_ok=True)
                if used is not None:
                    os.replace(used, best)
        budget = f"{cfg.train.max_minutes:g} min" if cfg.train.schedule == "time" else f"{epochs} epochs"
        log(f"stage '{stage}': up to {epochs} epochs, lr {lr_fn(cfg.train.warmup_epochs):.2e}, cosine over {budget}")
        callbacks = stage_callbacks(run, stage, cfg, lr_fn, start, best_valid)
        (fit_model or model).fit(train_ds, validation_data=val_ds, epochs=epochs, class_weight=class_weight,
                  callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
    load_first_good(model, [best, previous_path(best)], log, none_left="keeping the last epoch's weights")
    if any(getattr(cb, "stopped", False) for cb in callbacks):
        log(f"stage '{stage}' stopped at the time limit (train.max_minutes)")


def _stage1_cached(model, run, cfg, images, labels, val_images, val_labels, class_weight, log):
    """Train the head on backbone features computed once (plus K augmented copies)."""
    import keras

    from covidxray.models import head_layers
    from covidxray.training.callbacks import cosine_schedule

    t, k = cfg.train, len(cfg.classes)
    bs = t.batch_size
    features = keras.Model(model.input, model.get_layer("gap").output)
    t0 = time.monotonic()
    aug = augment.make_augmenter(cfg.augment, cfg.seed)
    xs = [features.predict(data.make_dataset(images, None, k, bs), verbose=0)]
    for copy in range(t.stage1_aug_copies):
        ds = data.make_dataset(images, None, k, bs, augmenter=aug, seed=cfg.seed + copy)
        xs.append(features.predict(ds, verbose=0))
    x = np.concatenate(xs)
    y = keras.utils.to_categorical(np.tile(labels, len(xs)), k)
    xv = features.predict(data.make_dataset(val_images, None, k, bs), verbose=0)
    yv = keras.utils.to_categorical(val_labels, k)
    log(f"stage 1: backbone features of {len(x)} images in {time.monotonic() - t0:.1f} s")
    inp = keras.Input(x.shape[1:])
    out = inp
    for layer in head_layers(model):
        out = layer(out)
    head = keras.Model(inp, out)
    _compile(head, t.stage1_lr, cfg)
    cbs = [keras.callbacks.CSVLogger(str(run / "history_stage1.csv")),  # rewritten whole: a rerun redoes it
           keras.callbacks.EarlyStopping(monitor=t.monitor, patience=t.patience, restore_best_weights=True),
           keras.callbacks.LearningRateScheduler(cosine_schedule(t.stage1_lr, t.stage1_epochs))]
    head.fit(x, y, validation_data=(xv, yv), epochs=t.stage1_epochs, batch_size=bs,
             class_weight=class_weight, callbacks=cbs, verbose=0)


def _load_state(run: Path) -> dict:
    f = run / "state.json"
    return json.loads(f.read_text()) if f.is_file() else {"stages_done": [], "wall_s": 0.0}


def _clean_run_folder(run: Path) -> None:
    """Remove what killed writers left behind: temporary files in the run and its backup folders."""
    atomic.remove_stale_tmp(run)
    for sub in (run / "backup").glob("*"):
        atomic.remove_stale_tmp(sub)


def train(cfg: Config | None = None, dataset: str | Path | None = None, out: str | Path | None = None,
          resume: str | Path | None = None, log=print) -> Path:
    """Train a classifier and write a complete run folder (locked against a second trainer).

    Every file is written atomically; after a kill anywhere, ``resume`` continues from the last good
    checkpoint (damaged ones are reported in one line each and skipped).

    Args:
        cfg: Resolved config (ignored when resuming: the run's own config.yaml is used).
        dataset: Dataset folder, manifest CSV or splits CSV (default ``cfg.data.dataset``).
        out: Run folder to create (default ``models/<time>-<backbone>-<size>px``).
        resume: An interrupted run folder to continue where it stopped.
        log: Where progress messages go.

    Returns:
        The run folder.

    Raises:
        RunLockedError: Another process is training or resuming the same run folder.
    """
    if resume:
        run = Path(resume)
        if not (run / "config.yaml").is_file():
            raise runinfo.RunError(f"{run}: nothing to resume (no config.yaml: the run had not started); "
                                   "start it again without --resume")
    else:
        run = Path(out) if out else _default_run_dir(cfg)
        run.mkdir(parents=True, exist_ok=True)
    with runinfo.lock_run(run):
        _clean_run_folder(run)
        return _train(cfg, dataset, run, resume, log)


def _train(cfg: Config | None, dataset: str | Path | None, run: Path, resume: str | Path | None,
           log=print) -> Path:
    """The body of :func:`train`, run while holding the run folder's lock."""
    import keras

    from covidxray import models
    from covidxray.training.callbacks import (
        cosine_schedule,
        elapsed_s,
        get_strategy,
        merge_history,
        set_seed,
    )
    from covidxray.training.checkpoints import (
        export_atomic,
        inference_copy,
        load_first_good,
        remove_resume_points,
        save_model_atomic,
        save_weights_atomic,
    )

    finished = runinfo.finished_meta(run) if resume else None
    if finished is not None:
        remove_resume_points(run, finished.get("stages", ()))  # a kill may have come just before
        log(f"{run} is a finished run: nothing to resume")
        return run
    if resume:
        cfg = load_config([run / "config.yaml"])
        log(f"resuming {run}")
        if (run / "splits.csv").is_file():
            splits = data.read_splits(run / "splits.csv", cfg.classes)
        else:  # killed before the splits were written: make them again from the recorded dataset
            splits = data.prepare_splits(cfg, data.resolve_dataset(cfg, None, log), run, log)
    else:
        if (run / "state.json").exists() or (run / "config.yaml").exists():
            raise FileExistsError(f"{run} already holds a run; use --resume {run} or another --out")
        source_data = data.resolve_dataset(cfg, dataset, log)
        # the dataset recorded, so a resume can redo the splits when a kill came before them
        same = paths.from_config(cfg.data.dataset) == source_data
        cfg.dump(run / "config.yaml", dataset=None if same else source_data)
        splits = data.prepare_splits(cfg, source_data, run, log)
    state = _load_state(run)
    t, m = cfg.train, cfg.model
    set_seed(cfg.seed, t.deterministic)
    if t.mixed_precision != "none":
        keras.mixed_precision.set_global_policy(t.mixed_precision)
    strategy = get_strategy(t.strategy)
    replicas = strategy.num_replicas_in_sync
    batch = t.batch_size * replicas
    scale = replicas if t.scale_lr else 1
    classes = list(cfg.classes)
    parts = {s: splits[splits["split"] == s] for s in ("train", "val")}
    labels = {s: np.array([classes.index(c) for c in p["label"]], np.int32) for s, p in parts.items()}
    cache_dir = paths.from_config(cfg.data.cache_dir)
    model_inputs, mitigations = prepare_inputs(cfg, run, log)
    images = {s: model_inputs.cached(cache.build_cache(list(p["path"]), m.image_size, cache_dir, cfg.data.workers))
              for s, p in parts.items()}
    cw = data.class_weights(labels["train"], len(classes)) if t.class_weights else None
    aug = augment.make_augmenter(cfg.augment, cfg.seed)
    mitigations["acquisition"] = aug.acquisition.to_dict()  # the steps that are on (train only)
    groups, mitigations["balance_sources"] = balance_sources(cfg, parts["train"], labels["train"], log)
    lungs = prior_masks(cfg, parts["train"], model_inputs, m.image_size, log)
    mitigations["attribution_prior"] = {"lambda": t.attribution_prior, "masks": None if lungs is None else lungs[1]}
    train_ds = data.make_dataset(images["train"], labels["train"], len(classes), batch, True, aug, cfg.seed,
                                 groups=groups, masks=None if lungs is None else lungs[0])
    # under several replicas a last partial batch can leave a replica empty, which breaks BatchNorm;
    # the monitored validation metric then skips < batch images (evaluate always scores every image)
    val_ds = data.make_dataset(images["val"], labels["val"], len(classes), batch,
                               drop_remainder=replicas > 1 and len(images["val"]) >= batch)
    with strategy.scope():
        model, source = models.build_model(classes, m.backbone, m.image_size, m.weights, m.head_units,
                                           m.head_dropout, m.bn_momentum)
    meta = {
        "status": "running", "classes": classes, "positive_class": cfg.positive_class,
        "image_size": m.image_size, "backbone": m.backbone, "preprocessing": cache.PREPROCESSING,
        "input": "raw grayscale 0-255, shape (image_size, image_size, 1)", "weights_source": source,
        "last_conv_layer": models.last_conv_layer(model, m.backbone),
        "splits_sha256": runinfo.file_sha256(run / "splits.csv"), "seed": cfg.seed,
        "counts": splits.groupby(["split", "label"]).size().unstack(fill_value=0).to_dict(),
        "mitigations": mitigations, "class_weights": cw, "strategy": t.strategy, "replicas": replicas, "global_batch_size": batch,
        "git_sha": runinfo.git_sha(), "packages": runinfo.package_versions(),
        "started": datetime.now(UTC).isoformat(),
    }
    runinfo.write_json(run / "run.json", meta)
    pretrained = not source.startswith("none")
    stages = ["stage1", "stage2"] if pretrained else ["scratch"]
    t0 = time.monotonic()
    for stage in stages:
        if stage in state["stages_done"]:
            if load_first_good(model, [run / f"{stage}.weights.h5", run / f"best_{stage}.weights.h5"], log,
                               none_left=f"training stage '{stage}' again"):
                continue
            state["stages_done"].remove(stage)
        with strategy.scope():
            if stage == "stage1":
                models.set_trainable(model, m.backbone, 0)
                _stage1_cached(model, run, cfg, images["train"], labels["train"], images["val"],
                               labels["val"], cw, log)
            else:
                unfreeze = t.unfreeze_blocks if stage == "stage2" else -1
                models.set_trainable(model, m.backbone, unfreeze)
                epochs = t.stage2_epochs if stage == "stage2" else t.epochs
                lr = (t.stage2_lr if stage == "stage2" else t.lr) * scale
                fit_model = trainer(model, t.attribution_prior if lungs is not None else 0.0)
                _compile(fit_model, lr, cfg)  # recompile after changing `trainable`
                _fit(model, stage, run, cfg, train_ds, val_ds, epochs,
                     cosine_schedule(lr, epochs, t.warmup_epochs), cw, log, fit_model)
        save_weights_atomic(model, run / f"{stage}.weights.h5")
        state["stages_done"].append(stage)
        # a fitted stage's time includes the part before an interruption (elapsed_<stage>.txt)
        state.setdefault("stage_s", {})[stage] = round(elapsed_s(run, stage) or time.monotonic() - t0, 1)
        state["wall_s"] = sum(state["stage_s"].values())
        t0 = time.monotonic()
        runinfo.write_json(run / "state.json", state)
        shutil.rmtree(run / "backup" / stage, ignore_errors=True)  # recorded as done: its resume points go
    hist = merge_history(run, stages)

    # out-of-distribution score (covidxray.evaluation.ood): fitted on the training split, threshold on validation
    from covidxray.evaluation import ood

    detector = ood.fit(model, images["train"], labels["train"], images["val"], t.batch_size)
    detector.save(run)
    meta["ood"] = detector.summary()
    log(f"OOD score ({detector.method}): threshold {detector.threshold:.3f} passes "
        f"{detector.val_pass_rate:.1%} of validation images")

    bare = inference_copy(model)  # model.keras and the export hold no optimizer state
    save_model_atomic(bare, run / "model.keras")
    export_atomic(bare, run / "saved_model")
    from covidxray.training.hparams import write_hparams  # tensorboard --logdir models compares runs

    last = hist.iloc[-1] if len(hist) else {}
    write_hparams(run, cfg.to_dict(), {k: float(last[k]) for k in ("val_accuracy", "val_loss", "val_auc", "accuracy",
                                                                    "loss") if k in last}, int(len(hist)))
    meta.update(status="finished", wall_s=round(state["wall_s"], 1), stage_s=state["stage_s"], stages=stages,
                epochs_run=int(len(hist)), finished=datetime.now(UTC).isoformat())
    runinfo.write_json(run / "run.json", meta)
    remove_resume_points(run, stages)  # after "finished": a kill before it leaves a resumable run
    log(f"run folder: {run}")
    return run
