"""Small training callbacks: checkpoint and resume, best model, early stopping, CSV/TensorBoard
history, time budget and progress. Each does one thing; `Trainer.fit` runs them in order."""

from __future__ import annotations

import csv
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from app.fileio import atomic_output
from app.training.strategy import is_multi_worker, sync_from_chief
from app.training.trainer import Callback, Trainer

log = logging.getLogger("app.training")


class BestModel(Callback):
    """Tracks the best epoch by validation mAP and saves the model there (on the chief).

    Args:
        strategy: the strategy (the best value and its epoch are checkpointed variables).
        save: called on the chief when the monitored value improves (None on other workers).
        monitor: the metric to maximise.
    """

    def __init__(self, strategy: tf.distribute.Strategy, save: Callable[[], None] | None, monitor: str = "val_map"):
        self.save, self.monitor = save, monitor
        with strategy.scope():
            self.best = tf.Variable(-np.inf, dtype=tf.float64, trainable=False, name=f"best_{monitor}")
            self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        value = logs[self.monitor]
        logs["best"] = bool(value > float(self.best.numpy()))
        if logs["best"]:
            self.best.assign(value)
            self.best_epoch.assign(epoch)
            if self.save is not None:
                self.save()


class EarlyStopping(Callback):
    """Stops training when the best epoch (`BestModel`'s, which runs first) is `patience` epochs behind.

    Every worker decides alike: the validation mAP is computed on each. A run resumed from a
    checkpoint without a best epoch (written before there was one) counts from where it resumes.

    Args:
        best: the run's best-model tracker.
        patience: epochs without improvement to allow (>= 1).
    """

    def __init__(self, best: BestModel, patience: int):
        self.best, self.patience = best, patience

    def on_train_begin(self, trainer: Trainer) -> None:
        if int(self.best.best_epoch.numpy()) == 0:
            self.best.best_epoch.assign(trainer.epoch)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        best_epoch = int(self.best.best_epoch.numpy())
        if epoch - best_epoch >= self.patience:
            log.info("early stopping after epoch %d: validation mAP has not improved for %d epochs (best: epoch %d, "
                     "%.4f)", epoch, epoch - best_epoch, best_epoch, float(self.best.best.numpy()))
            trainer.stop_training = True


class Checkpoint(Callback):
    """Saves the training state after every epoch and restores it at the start, so that a run
    killed at any point resumes to the same weights as an uninterrupted one.

    The state is the model, optimizer, epoch, dropout seed generators and `extra` variables. Under
    multi-worker training only the chief writes to `directory` (the others write a private copy,
    as the collectives require) and the chief's restored state is broadcast to every worker.

    Args:
        directory: the run's `backup/` folder.
        chief: whether this worker writes outputs.
        extra: more trackables to save, e.g. `{"best": BestModel.best}`.
    """

    def __init__(self, directory: Path, chief: bool, extra: dict):
        self.directory = Path(directory) if chief else Path(tempfile.mkdtemp(prefix="backup-worker-"))
        self.chief, self.extra = chief, extra
        self.manager = None

    def on_train_begin(self, trainer: Trainer) -> None:
        # Dropout's random state lives in Keras seed generators; without it a resumed run would
        # replay the first epoch's dropout masks.
        seeds = [generator.state.value for layer in trainer.model._flatten_layers()
                 for generator in getattr(layer, "_seed_generators", [])]
        checkpoint = tf.train.Checkpoint(model=trainer.model, optimizer=trainer.optimizer, epoch=trainer.epoch,
                                         seeds=seeds, **self.extra)
        self.manager = tf.train.CheckpointManager(checkpoint, str(self.directory), max_to_keep=1)
        if self.manager.latest_checkpoint:
            checkpoint.restore(self.manager.latest_checkpoint)
        if is_multi_worker(trainer.strategy):
            sync_from_chief(trainer.strategy, trainer.model.variables + trainer.optimizer.variables + seeds
                            + [trainer.epoch] + list(self.extra.values()))
        if int(trainer.epoch.numpy()):
            log.info("resumed after epoch %d", int(trainer.epoch.numpy()))

    def after_epoch(self, trainer: Trainer, epoch: int) -> None:
        self.manager.save(checkpoint_number=epoch)

    def on_train_end(self, trainer: Trainer) -> None:
        if not self.chief:
            shutil.rmtree(self.directory, ignore_errors=True)


