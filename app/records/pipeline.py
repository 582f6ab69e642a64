"""tf.data pipelines over prepared shards: parse, tags -> ids, decode images, batch, prefetch.

The model's input contract (`app.model.preprocessor.ContextualPreprocessor`, a layer above) comes in
as an argument: this module needs only what `InputContract` names. With a cache folder, a split's
records are parsed once into fixed-size rows (`app.records.parsed_cache`) and later pipelines read
the rows: the same batches, for less CPU per epoch.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

import tensorflow as tf

from app.records import schema
from app.records.dataset import DatasetInfo
from app.records.parsed_cache import CacheKey, ParsedCache, RowLayout

AUTOTUNE = tf.data.AUTOTUNE
# The functions given to tf.data are plain graph code (no Python control flow on tensors): traced
# as they are, without AutoGraph's conversion (seconds per new pipeline on a busy machine).
plain = tf.autograph.experimental.do_not_convert
BUILD_BATCH = 1024  # records per batch while parsing a shard into cached rows
PREFETCH = 8  # unpacked batches of rows kept ready (a descheduled pipeline thread does not stall the step)


class InputContract(Protocol):
    """What the pipelines need of the model's input contract (`ContextualPreprocessor`)."""

    feature_dim: int  # a feature row's features, before the image presence

    def record_keys(self, features: bool = False) -> list: ...

    def check_withhold(self, withheld: tuple, features: bool = False) -> None: ...

    def withhold(self, raw: dict, withheld: tuple) -> dict: ...

    def feature_inputs(self, feature_rows: tf.Tensor) -> dict: ...

    def fingerprint(self) -> str: ...

    def __call__(self, raw: dict, cleaned: bool = False, feature_rows: Optional[tf.Tensor] = None) -> tuple: ...


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
    preprocessor: InputContract,
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
    cache_root: Optional[Path] = None,
) -> tf.data.Dataset:
    """Batches of `(inputs, targets, loss_mask)` from a split's shards.

    Args:
        info: the dataset folder.
        split: `train`, `validation` or `test`.
        preprocessor: the model's inputs, made from the records' fields (`InputContract`).
        batch_size: per-replica batch size.
        training: shuffle shards and records (seeded); evaluation keeps shard order.
        seed: shuffle seed (vary it per epoch for a new order).
        verified_only: the loss mask is 1 only on verified (positive or negative) labels.
        input_context: under a distribution strategy, each input pipeline reads its own shards.
        shuffle_buffer: records in the shuffle buffer (memory stays bounded by it).
        repeat: repeat forever before batching, so that every batch is full (a step then has
            the same examples whatever the number of replicas).
        feature_files: one raw float32 file per shard, record-aligned with it (frozen-backbone
            features, `app.training.features`: `preprocessor.feature_dim` features, then the image
            presence, 1.0 or 0.0), read as `image_features` (and `image_present`), not images.
        withhold: `"image"` and/or `"tags"`: score the photos as if they came without them (no
            image bytes, no tags), as serving would.
        cache_root: a folder of parsed rows (`app.records.parsed_cache`): this pipeline's shards
            are parsed into rows once, then read as rows (not for a model that decodes images).

    Returns:
        A dataset of `(inputs dict, targets [b, C], loss_mask [b, C] or [b, 1])`.
    """
    parser = _Parser(info.num_classes, preprocessor, verified_only, feature_files is not None, withhold)
    source = _Source(info.shard_files(split), tf.data.TFRecordDataset, parser.parse)
    if cache_root is not None and parser.cacheable:
        source = _cached_source(ParsedCache(cache_root, parser.key(info.fingerprint)), info, split, parser,
                                input_context)
    ds = _records(source.files, feature_files, split, input_context)
    read = plain(functools.partial(_read_shard, source.read, preprocessor.feature_dim))
    if training:
        ds = ds.shuffle(len(source.files), seed=seed)
        # Sequential: the same order as a deterministic parallel interleave, at half the CPU per
        # record (on few cores the parallel one's threads take CPU from the training step).
        ds = ds.interleave(read, cycle_length=min(4, len(source.files)))
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    else:  # shard order, as `app.evaluation.truth.load_truth` reads it
        ds = ds.flat_map(read)
    if repeat:
        ds = ds.repeat()
    # Repeated, every batch is full: a static batch size folds the shapes (and the mask of ones).
    return _parse_batches(ds.batch(batch_size, drop_remainder=repeat), source)


