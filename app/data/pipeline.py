"""tf.data pipelines over prepared shards: parse, tags -> ids, decode images, batch, prefetch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf

from app.data import records
from app.data.dataset import DatasetInfo
from app.data.preprocess import TagLookup, decode_images

AUTOTUNE = tf.data.AUTOTUNE


def iter_tags(files: list) -> Iterator[list]:
    """Streams each photo's cleaned tags from shards, in shard order (for vocabularies)."""
    return (tags for _, tags in iter_language_tags(files))


def iter_language_tags(files: list) -> Iterator[tuple[str, list]]:
    """Streams each photo's `(language, cleaned tags)` from shards, in shard order."""
    ds = tf.data.TFRecordDataset(files).batch(4096)
    for batch in ds.map(lambda s: records.parse_batch(s, ["language", "tags"])):
        for language, row in zip(batch["language"].numpy(), batch["tags"].to_list()):
            yield language.decode(), [t.decode("utf-8") for t in row]


def dense_rows(ids: tf.RaggedTensor, values: tf.RaggedTensor | None, width: int) -> tf.Tensor:
    """Ragged `(ids, values)` per row -> dense `[batch, width]` float32."""
    rows = tf.cast(ids.value_rowids(), tf.int64)
    idx = tf.stack([rows, tf.cast(ids.flat_values, tf.int64)], axis=1)
    vals = tf.ones_like(ids.flat_values, tf.float32) if values is None else values.flat_values
    shape = tf.stack([ids.nrows(out_type=tf.int64), tf.constant(width, tf.int64)])
    return tf.scatter_nd(idx, vals, shape)


def make_dataset(
    info: DatasetInfo,
    split: str,
    *,
    lookup: Optional[TagLookup],
    image_size: Optional[int],
    batch_size: int,
    training: bool = False,
    seed: int = 0,
    verified_only: bool = False,
    input_context: Optional[tf.distribute.InputContext] = None,
    shuffle_buffer: int = 10000,
    repeat: bool = False,
    feature_files: Optional[list] = None,
    feature_dim: int = 2048,
    image_presence: bool = False,
    withhold: tuple = (),
) -> tf.data.Dataset:
    """Batches of `(inputs, targets, loss_mask)` from a split's shards.

    Args:
        info: the dataset folder.
        split: `train`, `validation` or `test`.
        lookup: maps tags to ids (`tag_ids`); None for image-only models.
        image_size: decode images at this size (`image`); None to skip images.
        batch_size: per-replica batch size.
        training: shuffle shards and records (seeded); evaluation keeps shard order.
        seed: shuffle seed (vary it per epoch for a new order).
        verified_only: the loss mask is 1 only on verified (positive or negative) labels.
        input_context: under a distribution strategy, each input pipeline reads its own shards.
        shuffle_buffer: records in the shuffle buffer (memory stays bounded by it).
        repeat: repeat forever before batching, so that every batch is full (a step then has
            the same examples whatever the number of replicas).
        feature_files: one raw float32 file per shard, record-aligned with it (frozen-backbone
            features, see `app.training.features`), read alongside as `image_features`. Each
            record is `feature_dim` features, then the image presence (1.0 or 0.0).
        feature_dim: features per record in `feature_files`.
        image_presence: add `image_present` `[b, 1]`: 1.0 where the photo's image was decoded
            (from the feature files, or from `decode_images` where images are decoded here).
        withhold: `"image"` and/or `"tags"`: score the photos as if they came without them (no
            image bytes, no tags), as serving would.

    Returns:
        A dataset of `(inputs dict, targets [b, C], loss_mask [b, C] or [b, 1])`.
    """
    files = info.shard_files(split)
    ds = _records(files, feature_files, feature_dim, split, input_context)
    if training:
        ds = ds.shuffle(len(files), seed=seed)
        # Sequential: the same order as a deterministic parallel interleave, at half the CPU per
        # record (on few cores the parallel one's threads take CPU from the training step).
        ds = ds.interleave(lambda *s: _read_shard(*s, feature_dim=feature_dim), cycle_length=min(4, len(files)))
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    else:  # shard order, as `load_eval_arrays` reads it
        ds = ds.flat_map(lambda *s: _read_shard(*s, feature_dim=feature_dim))
    if repeat:
        ds = ds.repeat()
    parse = _parser(info.num_classes, lookup, image_size, verified_only, feature_dim, image_presence, withhold)
    return ds.batch(batch_size).map(parse, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)


def _records(files: list, feature_files: Optional[list], feature_dim: int, split: str,
             input_context: Optional[tf.distribute.InputContext]) -> tf.data.Dataset:
    """The shard file names (paired with their feature files), this input pipeline's share only."""
    ds = tf.data.Dataset.from_tensor_slices((files,) if feature_files is None else (files, feature_files))
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) < input_context.num_input_pipelines:
            raise ValueError(f"{split} has {len(files)} shards for {input_context.num_input_pipelines} workers; "
                             f"prepare with more shards (--min-shards)")
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return ds


