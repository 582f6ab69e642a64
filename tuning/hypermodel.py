"""KerasTuner hypermodel: tag limit × tag threshold (they change the data) and the rest.

`build()` chooses every value, including tag limit and threshold; `fit()` reads those two back with
`hp.get()` and trains on the matching data. Each (limit, threshold) vocabulary and id mapping is
built once and reused by every trial that draws the pair. The objective is validation mAP with the
Open Images metric; each trial reports its best epoch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf

from app.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from app.data.pipeline import DatasetInfo, dense_rows, load_eval_arrays, read_tags
from app.data import records
from app.data.tags import PAD_ID, build_vocabulary
from app.evaluation.metrics import mean_average_precision
from app.model.classifier import build_head
from app.training.loop import masked_bce
from app.training.optimizer import LazyAdam

log = logging.getLogger(__name__)

TAG_LIMITS = [2, 5, 10, 20, 40, 80, 160]
TAG_THRESHOLDS = [2, 5, 10, 20, 40, 80]


@dataclass
class TagData:
    """One (limit, threshold)'s vocabulary size and padded id arrays for train and validation."""

    vocab_size: int
    train_ids: np.ndarray
    val_ids: np.ndarray


class TagHyperModel(kt.HyperModel):
    """Searches the study's space (and learning rate and L2, which the study never tuned).

    Args:
        data_dir: a prepared dataset folder.
        model: `tags` (the study's search) or `contextual` (the tag branch plus frozen-backbone
            image features, given as `image_features`).
        epochs: maximum epochs per trial.
        trial_time_budget_s: stop a trial's training after this many seconds.
        image_features: optional `(train, validation)` arrays of backbone features for `contextual`.
    """

    def __init__(self, data_dir, model: str = "tags", epochs: int = 20, trial_time_budget_s: float | None = None,
                 image_features: tuple | None = None, seed: int = 0):
        super().__init__(name=f"{model}_hypermodel")
        if model not in ("tags", "contextual"):
            raise ValueError(f"model must be 'tags' or 'contextual'. Received: model={model!r}")
        if model == "contextual" and image_features is None:
            raise ValueError("the contextual search needs image_features=(train, validation) backbone features")
        self.info = DatasetInfo.load(data_dir)
        self.model_kind = model
        self.epochs = epochs
        self.budget = trial_time_budget_s
        self.image_features = image_features
        self.seed = seed
        self._tags = {split: read_tags(data_dir, split) for split in ("train", "validation")}
        self._targets = {split: self._dense_targets(split) for split in ("train", "validation")}
        self.val_verified = load_eval_arrays(self.info, "validation").verified
        self._cache: dict = {}

    def _dense_targets(self, split: str) -> np.ndarray:
        ds = tf.data.TFRecordDataset(records.shard_files(self.info.data_dir, split)).batch(4096)
        parts = [dense_rows(ex["label_ids"], ex["label_targets"], self.info.num_classes).numpy()
                 for ex in ds.map(lambda s: records.parse_batch(s, ["label_ids", "label_targets"]))]
        return np.concatenate(parts)

    def data(self, limit: int, threshold: int) -> TagData:
        """The (limit, threshold) vocabulary and padded ids, built once and cached."""
        key = (limit, threshold)
        if key not in self._cache:
            vocab = build_vocabulary(self._tags["train"], limit, threshold)

            def ids(tag_lists):
                out = np.full((len(tag_lists), limit), PAD_ID, np.int32)
                for i, tags in enumerate(tag_lists):
                    row = vocab.ids(tags)
                    out[i, : len(row)] = row
                return out

            self._cache[key] = TagData(vocab.size, ids(self._tags["train"]), ids(self._tags["validation"]))
            log.info("data for tag limit %d, threshold %d: vocabulary %d ids", limit, threshold, vocab.size)
        return self._cache[key]

    def run_config(self, hp: kt.HyperParameters, seed: int | None = None) -> RunConfig:
        """The hyperparameters as a config that `python app/train.py --config` accepts."""
        return RunConfig(
            data=DataConfig(tag_limit=hp.get("tag_limit"), tag_threshold=hp.get("tag_threshold")),
            model=ModelConfig(model=self.model_kind, embedding_dim=hp.get("units"), hidden_units=hp.get("units"),
                              pooling=hp.get("pooling"), dropout=hp.get("dropout"), l2=hp.get("l2")),
            train=TrainConfig(epochs=self.epochs, batch_size=hp.get("batch_size"),
                              learning_rate=hp.get("learning_rate"), seed=self.seed if seed is None else seed),
        )

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        limit = hp.Choice("tag_limit", TAG_LIMITS)
        threshold = hp.Choice("tag_threshold", TAG_THRESHOLDS)
        hp.Choice("units", [64, 128])
        hp.Choice("pooling", ["max", "avg"])
        hp.Choice("batch_size", [128, 256])
        hp.Choice("dropout", [0.0, 0.1, 0.2, 0.3, 0.4])
        hp.Float("learning_rate", 1e-4, 3e-2, sampling="log")
        hp.Float("l2", 1e-7, 1e-3, sampling="log")
        config = self.run_config(hp)
        return build_head(config.model, self.data(limit, threshold).vocab_size, self.info.num_classes, limit,
                          seed=config.train.seed)

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, seed: int | None = None, **kwargs) -> dict:
        """Trains on the data of `hp.get("tag_limit")` / `hp.get("tag_threshold")`; returns the best epoch."""
        data = self.data(hp.get("tag_limit"), hp.get("tag_threshold"))
        seed = self.seed if seed is None else seed
        keras.utils.set_random_seed(seed)
        train_inputs = {"tag_ids": data.train_ids}
        val_inputs = {"tag_ids": data.val_ids}
        if self.model_kind == "contextual":
            train_inputs["image_features"], val_inputs["image_features"] = self.image_features
        targets = self._targets["train"]
        batch = hp.get("batch_size")
        optimizer = LazyAdam(learning_rate=hp.get("learning_rate"))

        @tf.function
        def step(inputs, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(masked_bce(y, model(inputs, training=True), tf.ones_like(y)))
                if model.losses:
                    loss += tf.add_n(model.losses)
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        started, best, best_epoch, history = time.time(), -1.0, 0, []
        for epoch in range(self.epochs):
            ds = tf.data.Dataset.from_tensor_slices((train_inputs, targets)).shuffle(len(targets), seed=seed + epoch)
            for inputs, y in ds.batch(batch):
                step(inputs, y)
            scores = np.asarray(model.predict(val_inputs, batch_size=1024, verbose=0))
            val_map = mean_average_precision(scores, self.val_verified)
            history.append(val_map)
            if val_map > best:
                best, best_epoch = val_map, epoch + 1
            if self.budget is not None and time.time() - started > self.budget:
                break
        return {"val_map": best, "best_epoch": best_epoch, "epochs_run": len(history),
                "seconds": time.time() - started}
