"""One training run, end to end: data -> model -> loop -> run folder with model, config and scores."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from app.config import RunConfig
from app.data.pipeline import DatasetInfo, load_eval_arrays, make_dataset
from app.data.preprocess import TagLookup
from app.fileio import atomic_output, atomic_write_json, atomic_write_text
from app.model.classifier import attach_backbone, build_backbone, build_head, load_classifier
from app.training.loop import LoopSpec, predict_scores, steps_for, train_loop, validation_metrics
from app.training.optimizer import LazyAdam
from app.training.strategy import get_strategy, is_chief

log = logging.getLogger(__name__)
MODEL_FILE = "model.keras"


@dataclass
class RunResult:
    run_dir: Path
    history: list
    metrics: dict
    seconds: float


def save_model(model: keras.Model, path: Path) -> None:
    """Saves a `.keras` file atomically (a reader never sees a half-written model)."""
    with atomic_output(path) as tmp:
        model.save(tmp)


class RunInputs:
    """The inputs of one run: streamed from shards, or cached features for a frozen backbone.

    Args:
        info: the dataset folder.
        config: the run configuration.
        lookup: tags -> ids (None for image-only models).
        backbone: the image backbone (used once per image when it is frozen).
        cache_dir: where frozen-backbone features are cached.
        progress: show progress.
    """

    def __init__(self, info: DatasetInfo, config: RunConfig, lookup: Optional[TagLookup],
                 backbone: Optional[keras.Model], cache_dir: Path, progress: bool):
        self.info, self.config, self.lookup = info, config, lookup
        m = config.model
        self.frozen = m.uses_image and not m.train_backbone
        self.image_size = m.image_size if m.uses_image else None
        self.arrays = {}
        if self.frozen:
            for split in ("train", "validation", "test"):
                self.arrays[split] = self._features(split, backbone, cache_dir, progress)

    def _stream(self, split: str, batch_size: int, training=False, seed=0, ctx=None) -> tf.data.Dataset:
        t = self.config.train
        return make_dataset(self.info, split, lookup=self.lookup, image_size=self.image_size,
                            batch_size=batch_size, training=training, seed=seed, repeat=training,
                            verified_only=t.loss_on == "verified", input_context=ctx, shuffle_buffer=t.shuffle_buffer)

    def _features(self, split: str, backbone: keras.Model, cache_dir: Path, progress: bool) -> dict:
        """Image features from the frozen backbone (cached), plus this run's tag ids, targets and masks."""
        arrays = {"image_features": self._image_features(split, backbone, cache_dir)}
        parts: dict = {}
        no_images = make_dataset(self.info, split, lookup=self.lookup, image_size=None, batch_size=1024,
                                 verified_only=self.config.train.loss_on == "verified")
        for inputs, targets, mask in no_images:  # shard order, as for the features
            parts.setdefault("targets", []).append(targets.numpy())
            parts.setdefault("mask", []).append(mask.numpy())
            if "tag_ids" in inputs:
                parts.setdefault("tag_ids", []).append(inputs["tag_ids"].numpy())
        arrays.update({k: np.concatenate(v) for k, v in parts.items()})
        return arrays

    def _image_features(self, split: str, backbone: keras.Model, cache_dir: Path) -> np.ndarray:
        """Runs the frozen backbone once per image; cached per image size and weights, so that a
        resumed run (or another run given the cache) skips it. Nothing else is cached."""
        weights = "".join(c if c.isalnum() else "_" for c in Path(self.config.model.image_weights).name)
        path = cache_dir / f"{split}-features-{self.image_size}-{weights}.npy"
        if path.exists():
            return np.load(path)
        started = time.time()
        extract = tf.function(lambda images: backbone(images, training=False))
        images_only = make_dataset(self.info, split, lookup=None, image_size=self.image_size, batch_size=64)
        features = np.concatenate([extract(inputs["image"]).numpy().astype(np.float32)
                                   for inputs, _, _ in images_only])
        log.info("%s: backbone features for %d images in %.1fs (computed once, cached in %s)", split,
                 len(features), time.time() - started, path.name)
        with atomic_output(path) as tmp:
            np.save(tmp, features)
        return features

    def train_dataset(self, epoch: int, ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        t = self.config.train
        per_replica = ctx.get_per_replica_batch_size(t.batch_size)
        seed = t.seed * 1000 + epoch
        if not self.frozen:
            return self._stream("train", per_replica, training=True, seed=seed, ctx=ctx)
        ds = tf.data.Dataset.from_tensor_slices(self._split_tuple("train"))
        ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        size = len(self.arrays["train"]["targets"])
        return ds.shuffle(size, seed=seed).repeat().batch(per_replica).prefetch(tf.data.AUTOTUNE)

    def eval_dataset(self, split: str) -> tf.data.Dataset:
        if not self.frozen:
            return self._stream(split, 256)
        return tf.data.Dataset.from_tensor_slices(self._split_tuple(split)).batch(256)

    def _split_tuple(self, split: str):
        a = self.arrays[split]
        inputs = {k: a[k] for k in ("tag_ids", "image_features") if k in a}
        return inputs, a["targets"], a["mask"]


def train(data_dir: str | Path, run_dir: str | Path, config: RunConfig, progress: bool = True,
          strategy: Optional[tf.distribute.Strategy] = None) -> RunResult:
    """Trains one model and writes the run folder.

    The folder gets `model.keras` (best by validation loss; pixels and tag ids in), `config.json`,
    `vocab.tsv`, `classes.csv`, `history.csv`, TensorBoard `logs/` and `metrics.json` with the
    validation and test mAP. Re-running on the same folder resumes.

    Args:
        data_dir: a prepared dataset folder.
        run_dir: the output folder (`saved_models/NAME`).
        config: data, model and training configuration.
        progress: show progress bars.
        strategy: an already created strategy (else made from `config.train.strategy`).

    Returns:
        The run's history and final metrics.
    """
    started = time.time()
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t = config.train
    strategy = strategy or get_strategy(t.strategy, t.cpu_devices)
    chief = is_chief(strategy)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16" if t.mixed_precision else "float32")
    try:
        return _train(data_dir, run_dir, config, progress, strategy, chief, started)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(data_dir: Path, run_dir: Path, config: RunConfig, progress: bool, strategy, chief: bool,
           started: float) -> RunResult:
    m, t = config.model, config.train
    keras.utils.set_random_seed(t.seed)
    info = DatasetInfo.load(data_dir)
    # serving must clean tags as the data was cleaned
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, lowercase=info.lowercase))
    vocab = info.vocabulary(config.data.tag_limit, config.data.tag_threshold) if m.uses_tags else None
    lookup = TagLookup(vocab, info.lowercase) if vocab is not None else None
    log.info("%s model on %s: %d classes, vocabulary %s, strategy %s with %d replica(s)", m.model, data_dir,
             info.num_classes, vocab.size if vocab else "-", t.strategy, strategy.num_replicas_in_sync)
    if chief:
        config.save(run_dir / "config.json")
        if vocab is not None:
            vocab.save(run_dir / "vocab.tsv")
        atomic_write_text(run_dir / "classes.csv", (data_dir / "classes.csv").read_text())
        atomic_write_text(run_dir / "hierarchy.json", (data_dir / "hierarchy.json").read_text())

    with strategy.scope():
        head = build_head(m, vocab.size if vocab else 2, info.num_classes, config.data.tag_limit, seed=t.seed)
        backbone = build_backbone(m.image_size, m.image_weights, m.train_backbone) if m.uses_image else None
        full = attach_backbone(head, backbone)
        data = RunInputs(info, config, lookup, backbone, run_dir / "cache", progress)
        trained = head if data.frozen else full
        optimizer = LazyAdam(learning_rate=t.learning_rate)
        if t.mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(trained.trainable_variables)

    verified = {split: load_eval_arrays(info, split).verified for split in ("validation", "test")}

    def evaluate(split: str = "validation") -> dict:
        scores, targets, masks = predict_scores(trained, data.eval_dataset(split))
        return validation_metrics(scores, targets, masks, verified[split])

    spec = LoopSpec(run_dir=run_dir, epochs=t.epochs,
                    steps_per_epoch=steps_for(info.split_sizes["train"], t.batch_size),
                    global_batch_size=t.batch_size, mixed_precision=t.mixed_precision, progress=progress,
                    time_budget_s=t.time_budget_hours * 3600 if t.time_budget_hours else None)
    history = train_loop(strategy, trained, optimizer, data.train_dataset, evaluate,
                         lambda: save_model(full, run_dir / MODEL_FILE), spec)
    if not chief:  # the chief holds the best model and scores it
        return RunResult(run_dir, history, {"model": m.model, "epochs": len(history)}, time.time() - started)

    best = load_classifier(run_dir / MODEL_FILE)
    trained.set_weights((best.get_layer(head.name) if data.frozen else best).get_weights())
    val, test = evaluate("validation"), evaluate("test")
    metrics = {"val_map": val["val_map"], "val_loss": val["val_loss"], "test_map": test["val_map"],
               "test_loss": test["val_loss"], "epochs": len(history), "model": m.model,
               "data": str(data_dir), "seconds": round(time.time() - started, 1)}
    atomic_write_json(run_dir / "metrics.json", metrics)
    return RunResult(run_dir, history, metrics, time.time() - started)
