"""The trainer: distributed `train_step` / `eval_step` and an epoch loop that runs callbacks.

A custom loop rather than `Model.fit`, because Keras 3 `fit` has known bugs under
`MultiWorkerMirroredStrategy`. Every worker runs exactly `steps_per_epoch` steps over a
repeated dataset, so workers whose shards differ in size never wait on each other, and each
epoch's data order is a function of `(seed, epoch)`, so a resumed run reaches the same weights.
Checkpoints, the best model, logs and the time budget are callbacks (`app.training.callbacks`).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

DatasetFn = Callable[[int, tf.distribute.InputContext], tf.data.Dataset]


def masked_bce(targets: tf.Tensor, scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Per-example binary cross-entropy averaged over classes, counting only `mask`ed labels."""
    eps = 1e-7
    scores = tf.clip_by_value(tf.cast(scores, tf.float32), eps, 1 - eps)
    bce = -(targets * tf.math.log(scores) + (1 - targets) * tf.math.log(1 - scores))
    return tf.reduce_sum(bce * mask, axis=-1) / tf.cast(tf.shape(targets)[-1], tf.float32)


def steps_for(num_examples: int, global_batch: int) -> int:
    """Steps per epoch: every example once, in full batches (the last one wraps around)."""
    return max(1, math.ceil(num_examples / global_batch))


class Callback:
    """Hooks into `Trainer.fit`; each does one thing (see app/training/callbacks.py)."""

    def on_train_begin(self, trainer: "Trainer") -> None:
        pass

    def on_step_end(self, trainer: "Trainer", step: int, loss: float) -> None:
        pass

    def on_epoch_end(self, trainer: "Trainer", epoch: int, logs: dict) -> None:
        pass

    def after_epoch(self, trainer: "Trainer", epoch: int) -> None:
        """After every callback's `on_epoch_end`: the epoch's state is final (checkpoint it here)."""

    def on_train_end(self, trainer: "Trainer") -> None:
        pass


class Trainer:
    """Trains a model created under `strategy.scope()`.

    Args:
        strategy: the distribution strategy.
        model: the model to train (inputs dict -> scores).
        optimizer: its optimizer, built under the same scope.
        global_batch_size: batch size over all replicas (the loss is averaged over it).
        mixed_precision: scale the loss for float16.
    """

    def __init__(self, strategy: tf.distribute.Strategy, model: keras.Model, optimizer, global_batch_size: int,
                 mixed_precision: bool = False):
        self.strategy, self.model, self.optimizer = strategy, model, optimizer
        self.global_batch_size = global_batch_size
        self.mixed_precision = mixed_precision
        with strategy.scope():
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.stop_training = False
        self.history: list[dict] = []
        self._train_step = tf.function(self._distributed_step)
        self._predict = tf.function(lambda inputs: self.model(inputs, training=False))

    def _replica_step(self, inputs, targets, mask):
        model, optimizer = self.model, self.optimizer
        with tf.GradientTape() as tape:
            scores = model(inputs, training=True)
            loss = tf.nn.compute_average_loss(masked_bce(targets, scores, mask), global_batch_size=self.global_batch_size)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss) if self.mixed_precision else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    def _distributed_step(self, iterator):
        per_replica = self.strategy.run(self._replica_step, args=next(iterator))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def train_step(self, iterator) -> float:
        """One global step; returns the mean loss over the global batch."""
        return float(self._train_step(iterator))

    def eval_step(self, inputs: dict) -> np.ndarray:
        """Scores one batch (on this worker, without distribution)."""
        inputs = {k: v for k, v in inputs.items() if k in self.model.input}
        return np.asarray(self._predict(inputs))

    def fit(self, dataset_fn: DatasetFn, steps_per_epoch: int, epochs: int,
            evaluate_fn: Callable[["Trainer"], dict], callbacks: Sequence[Callback] = ()) -> list[dict]:
        """Trains from `self.epoch` (callbacks may restore it) to `epochs`.

        Args:
            dataset_fn: `(epoch, input_context) -> per-replica dataset` of `(inputs, targets, mask)`,
                repeated, with full batches.
            steps_per_epoch: global steps per epoch.
            epochs: the epoch to reach.
            evaluate_fn: validation metrics after each epoch (called on every worker).
            callbacks: run in order at each hook.

        Returns:
            The history: one dict per finished epoch (restored epochs included).
        """
        for callback in callbacks:
            callback.on_train_begin(self)
        for epoch in range(int(self.epoch.numpy()), epochs):
            started = time.time()
            dist = self.strategy.distribute_datasets_from_function(lambda ctx, e=epoch: dataset_fn(e, ctx))
            iterator = iter(dist)
            total = 0.0
            for step in range(steps_per_epoch):
                loss = self.train_step(iterator)
                total += loss
                for callback in callbacks:
                    callback.on_step_end(self, step, loss)
            speed = steps_per_epoch * self.global_batch_size / max(time.time() - started, 1e-6)
            logs = {"epoch": epoch + 1, "loss": total / steps_per_epoch, "examples_per_second": round(speed, 1),
                    **evaluate_fn(self)}
            logs["seconds"] = round(time.time() - started, 2)
            self.epoch.assign(epoch + 1)
            self.history.append(logs)
            for callback in callbacks:
                callback.on_epoch_end(self, epoch + 1, logs)
            for callback in callbacks:
                callback.after_epoch(self, epoch + 1)
            if self.stop_training:
                break
        for callback in callbacks:
            callback.on_train_end(self)
        return self.history