def _read_shard(shard, features=None, *, feature_dim: int) -> tf.data.Dataset:
    """A shard's serialized records, zipped with its raw feature rows when given."""
    records_ds = tf.data.TFRecordDataset(shard)
    if features is None:
        return records_ds
    return tf.data.Dataset.zip((records_ds, tf.data.FixedLengthRecordDataset(features, (feature_dim + 1) * 4)))


def _parser(num_classes: int, lookup: Optional[TagLookup], image_size: Optional[int], verified_only: bool,
            feature_dim: int, image_presence: bool, withhold: tuple):
    """`(serialized batch[, feature bytes batch]) -> (inputs, targets, mask)`, parsing only what is used."""
    unknown = sorted(set(withhold) - {"image", "tags"})
    if unknown or ("image" in withhold and image_size is None):
        raise ValueError(f"withhold takes 'image' (with decoded images, not features) and/or 'tags'. Received: "
                         f"withhold={withhold}, image_size={image_size}")
    keys = ["label_ids", "label_targets"]
    keys += ["tags", "language"] if lookup is not None else []
    keys += ["image"] if image_size is not None else []
    keys += ["verified_pos", "verified_neg"] if verified_only else []

    def parse(serialized, features=None):  # features: raw float32 bytes, `feature_dim` + 1 per record
        ex = records.parse_batch(serialized, keys)
        inputs = {}
        if lookup is not None:
            tags = ex["tags"][:, :0] if "tags" in withhold else ex["tags"]
            inputs["tag_ids"] = lookup(tags, cleaned=True, languages=ex["language"])  # prepare cleaned them
        if image_size is not None:
            image_bytes = tf.fill(tf.shape(ex["image"]), "") if "image" in withhold else ex["image"]
            inputs["image"], errors = decode_images(image_bytes, image_size)
            present = tf.cast(tf.equal(errors, ""), tf.float32)[:, None]
        if features is not None:
            rows = tf.reshape(tf.io.decode_raw(features, tf.float32), [-1, feature_dim + 1])
            inputs["image_features"], present = rows[:, :feature_dim], rows[:, feature_dim:]
        if image_presence:
            inputs["image_present"] = present
        targets = dense_rows(ex["label_ids"], ex["label_targets"], num_classes)
        if verified_only:
            mask = dense_rows(ex["verified_pos"], None, num_classes) + dense_rows(ex["verified_neg"], None, num_classes)
        else:  # every label counts: a [batch, 1] mask of ones broadcasts over the classes
            mask = tf.ones([tf.shape(targets)[0], 1])
        return inputs, targets, mask

    return parse


@dataclass
class EvalArrays:
    """A split's ground truth as arrays, for the Open Images metric and the baselines."""

    image_ids: np.ndarray
    verified: np.ndarray  # [N, C] int8: 1, 0 or -1 (unverified)
    machine: np.ndarray  # [N, C] float32 machine-label confidence, 0 where none
    languages: np.ndarray
    has_tags: np.ndarray

    def take(self, rows: np.ndarray) -> "EvalArrays":
        """The same arrays with their rows reordered or selected."""
        return EvalArrays(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))


def load_eval_arrays(info: DatasetInfo, split: str) -> EvalArrays:
    """Reads a split's verified labels, machine labels, languages and tag presence in shard order."""
    keys = ["image_id", "verified_pos", "verified_neg", "machine_ids", "machine_scores", "language", "tags"]
    ds = tf.data.TFRecordDataset(info.shard_files(split)).batch(4096)
    parts = {k: [] for k in ("ids", "verified", "machine", "lang", "tags")}
    c = info.num_classes
    for serialized in ds:
        ex = records.parse_batch(serialized, keys)
        pos = dense_rows(ex["verified_pos"], None, c).numpy()
        neg = dense_rows(ex["verified_neg"], None, c).numpy()
        parts["verified"].append(np.where(pos > 0, 1, np.where(neg > 0, 0, -1)).astype(np.int8))
        parts["machine"].append(dense_rows(ex["machine_ids"], ex["machine_scores"], c).numpy())
        parts["ids"].append(ex["image_id"].numpy().astype(str))
        parts["lang"].append(ex["language"].numpy().astype(str))
        parts["tags"].append((ex["tags"].row_lengths() > 0).numpy())
    return EvalArrays(np.concatenate(parts["ids"]), np.concatenate(parts["verified"]),
                      np.concatenate(parts["machine"]), np.concatenate(parts["lang"]), np.concatenate(parts["tags"]))