class History(Callback):
    """Writes `history.csv` (rewritten atomically each epoch) and TensorBoard scalars in Keras's layout;
    on resume it reloads the finished epochs' rows. Chief only.

    As `keras.callbacks.TensorBoard` does, `logs/train/` and `logs/validation/` are two runs with the
    same tag names, so their curves overlay: `epoch_loss` in both (`loss`, `val_loss`), `epoch_map`
    (`val_map`) in validation, `epoch_learning_rate`, `epoch_examples_per_second` and `epoch_seconds`
    in train.

    Args:
        csv_path: the run's `history.csv`.
        logs_dir: the run's `logs/`.
        hparams: hyperparameter values to log for TensorBoard's HParams dashboard (tuning trials).
    """

    def __init__(self, csv_path: Path, logs_dir: Path, hparams: dict | None = None):
        self.csv_path, self.logs_dir, self.hparams = Path(csv_path), Path(logs_dir), hparams
        self.writers: dict = {}

    def on_train_begin(self, trainer: Trainer) -> None:
        trainer.history = read_history(self.csv_path)[: int(trainer.epoch.numpy())]
        self.writers = {run: tf.summary.create_file_writer(str(self.logs_dir / run)) for run in ("train", "validation")}
        if self.hparams:
            from tensorboard.plugins.hparams import api as hparams_api

            writer = tf.summary.create_file_writer(str(self.logs_dir))
            with writer.as_default():
                hparams_api.hparams(self.hparams)
            writer.close()

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        rows = trainer.history
        keys = list(dict.fromkeys(k for row in rows for k in row))
        with atomic_output(self.csv_path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        rate = trainer.optimizer.learning_rate  # a Keras variable; under a strategy its value is distributed
        scalars = {**logs, "learning_rate": float(tf.convert_to_tensor(getattr(rate, "value", rate)))}
        for key, value in scalars.items():
            if isinstance(value, float):
                run, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
                with self.writers[run].as_default(step=epoch):
                    tf.summary.scalar(f"epoch_{name}", value)
        for writer in self.writers.values():
            writer.flush()


def read_history(path: Path) -> list:
    if not Path(path).exists():
        return []
    with open(path, newline="") as handle:
        return [{k: _history_value(k, v) for k, v in row.items() if v != ""}  # "": not logged then
                for row in csv.DictReader(handle)]


def _history_value(key: str, text: str):
    """A `history.csv` cell as the epoch's row held it: `best` a bool, `epoch` an int (so a resumed run
    writes its earlier rows as they were), the rest floats."""
    return text == "True" if key == "best" else int(float(text)) if key == "epoch" else float(text)


class TimeBudget(Callback):
    """Stops starting epochs when the next one would not finish within `seconds` of the start."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started = time.time()

    def on_train_begin(self, trainer: Trainer) -> None:
        self.started = time.time()

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        elapsed = time.time() - self.started
        if elapsed + logs["seconds"] > self.seconds:
            log.info("time budget of %.0fs reached after %d epochs (%.0fs)", self.seconds, epoch, elapsed)
            trainer.stop_training = True


class Progress(Callback):
    """One progress bar for the whole run (only on a terminal) and one log line per epoch.

    Args:
        epochs: the epoch to reach.
        steps_per_epoch: steps in an epoch.
        bar: show the bar (it is also off when stderr is not a terminal).
    """

    def __init__(self, epochs: int, steps_per_epoch: int, bar: bool = True):
        self.epochs, self.steps = epochs, steps_per_epoch
        self.enabled = bar and sys.stderr.isatty()
        self.bar = None

    def on_train_begin(self, trainer: Trainer) -> None:
        done = int(trainer.epoch.numpy())
        self.bar = tqdm(total=self.epochs * self.steps, initial=done * self.steps, unit="step", desc="training",
                        disable=not self.enabled, dynamic_ncols=True)

    def on_step_end(self, trainer: Trainer, step: int, loss: float) -> None:
        self.bar.update(1)
        if step % 20 == 0:
            self.bar.set_postfix(epoch=int(trainer.epoch.numpy()) + 1, loss=f"{loss:.4f}")

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict) -> None:
        text = ", ".join(f"{k}={v:.4f}" for k, v in logs.items()
                         if isinstance(v, float) and k not in ("seconds", "examples_per_second"))
        message = (f"epoch {epoch}/{self.epochs}: {text} ({logs['seconds']:.1f}s, "
                   f"{logs['examples_per_second']:.0f} examples/s){' best' if logs.get('best') else ''}")
        if self.enabled:
            self.bar.write(message, file=sys.stderr)
        else:
            log.info("%s", message)

    def on_train_end(self, trainer: Trainer) -> None:
        self.bar.close()
