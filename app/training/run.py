"""One training run, end to end: the one path that `app/train.py` and the KerasTuner search share.

dataset folder -> run folder check (fingerprint, lock) -> model -> features (frozen backbone)
-> trainer with callbacks -> best model by validation mAP -> validation and test mAP.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from app.config import RunConfig
from app.data.dataset import DatasetInfo
from app.data.pipeline import load_eval_arrays, make_dataset
from app.data.preprocess import TagLookup
from app.evaluation.metrics import mean_average_precision, tune_class_thresholds
from app.model.classifier import attach_backbone, build_backbone, build_head, resolve_image_weights
from app.training.callbacks import BestModel, Checkpoint, History, Progress, TimeBudget, read_history
from app.training.features import FEATURE_DIM, FeatureStore
from app.training.optimizer import LazyAdam
from app.training.rundir import COMPLETE, NEW, Fingerprint, RunDir, RunError
from app.training.strategy import broadcast_from_chief, get_strategy, is_chief, worker_shards
from app.training.trainer import Trainer, masked_bce, steps_for

log = logging.getLogger("app.training")
STATES = {NEW: 0, "resume": 1, COMPLETE: 2}
REFUSED = 9


@dataclass
class RunResult:
    """What `train` did: `trained`, `complete` (finished earlier: nothing done) or `worker`
    (a non-chief multi-worker process: the chief reports)."""

    run_dir: Path
    status: str
    history: list
    metrics: dict
    seconds: float


@dataclass
class RunOptions:
    """How to execute a run, beyond its config.

    Args:
        progress: show progress bars (on a terminal).
        overwrite: replace a run folder that holds another run.
        tags: a ready tag lookup (the tuner caches one per limit and threshold).
        head: a ready head model (the tuner's `build()`); built from the config otherwise.
        cache_dir: where frozen-backbone features are cached (default: the run's `cache/`).
        keep_model: save `model.keras` and keep `backup/` (tuning trials only need the score).
    """

    progress: bool = True
    overwrite: bool = False
    tags: Optional[TagLookup] = None
    head: Optional[keras.Model] = None
    cache_dir: Optional[Path] = None
    keep_model: bool = True


def train(data_dir: str | Path, run_dir: str | Path, config: RunConfig, options: RunOptions = RunOptions(),
          strategy: Optional[tf.distribute.Strategy] = None) -> RunResult:
    """Trains one model into a run folder, or resumes it, or reports it finished.

    Args:
        data_dir: a prepared dataset folder.
        run_dir: the run folder (`saved_models/NAME`); see `app.training.rundir`.
        config: data, model and training configuration.
        options: execution options.
        strategy: an already created strategy (else made from `config.train`).

    Returns:
        The run's status, history and metrics.

    Raises:
        RunError, DatasetError, ValueError, FileNotFoundError: with a message for the user.
    """
    started = time.time()
    t, m = config.train, config.model
    strategy = strategy or get_strategy(t.strategy, t.cpu_devices, t.worker_timeout)
    chief = is_chief(strategy)
    info = DatasetInfo.load(data_dir)
    _check_splits(info)
    if m.uses_image:
        resolve_image_weights(m.image_weights)  # fails before anything is written
    run = RunDir(run_dir)
    fingerprint = Fingerprint.of(info, config)
    with run.lock() if chief else contextlib.nullcontext():
        state = _agree_on_state(strategy, run, fingerprint, config, options.overwrite)
        if state == COMPLETE:
            history = read_history(run.history_path)
            return RunResult(run.path, "complete", history, run.metrics() if chief else {}, time.time() - started)
        d = config.data
        tags = options.tags or (TagLookup(info.vocabulary(d.tag_limit, d.tag_threshold, d.tag_normalization))
                                if m.uses_tags else None)
        if chief:
            run.begin(fingerprint, config, info, tags.vocab if tags else None)
        log.info("%s model on %s: %d classes, vocabulary %s, strategy %s with %d replica(s)", m.model, info.data_dir,
                 info.num_classes, tags.vocab_size if tags else "-", t.strategy, strategy.num_replicas_in_sync)
        previous_policy = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("mixed_float16" if t.mixed_precision else "float32")
        try:
            return _fit(info, run, config, options, strategy, chief, tags, started)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)


def _check_splits(info: DatasetInfo) -> None:
    for split in ("train", "validation"):
        if not info.split_sizes.get(split):
            raise ValueError(f"{info.data_dir}: the {split} split is empty; a run needs train photos and validation "
                             f"photos (to choose the best epoch)")


def _agree_on_state(strategy, run: RunDir, fingerprint: Fingerprint, config: RunConfig, overwrite: bool) -> str:
    """The chief decides new / resume / complete (or refuses); every worker learns its decision."""
    error, state = None, None
    if is_chief(strategy):
        try:
            state = run.state(fingerprint, config)
        except RunError as err:
            if not overwrite:
                error = err
            else:
                log.info("--overwrite: replacing %s", run.path)
                run.clear()
                state = NEW
    code = broadcast_from_chief(strategy, REFUSED if error else STATES.get(state, 0))
    if error is not None:
        raise error
    if code == REFUSED:
        raise RunError(f"{run.path}: the chief refused the run folder (see its log)")
    return next(name for name, value in STATES.items() if value == code)


def _fit(info: DatasetInfo, run: RunDir, config: RunConfig, options: RunOptions, strategy, chief: bool,
         tags: Optional[TagLookup], started: float) -> RunResult:
    m, t = config.model, config.train
    keras.utils.set_random_seed(t.seed)
    with strategy.scope():
        head = options.head or build_head(m, info.num_classes, tags, seed=t.seed)
        backbone = build_backbone(m.image_size, m.image_weights, m.train_backbone) if m.uses_image else None
        full = attach_backbone(head, backbone)
        frozen = m.uses_image and not m.train_backbone
        trained = head if frozen else full
        optimizer = LazyAdam(learning_rate=t.learning_rate)
        if t.mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(trained.trainable_variables)
    features = None
    if frozen:
        features = FeatureStore(options.cache_dir or run.cache_dir, info, m.image_size, m.image_weights)
        features.extract(backbone, _feature_jobs(info, features, strategy), strategy, options.progress)
    inputs = RunInputs(info, config, tags, features)
    trainer = Trainer(strategy, trained, optimizer, t.batch_size, t.mixed_precision)
    steps = steps_for(info.split_sizes["train"], t.batch_size)
    history = trainer.fit(inputs.train_dataset, steps, t.epochs, inputs.validation_metrics,
                          _callbacks(run, config, options, strategy, chief, full, steps))
    if not chief:
        return RunResult(run.path, "worker", history, {}, time.time() - started)
    metrics = _final_metrics(run, config, options, inputs, trainer, head, frozen, history, started)
    run.finish(metrics, config)
    return RunResult(run.path, "trained", history, metrics, time.time() - started)


def _callbacks(run: RunDir, config: RunConfig, options: RunOptions, strategy, chief: bool, full: keras.Model,
               steps: int) -> list:
    t = config.train
    best = BestModel(strategy, (lambda: run.save_model(full)) if chief and options.keep_model else None)
    callbacks = [Checkpoint(run.backup_dir, chief, {"best": best.best}), best]
    if chief:
        callbacks.append(History(run.history_path, run.logs_dir))
    if t.time_budget_hours is not None:
        callbacks.append(TimeBudget(t.time_budget_hours * 3600))
    return callbacks + [Progress(t.epochs, steps, bar=options.progress and chief)]


def _feature_jobs(info: DatasetInfo, features: FeatureStore, strategy) -> list:
    """The (shard, feature file) pairs this worker needs: its own train shards, all of the rest."""
    index, count = worker_shards(strategy)
    jobs = []
    for split in ("train", "validation", "test"):
        pairs = list(zip(info.shard_files(split), features.files(split)))
        jobs += pairs[index::count] if split == "train" else pairs
    return jobs


def _final_metrics(run: RunDir, config: RunConfig, options: RunOptions, inputs: "RunInputs", trainer: Trainer,
                   head: keras.Model, frozen: bool, history: list, started: float) -> dict:
    best_epoch = max(history, key=lambda row: row["val_map"])
    metrics = {"model": config.model.model, "epochs": len(history), "best_epoch": int(best_epoch["epoch"]),
               "val_map": best_epoch["val_map"], "val_loss": best_epoch["val_loss"], "data": str(inputs.info.data_dir),
               "seconds": round(time.time() - started, 1)}
    if options.keep_model:
        best = run.load_model()
        trainer.model.set_weights((best.get_layer(head.name) if frozen else best).get_weights())
        scores, _, _ = trainer.predict(inputs.eval_dataset("validation"))
        run.save_thresholds(tune_class_thresholds(scores, inputs.verified("validation")), "validation")
        test = inputs.validation_metrics(trainer, "test")
        metrics.update(test_map=test["val_map"], test_loss=test["val_loss"])
    else:
        shutil.rmtree(run.backup_dir, ignore_errors=True)
    return metrics


class RunInputs:
    """The datasets of one run: shards streamed through tf.data, with frozen-backbone features
    zipped in when the backbone is frozen.

    Args:
        info: the dataset.
        config: the run configuration.
        tags: the tag lookup (None for image-only models).
        features: the feature store (None unless the backbone is frozen).
    """

    def __init__(self, info: DatasetInfo, config: RunConfig, tags: Optional[TagLookup],
                 features: Optional[FeatureStore]):
        self.info, self.config, self.tags, self.features = info, config, tags, features
        m = config.model
        self.image_size = m.image_size if m.uses_image and features is None else None
        self._verified: dict = {}

    def _dataset(self, split: str, batch_size: int, **kwargs) -> tf.data.Dataset:
        t = self.config.train
        m = self.config.model
        return make_dataset(self.info, split, lookup=self.tags, image_size=self.image_size, batch_size=batch_size,
                            verified_only=t.loss_on == "verified", shuffle_buffer=t.shuffle_buffer,
                            feature_files=self.features.files(split) if self.features else None,
                            feature_dim=FEATURE_DIM, image_presence=m.uses_image and m.image_presence, **kwargs)

    def train_dataset(self, epoch: int, ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        t = self.config.train
        return self._dataset("train", ctx.get_per_replica_batch_size(t.batch_size), training=True,
                             seed=t.seed * 1000 + epoch, repeat=True, input_context=ctx)

    def eval_dataset(self, split: str) -> tf.data.Dataset:
        return self._dataset(split, 256)

    def verified(self, split: str) -> np.ndarray:
        """A split's expanded verified labels, in shard order (read once)."""
        if split not in self._verified:
            self._verified[split] = load_eval_arrays(self.info, split).verified
        return self._verified[split]

    def validation_metrics(self, trainer: Trainer, split: str = "validation") -> dict:
        """`val_loss` (the training loss) and `val_map` (Open Images protocol) on a split."""
        scores, targets, masks = trainer.predict(self.eval_dataset(split))
        loss = float(np.mean(masked_bce(targets, scores, masks).numpy()))
        return {"val_loss": loss, "val_map": mean_average_precision(scores, self.verified(split))}
