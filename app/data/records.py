"""The TFRecord schema of prepared shards, and an atomic shard writer.

A hand-written writer is used rather than a tensorflow-datasets builder: tfds would add its
own version folders and `dataset_info` around the same `tf.train.Example` files, while tuning
and serving need only this schema, and the writer below renames complete shards into place
so that a crash never leaves a shard that a reader would pick up.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import tensorflow as tf

SHARD_PATTERN = "{split}-{index:05d}-of-{count:05d}.tfrecord"


@dataclass
class PhotoRecord:
    """One Open Images photo joined with its YFCC100M metadata and expanded labels."""

    image_id: str
    flickr_id: int
    tags: list
    language: str
    tag_source: str
    label_ids: list = field(default_factory=list)
    label_targets: list = field(default_factory=list)
    verified_pos: list = field(default_factory=list)
    verified_neg: list = field(default_factory=list)
    machine_ids: list = field(default_factory=list)
    machine_scores: list = field(default_factory=list)
    autotag_ids: list = field(default_factory=list)
    autotag_scores: list = field(default_factory=list)
    image: bytes = b""


def _bytes(values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def encode(record: PhotoRecord) -> bytes:
    """Serialises a record as a `tf.train.Example`."""
    features = {
        "image_id": _bytes([record.image_id.encode()]),
        "flickr_id": _ints([record.flickr_id]),
        "image": _bytes([record.image]),
        "tags": _bytes([t.encode("utf-8") for t in record.tags]),
        "language": _bytes([record.language.encode()]),
        "tag_source": _bytes([record.tag_source.encode()]),
        "label_ids": _ints(record.label_ids),
        "label_targets": _floats(record.label_targets),
        "verified_pos": _ints(record.verified_pos),
        "verified_neg": _ints(record.verified_neg),
        "machine_ids": _ints(record.machine_ids),
        "machine_scores": _floats(record.machine_scores),
        "autotag_ids": _ints(record.autotag_ids),
        "autotag_scores": _floats(record.autotag_scores),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


FEATURE_SPEC = {
    "image_id": tf.io.FixedLenFeature([], tf.string),
    "flickr_id": tf.io.FixedLenFeature([], tf.int64),
    "image": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "tags": tf.io.RaggedFeature(tf.string),
    "language": tf.io.FixedLenFeature([], tf.string),
    "tag_source": tf.io.FixedLenFeature([], tf.string),
    "label_ids": tf.io.RaggedFeature(tf.int64),
    "label_targets": tf.io.RaggedFeature(tf.float32),
    "verified_pos": tf.io.RaggedFeature(tf.int64),
    "verified_neg": tf.io.RaggedFeature(tf.int64),
    "machine_ids": tf.io.RaggedFeature(tf.int64),
    "machine_scores": tf.io.RaggedFeature(tf.float32),
    "autotag_ids": tf.io.RaggedFeature(tf.int64),
    "autotag_scores": tf.io.RaggedFeature(tf.float32),
}


def parse_batch(serialized: tf.Tensor, keys: Iterable[str] | None = None) -> dict:
    """Parses a batch of serialized examples (list features come back ragged)."""
    spec = FEATURE_SPEC if keys is None else {k: FEATURE_SPEC[k] for k in keys}
    return tf.io.parse_example(serialized, spec)


def write_shards(records: list, out_dir: str | Path, split: str, per_shard: int, min_shards: int = 1) -> list:
    """Writes records round-robin into shards, renaming each into place only when complete.

    Args:
        records: `PhotoRecord`s of one split.
        out_dir: the dataset folder.
        split: `train`, `validation` or `test`.
        per_shard: target records per shard.
        min_shards: at least this many shards (for per-worker sharding).

    Returns:
        The final shard paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    count = max(min_shards, math.ceil(len(records) / max(per_shard, 1)), 1)
    finals = [out_dir / SHARD_PATTERN.format(split=split, index=i, count=count) for i in range(count)]
    temps = [p.with_name(f".{p.name}.tmp") for p in finals]
    writers = [tf.io.TFRecordWriter(str(p)) for p in temps]
    try:
        for i, record in enumerate(records):
            writers[i % count].write(encode(record))
    finally:
        for writer in writers:
            writer.close()
    for stale in set(out_dir.glob(f"{split}-*-of-*.tfrecord")) - set(finals):
        stale.unlink()
    for temp, final in zip(temps, finals):
        os.replace(temp, final)
    return finals


def shard_files(data_dir: str | Path, split: str) -> list:
    """Lists a split's complete shards in order; raises a clear error when there are none."""
    files = sorted(str(p) for p in Path(data_dir).glob(f"{split}-*-of-*.tfrecord"))
    if not files:
        raise FileNotFoundError(f"{data_dir}: no '{split}' shards (expected {split}-00000-of-NNNNN.tfrecord); "
                                f"run `python app/prepare.py` first")
    return files
