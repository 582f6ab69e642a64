"""tf.data pipelines over prepared shards: parse, tags -> ids, decode images, batch, prefetch."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from app.records import schema
from app.records.dataset import DatasetInfo
from app.model.preprocessor import FEATURE_DIM, ContextualPreprocessor

AUTOTUNE = tf.data.AUTOTUNE


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
    preprocessor: ContextualPreprocessor,
    *,
    batch_size: int,
    training: bool = False,
    seed: int = 0,
    verified_only: bool = False,
    input_context: Optional[tf.distribute.InputContext] = None,
    shuffle_buffer: int = 10000,
    repeat: bool = False,
    feature_files: Optional[list] = None,
    withhold: tuple = (),
    files: Optional[list] = None,
) -> tf.data.Dataset:
    """Batches of `(inputs, targets, loss_mask)` from a split's shards.

    Args:
        info: the dataset folder.
        split: `train`, `validation` or `test`.
        preprocessor: the model's inputs, made from the records' fields.
        batch_size: per-replica batch size.
        training: shuffle shards and records (seeded); evaluation keeps shard order.
        seed: shuffle seed (vary it per epoch for a new order).
        verified_only: the loss mask is 1 only on verified (positive or negative) labels.
        input_context: under a distribution strategy, each input pipeline reads its own shards.
        shuffle_buffer: records in the shuffle buffer (memory stays bounded by it).
        repeat: repeat forever before batching, so that every batch is full (a step then has
            the same examples whatever the number of replicas).
        feature_files: one raw float32 file per shard, record-aligned with it (frozen-backbone
            features, see `app.training.features`), read alongside as `image_features` (and
            `image_present`) instead of decoding images. Each record is `FEATURE_DIM` features,
            then the image presence (1.0 or 0.0).
        withhold: `"image"` and/or `"tags"`: score the photos as if they came without them (no
            image bytes, no tags), as serving would.
        files: read only these shards of the split, in this order (a shard task's share).

    Returns:
        A dataset of `(inputs dict, targets [b, C], loss_mask [b, C] or [b, 1])`.
    """
    files = info.shard_files(split) if files is None else [str(f) for f in files]
    ds = _records(files, feature_files, split, input_context)
    if training:
        ds = ds.shuffle(len(files), seed=seed)
        # Sequential: the same order as a deterministic parallel interleave, at half the CPU per
        # record (on few cores the parallel one's threads take CPU from the training step).
        ds = ds.interleave(lambda *s: _read_shard(*s), cycle_length=min(4, len(files)))
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    else:  # shard order, as `app.evaluation.truth.load_truth` reads it
        ds = ds.flat_map(lambda *s: _read_shard(*s))
    if repeat:
        ds = ds.repeat()
    parse = _parser(info.num_classes, preprocessor, verified_only, feature_files is not None, withhold)
    return ds.batch(batch_size).map(parse, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)


def _records(files: list, feature_files: Optional[list], split: str,
             input_context: Optional[tf.distribute.InputContext]) -> tf.data.Dataset:
    """The shard file names (paired with their feature files), this input pipeline's share only."""
    ds = tf.data.Dataset.from_tensor_slices((files,) if feature_files is None else (files, feature_files))
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) < input_context.num_input_pipelines:
            raise ValueError(f"{split} has {len(files)} shards for {input_context.num_input_pipelines} workers; "
                             f"prepare with more shards (--min-shards)")
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return ds


def _read_shard(shard, features=None) -> tf.data.Dataset:
    """A shard's serialized records, zipped with its raw feature rows when given."""
    records_ds = tf.data.TFRecordDataset(shard)
    if features is None:
        return records_ds
    return tf.data.Dataset.zip((records_ds, tf.data.FixedLengthRecordDataset(features, (FEATURE_DIM + 1) * 4)))


def _parser(num_classes: int, preprocessor: ContextualPreprocessor, verified_only: bool, from_features: bool,
            withhold: tuple):
    """`(serialized batch[, feature bytes batch]) -> (inputs, targets, mask)`, parsing only what is used."""
    keys = ["label_ids", "label_targets"] + preprocessor.record_keys(from_features)
    keys += ["verified_pos", "verified_neg"] if verified_only else []
    preprocessor.check_withhold(withhold, from_features)

    def parse(serialized, features=None):  # features: raw float32 bytes, `FEATURE_DIM` + 1 per record
        ex = schema.parse_batch(serialized, keys)
        rows = None if features is None else tf.reshape(tf.io.decode_raw(features, tf.float32), [-1, FEATURE_DIM + 1])
        inputs, _ = preprocessor(preprocessor.withhold(ex, withhold), cleaned=True, feature_rows=rows)
        targets = dense_rows(ex["label_ids"], ex["label_targets"], num_classes)
        if verified_only:
            mask = dense_rows(ex["verified_pos"], None, num_classes) + dense_rows(ex["verified_neg"], None, num_classes)
        else:  # every label counts: a [batch, 1] mask of ones broadcasts over the classes
            mask = tf.ones([tf.shape(targets)[0], 1])
        return inputs, targets, mask

    return parse