def _parse_batches(ds: tf.data.Dataset, source: "_Source") -> tf.data.Dataset:
    """Parses batches ahead of the training step.

    Records (tag strings, images) take parallel calls, tuned by tf.data's autotuner. Cached rows
    are cheap to unpack, and the autotuner's own work and parallel calls would cost more CPU than
    they save, taken from the training step on few cores: one call at a time, `PREFETCH` batches ahead.
    """
    if not source.rows:
        return ds.map(plain(source.parse), num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.map(plain(source.parse)).prefetch(PREFETCH).with_options(options)


@dataclass(frozen=True)
class _Source:
    """One file per shard, how to read a file's records, and how to parse a batch of them."""

    files: list
    read: Callable[[tf.Tensor], tf.data.Dataset]
    parse: Callable
    rows: bool = False  # cached rows (`app.records.parsed_cache`), not records


def _records(files: list, feature_files: Optional[list], split: str,
             input_context: Optional[tf.distribute.InputContext]) -> tf.data.Dataset:
    """The shard file names (paired with their feature files), this input pipeline's share only."""
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    if pipelines > 1 and len(files) < pipelines:
        raise ValueError(f"{split} has {len(files)} shards for {pipelines} workers; "
                         f"prepare with more shards (--min-shards)")
    mine = _my_shards(len(files), input_context)
    files = [files[i] for i in mine]
    return tf.data.Dataset.from_tensor_slices(
        (files,) if feature_files is None else (files, [feature_files[i] for i in mine]))


def _my_shards(count: int, input_context: Optional[tf.distribute.InputContext]) -> list:
    """Indices of the shards this input pipeline reads (as `_records` shares them)."""
    if input_context is None or input_context.num_input_pipelines <= 1:
        return list(range(count))
    return list(range(input_context.input_pipeline_id, count, input_context.num_input_pipelines))


def _read_shard(read: Callable, feature_dim: int, shard, features=None) -> tf.data.Dataset:
    """A shard's serialized records (or cached rows), zipped with its raw feature rows when given."""
    records_ds = read(shard)
    if features is None:
        return records_ds
    return tf.data.Dataset.zip((records_ds, tf.data.FixedLengthRecordDataset(features, (feature_dim + 1) * 4)))


class _Parser:
    """Records -> `(inputs, targets, mask)`, parsing only what is used; also records -> cached rows,
    and cached rows -> the same `(inputs, targets, mask)`.

    Args:
        num_classes: the classes (targets' width).
        preprocessor: the model's input contract.
        verified_only: the loss mask is the verified labels.
        from_features: feature rows come alongside (the image inputs come from them).
        withhold: inputs to withhold (`"image"`, `"tags"`).
    """

    def __init__(self, num_classes: int, preprocessor: InputContract, verified_only: bool, from_features: bool,
                 withhold: tuple):
        preprocessor.check_withhold(withhold, from_features)
        self.num_classes, self.preprocessor, self.verified_only = num_classes, preprocessor, verified_only
        self.from_features, self.withhold = from_features, tuple(withhold)
        self.mask_keys = ["verified_pos", "verified_neg"] if verified_only else []
        self.keys = ["label_ids", "label_targets"] + preprocessor.record_keys(from_features) + self.mask_keys

    @property
    def cacheable(self) -> bool:
        """Rows hold no pixels: a model that decodes images reads its records."""
        return "image" not in self.keys

    def key(self, dataset_fingerprint: str) -> CacheKey:
        return CacheKey(dataset_fingerprint, self.preprocessor.fingerprint(), self.num_classes, self.verified_only,
                        self.from_features, self.withhold)

    def _inputs(self, ex: dict, rows: Optional[tf.Tensor]) -> dict:
        inputs, _ = self.preprocessor(self.preprocessor.withhold(ex, self.withhold), cleaned=True, feature_rows=rows)
        return inputs

    def _feature_rows(self, features: tf.Tensor) -> tf.Tensor:
        """Raw float32 bytes, `feature_dim` + 1 per record -> `[b, feature_dim + 1]`."""
        return tf.reshape(tf.io.decode_raw(features, tf.float32), [-1, self.preprocessor.feature_dim + 1])

    def parse(self, serialized: tf.Tensor, features: Optional[tf.Tensor] = None) -> tuple:
        ex = schema.parse_batch(serialized, self.keys)
        inputs = self._inputs(ex, None if features is None else self._feature_rows(features))
        targets = dense_rows(ex["label_ids"], ex["label_targets"], self.num_classes)
        if self.verified_only:
            mask = (dense_rows(ex["verified_pos"], None, self.num_classes)
                    + dense_rows(ex["verified_neg"], None, self.num_classes))
        else:  # every label counts: a [batch, 1] mask of ones broadcasts over the classes
            mask = tf.ones([tf.shape(targets)[0], 1])
        return inputs, targets, mask

    # === Cached rows ===
    def cached_inputs(self, ex: dict) -> dict:
        """The inputs that rows hold: all but those the feature rows give (here from zero rows)."""
        if not self.from_features:
            return self._inputs(ex, None)
        rows = tf.zeros([tf.shape(ex["label_ids"].row_lengths())[0], self.preprocessor.feature_dim + 1])
        inputs = self._inputs(ex, rows)
        return {name: value for name, value in inputs.items() if name not in self.preprocessor.feature_inputs(rows)}

    def rows(self, serialized: tf.Tensor, layout: RowLayout) -> tf.Tensor:
        """Records -> their rows, `[b, words]` int32."""
        ex = schema.parse_batch(serialized, self.keys)
        mask_ids = tf.concat([ex["verified_pos"], ex["verified_neg"]], axis=1) if self.verified_only else None
        return layout.pack(self.cached_inputs(ex), ex["label_ids"], ex["label_targets"], mask_ids)

    def row_layout(self, shards: list) -> RowLayout:
        """The rows of a split: its inputs' specs, and its most labels (and verified labels) per photo."""
        spec = (tf.data.TFRecordDataset(shards[:1]).batch(2)  # (inputs, 0): a model may cache no input
                .map(plain(lambda s: (self.cached_inputs(schema.parse_batch(s, self.keys)), 0))).element_spec[0])
        inputs = tuple((name, s.dtype.name, tuple(s.shape[1:])) for name, s in spec.items())
        keys = ["label_ids"] + self.mask_keys

        def longest(serialized):
            ex = schema.parse_batch(serialized, keys)
            mask = sum((ex[k].row_lengths() for k in self.mask_keys), tf.zeros_like(ex["label_ids"].row_lengths()))
            return tf.reduce_max(tf.pad(ex["label_ids"].row_lengths(), [[0, 1]])), tf.reduce_max(tf.pad(mask, [[0, 1]]))

        most = [0, 0]
        for labels, mask in tf.data.TFRecordDataset(shards).batch(4096).map(plain(longest)).as_numpy_iterator():
            most = [max(most[0], int(labels)), max(most[1], int(mask))]
        return RowLayout(inputs, max(most[0], 1), max(most[1], 1) if self.verified_only else 0, self.num_classes)

    def parse_rows(self, layout: RowLayout) -> Callable:
        """`(rows batch[, feature bytes batch]) -> (inputs, targets, mask)`, as `parse` gives them."""

        def parse(rows, features=None):
            inputs, targets, mask = layout.unpack(rows)
            if features is not None:
                inputs.update(self.preprocessor.feature_inputs(self._feature_rows(features)))
            return inputs, targets, mask if mask is not None else tf.ones([tf.shape(rows)[0], 1])  # rows: static

        return parse


def _cached_source(cache: ParsedCache, info: DatasetInfo, split: str, parser: _Parser,
                   input_context: Optional[tf.distribute.InputContext]) -> _Source:
    """The split's cached rows, after parsing the shards of this input pipeline that lack them."""
    cache.open()
    shards = info.shard_files(split)
    layout = cache.layout(split) or cache.save_layout(split, parser.row_layout(shards))
    files = cache.files(split, shards)
    records = [info.shard_records(shard) for shard in shards]
    missing = set(cache.missing(files, records, layout))
    todo = [i for i in _my_shards(len(shards), input_context) if i in missing]
    if todo:
        _write_rows(cache, layout, parser, [(shards[i], files[i], records[i]) for i in todo])
    return _Source(files, lambda path: tf.data.FixedLengthRecordDataset(path, layout.record_bytes),
                   parser.parse_rows(layout), rows=True)


def _write_rows(cache: ParsedCache, layout: RowLayout, parser: _Parser, jobs: list) -> None:
    """Parses each `(shard, row file, records)` job into its row file.

    One pipeline for all shards, each batch tagged with its shard's index (a pipeline per shard
    would keep each one's traced functions in memory).
    """

    def shard_batches(index, shard):
        return tf.data.TFRecordDataset(shard).batch(BUILD_BATCH).map(plain(lambda s: (index, s)))

    shards = tf.data.Dataset.from_tensor_slices([shard for shard, _, _ in jobs]).enumerate()
    batches = (shards.flat_map(plain(shard_batches))
               .map(plain(lambda index, s: (index, parser.rows(s, layout))), num_parallel_calls=AUTOTUNE).prefetch(2))
    groups = itertools.groupby(batches.as_numpy_iterator(), key=lambda item: int(item[0]))
    index, blocks = next(groups, (None, ()))
    for job, (_, target, records) in enumerate(jobs):
        if index != job:  # a shard without records
            cache.write(target, (), records, layout)
            continue
        cache.write(target, (block for _, block in blocks), records, layout)
        index, blocks = next(groups, (None, ()))
