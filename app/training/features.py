"""Frozen-backbone features on disk, streamed beside their shards.

With a frozen ResNet50, each image's 2048 features are computed once per dataset and written as one
raw float32 file per data shard (`features-v2-KEY/{shard}.f32`, by default in `.NAME.features/`
beside the dataset folder `NAME`, so every run on the dataset shares them), record for record in the shard's
order: 2048 features, then the photo's image presence (1.0 where `decode_images` decoded its image,
0.0 where not: no bytes, or bytes it refused; the serving signatures' `image_ok` is the same test).
Training zips each shard with its feature file in tf.data, so rows stay aligned with the
tags, targets and masks, which stream from the shards; nothing per photo is held in memory.
KEY is the dataset fingerprint, the image size and the weights, and `v2` the record layout (v1
files held the features alone), so a cache is never reused for other inputs; the folder's
`features.json` records them in full, with a digest of the backbone's weights, and a folder whose
record differs is refused: with random weights (`none`) every run seeds its backbone alike
(`app.training.run`), so the features are one function of the images for all of them. A file is
written under a temporary name and renamed when complete, so a killed extraction resumes from its
last complete shard, and runs extracting the same shards at once never see a half file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from app.records import schema
from app.records.dataset import DatasetInfo
from app.model.preprocess import decode_images
from app.model.preprocessor import FEATURE_DIM
from app.errors import InputError
from app.fileio import atomic_output, atomic_write_json
from app.config import read_json

log = logging.getLogger("app.training")
RECORD_FLOATS = FEATURE_DIM + 1  # the features, then the image presence
LAYOUT = "v2"
SUFFIX = ".f32"
RECORD = "features.json"
BACKBONE = "ResNet50, ImageNet preprocessing, global average pooling"  # what the features are


def default_cache_root(info: DatasetInfo, fallback: Path) -> Path:
    """Where a dataset's features go unless told otherwise: `.NAME.features/` beside its folder, or
    `fallback` (a run's `cache/`) where that folder cannot be written."""
    folder = info.data_dir.resolve()
    return folder.parent / f".{folder.name}.features" if os.access(folder.parent, os.W_OK) else fallback


def weights_key(weights: str) -> str:
    """A short name for backbone weights: `none`, `imagenet`, or a file's name and content hash."""
    if weights in ("none", "imagenet"):
        return weights
    path = Path(weights)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return "".join(c if c.isalnum() else "_" for c in path.stem)[:40] + "-" + digest


def weights_digest(model: keras.Model) -> str:
    """sha256 of a model's weights (their values, in order): which function the backbone is."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


class FeatureStore:
    """The feature files of one dataset, image size and backbone weights.

    Args:
        cache_root: the folder of feature caches (`default_cache_root`, or a search's `cache/`).
        info: the dataset.
        image_size: the backbone's input size.
        weights: the backbone weights setting (see `ModelConfig.image_weights`).
        backbone: the backbone that computes the features, recorded by its weights' digest (a cache
            made by another backbone is refused); None only to read a cache's files.
    """

    def __init__(self, cache_root: Path, info: DatasetInfo, image_size: int, weights: str,
                 backbone: Optional[keras.Model] = None):
        self.info, self.image_size = info, image_size
        key = weights_key(weights)
        self.dir = Path(cache_root) / f"features-{LAYOUT}-{info.fingerprint[:16]}-{image_size}-{key}"
        self.record = {"layout": LAYOUT, "dataset": info.fingerprint, "image_size": image_size, "weights": key,
                       "backbone": BACKBONE, "floats_per_record": RECORD_FLOATS}
        if backbone is not None:  # the backbone's own weights: a random one differs from run to run unless seeded
            self.record["backbone_weights"] = weights_digest(backbone)
        recorded = read_json(self.dir / RECORD) if (self.dir / RECORD).is_file() else self.record
        if not isinstance(recorded, dict):  # a file someone else wrote: no record of inputs at all
            recorded = {}
        if backbone is None:  # reading what a run wrote, with no backbone at hand to compare
            recorded = {k: v for k, v in recorded.items() if k != "backbone_weights"}
        if recorded != self.record:
            differ = ", ".join(f"{k} {recorded.get(k)!r} (wanted {v!r})" for k, v in self.record.items()
                               if recorded.get(k) != v)
            raise InputError(f"{self.dir / RECORD}: a feature cache of other inputs ({differ}); remove the folder "
                             f"{self.dir} (it is recomputed)")

    def files(self, split: str) -> list:
        """Feature files aligned with `info.shard_files(split)`."""
        return [str(self.dir / (Path(shard).stem + SUFFIX)) for shard in self.info.shard_files(split)]

    def complete(self, shard: str, target: str) -> bool:
        path = Path(target)
        return path.exists() and path.stat().st_size == self.info.shard_records(shard) * RECORD_FLOATS * 4

    def extract(self, backbone: keras.Model, jobs: Iterable[tuple[str, str]], strategy: tf.distribute.Strategy,
                progress: bool = True) -> None:
        """Computes the features of every `(shard, feature file)` job that is not complete yet."""
        todo = [(s, f) for s, f in jobs if not self.complete(s, f)]
        if not todo:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / RECORD).is_file():
            atomic_write_json(self.dir / RECORD, self.record)
        total = sum(self.info.shard_records(s) for s, _ in todo)
        started = time.time()
        run = _backbone_runner(backbone, strategy)
        with tqdm(total=total, unit="img", desc="backbone features", disable=not (progress and sys.stderr.isatty())) as bar:
            batches = iter(self._image_batches([shard for shard, _ in todo]))
            pending = next(batches, None)
            for index, (shard, target) in enumerate(todo):
                with atomic_output(Path(target)) as tmp, open(tmp, "wb") as out:
                    while pending is not None and int(pending[0]) == index:
                        _, images, errors = pending
                        present = (errors.numpy() == b"").astype(np.float32)[:, None]
                        rows = np.concatenate([np.asarray(run(images), dtype=np.float32), present], axis=1)
                        out.write(np.ascontiguousarray(rows).tobytes())
                        bar.update(int(images.shape[0]))
                        pending = next(batches, None)
                if not self.complete(shard, target):
                    raise RuntimeError(f"{target}: wrote the wrong number of features for {shard}")
        log.info("backbone features: %d images in %.1fs (%d shards, cached in %s)", total, time.time() - started,
                 len(todo), self.dir)

    def _image_batches(self, shards: list) -> tf.data.Dataset:
        """`(shard index, images, decode errors)` batches of the shards in order, never across two.

        One pipeline for all shards: a pipeline per shard would trace its functions anew each time,
        and TensorFlow keeps every traced function (about 2 MB per shard).
        """
        size = self.image_size

        def shard_batches(index, shard):
            return tf.data.TFRecordDataset(shard).batch(64).map(lambda s: (index, s))

        def decode(index, serialized):
            return (index, *decode_images(schema.parse_batch(serialized, ["image"])["image"], size))

        return (tf.data.Dataset.from_tensor_slices(shards).enumerate().flat_map(shard_batches)
                .map(decode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2))


def _backbone_runner(backbone: keras.Model, strategy: tf.distribute.Strategy):
    """A function `images -> features [batch, 2048]`, spread over local replicas with `mirrored`."""
    local = tf.function(lambda images: backbone(images, training=False))
    if not isinstance(strategy, tf.distribute.MirroredStrategy) or strategy.num_replicas_in_sync == 1:
        return lambda images: local(images).numpy()

    replicas = strategy.num_replicas_in_sync

    @tf.function
    def spread(images):
        def my_slice(ctx):  # replica i takes the i-th block of rows (maybe empty)
            per = (tf.shape(images)[0] + replicas - 1) // replicas
            return images[ctx.replica_id_in_sync_group * per:(ctx.replica_id_in_sync_group + 1) * per]

        per_replica = strategy.experimental_distribute_values_from_function(my_slice)
        features = strategy.run(lambda x: backbone(x, training=False), args=(per_replica,))
        return tf.concat(strategy.experimental_local_results(features), axis=0)

    return lambda images: spread(images).numpy()
