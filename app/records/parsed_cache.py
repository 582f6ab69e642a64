"""A cache of parsed records on disk: each shard's records as fixed-size rows of the model's inputs,
labels and loss-mask labels, so that epochs after the first read rows instead of parsing tags.

Parsing a record (tag strings, then lookup, cut and padding) costs more CPU than reading a
fixed-size row, and on few cores that CPU is taken from the training step. Each shard's rows go to
one file (`ROOT/parsed-v1-KEY/SPLIT/SHARD.i32`), in the shard's record order, so the pipeline
shuffles and batches them exactly as it does the records: the batches are the same.

A row is int32 words (float32 fields bit for bit): each cached input in name order (its shape's
words), then `label_slots` label ids and `label_slots` targets, then `mask_slots` verified-label ids
(with a verified-labels loss mask). Unused slots hold the id `num_classes`, which counting skips.
The slots are the split's most labels per photo (counted in a first pass), so a file is
`records * record_bytes` long.

Correctness:
    * KEY hashes what the rows are made from (`CacheKey`): the dataset fingerprint, the
      preprocessor's fingerprint (configuration, vocabularies, graph code), the loss mask, the
      withheld inputs and the row layout's version. Other inputs never share a folder;
      `key.json` records the key and a folder whose `key.json` says otherwise is rebuilt.
    * Every file is written under a temporary name and renamed when complete (`app.fileio`); a
      shard file is read only when its size is exactly its records' rows. A killed build leaves
      at most temporary files, never read, removed by the next build after `STALE_SECONDS`.
    * Bounded: a root keeps the `KEPT` most recently used caches; building another removes the
      oldest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import tensorflow as tf

from app.fileio import atomic_output, atomic_write_json, remove_stale_temps

LAYOUT = "parsed-v1"
PREFIX = "parsed-"
KEY_FILE = "key.json"
ROWS_FILE = "rows.json"
SUFFIX = ".i32"
KEPT = 4  # caches per root (e.g. a search's trials of several tag limits)
STALE_SECONDS = 3600  # a temporary file untouched this long belongs to a killed build
WORD = 4  # bytes per row word


@dataclass(frozen=True)
class CacheKey:
    """What a split's rows are made from."""

    dataset: str  # the dataset fingerprint
    preprocessor: str  # `ContextualPreprocessor.fingerprint()`
    num_classes: int
    verified_only: bool
    from_features: bool
    withhold: tuple
    layout: str = LAYOUT

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class RowLayout:
    """The words of one row.

    Args:
        inputs: `(name, dtype, shape)` of each cached input, in name order; dtype `int32` or `float32`.
        label_slots: label ids (and as many targets) per row.
        mask_slots: verified-label ids per row (0: the loss mask is not per class).
        num_classes: the classes (the id of an unused slot).
    """

    inputs: tuple
    label_slots: int
    mask_slots: int
    num_classes: int

    @property
    def input_words(self) -> int:
        return sum(int(np.prod(shape)) for _, _, shape in self.inputs)

    @property
    def record_bytes(self) -> int:
        return WORD * (self.input_words + 2 * self.label_slots + self.mask_slots)

    def pack(self, inputs: dict, label_ids: tf.RaggedTensor, label_targets: tf.RaggedTensor,
             mask_ids: Optional[tf.RaggedTensor]) -> tf.Tensor:
        """A batch's rows, `[b, record_bytes / 4]` int32."""
        words = [tf.reshape(tf.bitcast(inputs[name], tf.int32), [-1, int(np.prod(shape))])
                 for name, _, shape in self.inputs]
        words.append(self._slots(label_ids, self.label_slots))
        words.append(tf.bitcast(label_targets.to_tensor(0.0, shape=[None, self.label_slots]), tf.int32))
        if self.mask_slots:
            words.append(self._slots(mask_ids, self.mask_slots))
        return tf.concat(words, axis=1)

    def _slots(self, ids: tf.RaggedTensor, slots: int) -> tf.Tensor:
        return tf.cast(ids, tf.int32).to_tensor(self.num_classes, shape=[None, slots])

    def unpack(self, rows: tf.Tensor) -> tuple[dict, tf.Tensor, Optional[tf.Tensor]]:
        """Serialized rows `[b]` -> `(inputs, targets [b, C], mask [b, C] or None)`."""
        words = tf.io.decode_raw(rows, tf.int32)
        words.set_shape([rows.shape[0], self.record_bytes // WORD])  # static shapes, as parsed records have
        floats = tf.bitcast(words, tf.float32)
        inputs, start = {}, 0
        for name, dtype, shape in self.inputs:
            size = int(np.prod(shape))
            column = (floats if dtype == "float32" else words)[:, start:start + size]
            inputs[name] = column if len(shape) == 1 else tf.reshape(column, [-1, *shape])
            start += size
        labels = words[:, start:start + self.label_slots]
        targets = self._count(labels, floats[:, start + self.label_slots:start + 2 * self.label_slots])
        start += 2 * self.label_slots
        mask = self._count(words[:, start:start + self.mask_slots], None) if self.mask_slots else None
        return inputs, targets, mask

    def _count(self, ids: tf.Tensor, weights: Optional[tf.Tensor]) -> tf.Tensor:
        """`[b, slots]` ids (and weights) -> `[b, C]` float32 sums per class (unused slots, id C, skipped)."""
        width = self.num_classes
        counts = tf.math.bincount(ids, weights, minlength=width, maxlength=width, dtype=tf.float32, axis=-1)
        counts.set_shape([ids.shape[0], width])
        return counts

    def to_json(self) -> dict:
        return {"inputs": [[name, dtype, list(shape)] for name, dtype, shape in self.inputs],
                "label_slots": self.label_slots, "mask_slots": self.mask_slots, "num_classes": self.num_classes}

    @classmethod
    def from_json(cls, data: dict) -> "RowLayout":
        return cls(tuple((name, dtype, tuple(shape)) for name, dtype, shape in data["inputs"]), data["label_slots"],
                   data["mask_slots"], data["num_classes"])


class ParsedCache:
    """One key's cached rows under `root`.

    Args:
        root: the cache folder (a run's `cache/`, or a search's).
        key: what the rows are made from.
    """

    def __init__(self, root: str | Path, key: CacheKey):
        self.root, self.key = Path(root), key
        self.dir = self.root / f"{LAYOUT}-{key.digest()[:16]}"

    def files(self, split: str, shards: Iterable[str]) -> list:
        """The row files aligned with `shards` (of `split`)."""
        return [str(self.dir / split / (Path(shard).stem + SUFFIX)) for shard in shards]

    def open(self) -> None:
        """Makes the folder for this key (rebuilt if its `key.json` names another key), marks it as
        the most recently used, and removes the oldest caches beyond `KEPT`."""
        wanted = asdict(self.key)
        key_path = self.dir / KEY_FILE
        if key_path.exists() and _read_json(key_path) != json.loads(json.dumps(wanted)):
            shutil.rmtree(self.dir, ignore_errors=True)
        if not key_path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(key_path, wanted)
        os.utime(key_path)
        _evict(self.root, KEPT)

    def layout(self, split: str) -> Optional[RowLayout]:
        path = self.dir / split / ROWS_FILE
        return RowLayout.from_json(_read_json(path)) if path.exists() else None

    def save_layout(self, split: str, layout: RowLayout) -> RowLayout:
        """Records `split`'s layout, or returns the one recorded first (every writer computes the same)."""
        known = self.layout(split)
        if known is not None:
            return known
        atomic_write_json(self.dir / split / ROWS_FILE, layout.to_json())
        return layout

    def missing(self, files: list, records: list, layout: RowLayout) -> list:
        """Indices of the row files that are absent or not exactly their records' rows."""
        return [i for i, (path, count) in enumerate(zip(files, records))
                if not (os.path.exists(path) and os.path.getsize(path) == count * layout.record_bytes)]

    def write(self, target: str, rows: Iterable[np.ndarray], expected: int, layout: RowLayout) -> None:
        """Writes one shard's rows (int32 arrays) atomically; refuses a wrong count."""
        remove_stale_temps(Path(target).parent, older_than=STALE_SECONDS)
        with atomic_output(Path(target)) as tmp:
            with open(tmp, "wb") as out:
                for block in rows:
                    out.write(np.ascontiguousarray(block, dtype=np.int32).tobytes())
            if tmp.stat().st_size != expected * layout.record_bytes:
                raise RuntimeError(f"{target}: {tmp.stat().st_size // layout.record_bytes} rows for {expected} records")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _evict(root: Path, kept: int) -> None:
    """Removes all but the `kept` most recently used caches in `root`."""
    caches = [p for p in root.glob(f"{PREFIX}*") if p.is_dir()]
    caches.sort(key=lambda p: (p / KEY_FILE).stat().st_mtime if (p / KEY_FILE).exists() else 0.0, reverse=True)
    for old in caches[kept:]:
        shutil.rmtree(old, ignore_errors=True)

