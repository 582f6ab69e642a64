"""The training loop: `strategy.run` steps, per-epoch checkpoints (resume), best-by-val-loss.

A custom loop rather than `Model.fit`, because Keras 3 `fit` has known bugs under
`MultiWorkerMirroredStrategy`. Every worker runs exactly `steps_per_epoch` steps over a
repeated dataset, so workers whose shards differ in size never wait on each other.
Each epoch's data order is a function of `(seed, epoch)`, and a checkpoint is written at the
end of each epoch, so a killed run resumes to the same weights as an uninterrupted one.
"""

from __future__ import annotations

import csv
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from app.evaluation.metrics import mean_average_precision
from app.fileio import atomic_output
from app.training.strategy import is_chief

log = logging.getLogger(__name__)


def masked_bce(targets: tf.Tensor, scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Per-example binary cross-entropy averaged over classes, counting only `mask`ed labels."""
    eps = 1e-7
    scores = tf.clip_by_value(tf.cast(scores, tf.float32), eps, 1 - eps)
    bce = -(targets * tf.math.log(scores) + (1 - targets) * tf.math.log(1 - scores))
    return tf.reduce_sum(bce * mask, axis=-1) / tf.cast(tf.shape(targets)[-1], tf.float32)


@dataclass
class LoopSpec:
    """What the loop needs to know about a run.

    Args:
        run_dir: outputs go here (checkpoints under `backup/`).
        epochs: maximum epochs.
        steps_per_epoch: global steps per epoch.
        global_batch_size: batch size over all replicas.
        time_budget_s: stop starting epochs after this many seconds.
        mixed_precision: scale the loss for float16.
        progress: show a progress bar.
    """

    run_dir: Path
    epochs: int
    steps_per_epoch: int
    global_batch_size: int
    time_budget_s: Optional[float] = None
    mixed_precision: bool = False
    progress: bool = True
    history: list = field(default_factory=list)


def train_loop(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    dataset_fn: Callable[[int, tf.distribute.InputContext], tf.data.Dataset],
    evaluate_fn: Callable[[], dict],
    on_best: Callable[[], None],
    spec: LoopSpec,
) -> list:
    """Trains `model` (created under `strategy.scope()`), resuming from `run_dir/backup`.

    Args:
        strategy: the distribution strategy.
        model: the model to train.
        optimizer: its optimizer.
        dataset_fn: `(epoch, input_context) -> per-replica dataset` of `(inputs, targets, mask)`.
        evaluate_fn: returns validation metrics with at least `val_loss` (called on every worker).
        on_best: called on the chief when `val_loss` improves (save the model there).
        spec: loop settings.

    Returns:
        The history: one dict per finished epoch.
    """
    chief = is_chief(strategy)
    backup = spec.run_dir / "backup"
    if not chief:  # other workers checkpoint to a private folder, as the collectives require
        backup = Path(tempfile.mkdtemp(prefix="backup-worker-"))
    with strategy.scope():
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        best_var = tf.Variable(np.inf, dtype=tf.float64, trainable=False, name="best_val_loss")
    # Dropout's random state lives in Keras seed generators; without it a resumed run would
    # replay the first epoch's dropout masks.
    seeds = [generator.state.value for layer in model._flatten_layers()
             for generator in getattr(layer, "_seed_generators", [])]
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var, best=best_var, seeds=seeds)
    manager = tf.train.CheckpointManager(checkpoint, str(backup), max_to_keep=1)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint)
        log.info("resumed from %s at epoch %d", manager.latest_checkpoint, int(epoch_var.numpy()))
    history = _read_history(spec.run_dir / "history.csv")[: int(epoch_var.numpy())]
    writer = tf.summary.create_file_writer(str(spec.run_dir / "logs")) if chief else None
    gbs = spec.global_batch_size

    def step_fn(inputs, targets, mask):
        with tf.GradientTape() as tape:
            scores = model(inputs, training=True)
            loss = tf.nn.compute_average_loss(masked_bce(targets, scores, mask), global_batch_size=gbs)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss) if spec.mixed_precision else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_step(iterator):
        per_replica = strategy.run(step_fn, args=next(iterator))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    started = time.time()
    for epoch in range(int(epoch_var.numpy()), spec.epochs):
        epoch_start = time.time()
        dist = strategy.distribute_datasets_from_function(lambda ctx, e=epoch: dataset_fn(e, ctx))
        iterator = iter(dist)
        total = 0.0
        bar = tqdm(range(spec.steps_per_epoch), desc=f"epoch {epoch + 1}/{spec.epochs}", unit="step",
                   disable=not (spec.progress and chief), leave=False)
        for step in bar:
            total += float(train_step(iterator))
            if step % 10 == 0:
                bar.set_postfix(loss=f"{total / (step + 1):.4f}")
        bar.close()
        metrics = {"epoch": epoch + 1, "loss": total / spec.steps_per_epoch, **evaluate_fn(),
                   "seconds": round(time.time() - epoch_start, 2)}
        improved = metrics["val_loss"] < float(best_var.numpy())
        if improved:
            best_var.assign(metrics["val_loss"])
            if chief:
                on_best()
        epoch_var.assign(epoch + 1)
        history.append(metrics)
        manager.save(checkpoint_number=epoch + 1)
        if chief:
            _write_history(spec.run_dir / "history.csv", history)
            with writer.as_default(step=epoch + 1):
                for key, value in metrics.items():
                    if isinstance(value, (int, float)) and key != "epoch":
                        tf.summary.scalar(key, value)
            writer.flush()
        log.info("epoch %d: %s%s", epoch + 1, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                                                      if isinstance(v, float)), " (best)" if improved else "")
        elapsed = time.time() - started
        if spec.time_budget_s is not None and elapsed + (time.time() - epoch_start) > spec.time_budget_s:
            log.info("time budget reached after %d epochs (%.0fs)", epoch + 1, elapsed)
            break
    if not chief:
        shutil.rmtree(backup, ignore_errors=True)
    return history


def predict_scores(model: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs a model over `(inputs, targets, mask)` batches; returns scores, targets and masks."""
    scores, targets, masks = [], [], []
    for inputs, target, mask in dataset:
        inputs = {k: v for k, v in inputs.items() if k in model.input}
        scores.append(np.asarray(model(inputs, training=False)))
        targets.append(target.numpy())
        masks.append(mask.numpy())
    return np.concatenate(scores), np.concatenate(targets), np.concatenate(masks)


def validation_metrics(scores: np.ndarray, targets: np.ndarray, masks: np.ndarray, verified: np.ndarray) -> dict:
    """`val_loss` (same loss as training) and `val_map` (Open Images protocol)."""
    loss = float(np.mean(masked_bce(targets, scores, masks).numpy()))
    return {"val_loss": loss, "val_map": mean_average_precision(scores, verified)}


def steps_for(num_examples: int, global_batch: int) -> int:
    return max(1, math.ceil(num_examples / global_batch))


def _read_history(path: Path) -> list:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _write_history(path: Path, history: list) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
