"""The TFRecord schema of prepared shards, and a streaming shard writer.

Shards are written under temporary names and renamed when complete; the dataset folder as a whole
is swapped into place by `app.records.dataset.DatasetWriter` once every shard is written.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import tensorflow as tf




def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


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
    text: str = ""  # free text such as a caption (collections; a model input with --text-input text|both)


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
    if record.text:  # absent means empty: Open Images records stay byte for byte as before
        features["text"] = _bytes([record.text.encode("utf-8")])
    # Deterministic: features (a protobuf map) sorted by name; otherwise their order varies between processes.
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


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
    "text": tf.io.FixedLenFeature([], tf.string, default_value=b""),
}


def parse_batch(serialized: tf.Tensor, keys: Iterable[str] | None = None) -> dict:
    """Parses a batch of serialized examples (list features come back ragged)."""
    spec = FEATURE_SPEC if keys is None else {k: FEATURE_SPEC[k] for k in keys}
    return tf.io.parse_example(serialized, spec)


class ShardWriter:
    """Streams one split's records into `count` shards under temporary names.

    With `total` (the number of records to come), shard i gets records `i * total // count` to
    `(i + 1) * total // count - 1`, written in that order with one file open at a time, so memory
    and open files do not grow with the number of shards. Without it, records go round-robin into
    all shards at once. `close()` renames complete shards into place and returns each shard's
    record count, size and SHA-256 (of the bytes written, so the dataset fingerprint costs no
    second read).

    Args:
        out_dir: the (temporary) dataset folder.
        split: the split's name (`train`, `validation`, `test`, `yfcc`).
        count: number of shards.
        total: records to be written, if known.
    """

    def __init__(self, out_dir: str | Path, split: str, count: int, total: int | None = None):
        if count < 1 or (total is not None and total < 0):
            raise ValueError(f"count must be >= 1 and total >= 0. Received: count={count}, total={total}")
        out_dir = Path(out_dir)
        self.finals = [out_dir / shard_name(split, i, count) for i in range(count)]
        self.temps = [p.with_name(f".{p.name}.tmp") for p in self.finals]
        self.total = total
        self.writers = [None] * count if total is not None else [tf.io.TFRecordWriter(str(p)) for p in self.temps]
        self.digests = [hashlib.sha256() for _ in range(count)]
        self.records = [0] * count
        self.written = 0
        self._current, self._end = -1, 0  # contiguous mode: the open shard and where its run ends

    def write(self, record: PhotoRecord) -> None:
        self.write_serialized(encode(record))

    def write_serialized(self, data: bytes) -> None:
        """Writes one serialized `tf.train.Example` of this schema."""
        i = self._shard()
        self.writers[i].write(data)
        # The digest covers each record's length and bytes, in order: the same records give the same hash.
        self.digests[i].update(len(data).to_bytes(8, "little"))
        self.digests[i].update(data)
        self.records[i] += 1
        self.written += 1

    def _shard(self) -> int:
        """The shard of the next record; in contiguous mode, opens it when its run starts and closes
        the shard before."""
        count = len(self.writers)
        if self.total is None:
            return self.written % count
        if self.written >= self.total:
            raise ValueError(f"{self.finals[0].name}: more than the {self.total} records announced")
        while self.written >= self._end:
            if self._current >= 0 and self.writers[self._current] is not None:  # None: an empty run
                self.writers[self._current].close()
                self.writers[self._current] = _CLOSED
            self._current += 1
            self._end = (self._current + 1) * self.total // count
        if self.writers[self._current] is None:
            self.writers[self._current] = tf.io.TFRecordWriter(str(self.temps[self._current]))
        return self._current

    def close(self) -> dict:
        if self.total is not None and self.written != self.total:
            self.abort()
            raise ValueError(f"{self.finals[0].name}: {self.written} records written, {self.total} announced")
        for i, temp in enumerate(self.temps):
            if self.writers[i] is None:  # an empty shard
                self.writers[i] = tf.io.TFRecordWriter(str(temp))
        self.abort()
        out = {}
        for temp, final, digest, records in zip(self.temps, self.finals, self.digests, self.records):
            os.replace(temp, final)
            out[final.name] = {"records": records, "bytes": final.stat().st_size, "sha256": digest.hexdigest()}
        return out

    def abort(self) -> None:
        """Closes every open file (the temporary files stay, for the dataset folder's removal)."""
        for i, writer in enumerate(self.writers):
            if writer is not None and writer is not _CLOSED:
                writer.close()
                self.writers[i] = _CLOSED


_CLOSED = object()  # a shard written and closed, in contiguous mode


def shard_count(records: int, per_shard: int, min_shards: int = 1) -> int:
    """Shards for a split: `records / per_shard` rounded up, at least `min_shards`."""
    return max(min_shards, math.ceil(records / per_shard), 1)


def write_shards(records: Iterable[PhotoRecord], out_dir: str | Path, split: str, count: int) -> dict:
    """Writes a split's records into `count` shards (see `ShardWriter`); returns the shards' metadata."""
    writer = ShardWriter(out_dir, split, count)
    try:
        for record in records:
            writer.write(record)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def iter_tags(files: list) -> Iterator[list]:
    """Streams each photo's cleaned tags from shards, in shard order (for vocabularies)."""
    return (tags for _, tags in iter_language_tags(files))


def iter_language_tags(files: list) -> Iterator[tuple[str, list]]:
    """Streams each photo's `(language, cleaned tags)` from shards, in shard order."""
    ds = tf.data.TFRecordDataset(files).batch(4096)
    for batch in ds.map(lambda s: parse_batch(s, ["language", "tags"])):
        for language, row in zip(batch["language"].numpy(), batch["tags"].to_list()):
            yield language.decode(), [t.decode("utf-8") for t in row]
