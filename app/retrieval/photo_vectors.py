"""Photo vectors in the text encoder's space, streamed from a prepared dataset split, a batch at a time.

Two sources:
    tags   no training: a photo's vector is the mean of its tags' encoder vectors (the cosine baseline);
           a photo without tags has none and is counted (`no_tags`), not indexed.
    model  a trained run with an embedding head (`embed` output, app/model/classifier.py): the photo as
           the model reads it (image, tags, text).
"""

from __future__ import annotations

import collections
from typing import Iterator

import numpy as np

from app.badrows import BadRows
from app.records import schema
from app.records.dataset import DatasetInfo
from app.text.encoders import encode_words

BATCH = 512
TAG_CACHE = 50_000  # tag vectors kept in memory (an LRU: memory bounded whatever the number of photos)


class TagVectors:
    """Encoder vectors of words, cached (least recently used dropped first)."""

    def __init__(self, encoder, capacity: int = TAG_CACHE):
        self.encoder, self.capacity = encoder, capacity
        self._cache: collections.OrderedDict = collections.OrderedDict()

    def lookup(self, words: list) -> dict:
        """`{word: unit vector}` for every distinct word in `words`."""
        missing = [w for w in dict.fromkeys(words) if w not in self._cache]
        if missing:
            for word, vector in zip(missing, encode_words(self.encoder, missing, progress=False).vectors):
                self._cache[word] = vector
        out = {}
        for word in dict.fromkeys(words):
            self._cache.move_to_end(word)
            out[word] = self._cache[word]
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return out


def mean_tag_vectors(rows: list, table: dict, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's normalised mean tag vector `[n, dim]`, and which rows had any tag `[n]` bool."""
    out = np.zeros((len(rows), dim), np.float32)
    has = np.zeros(len(rows), bool)
    for i, tags in enumerate(rows):
        if tags:
            v = np.mean([table[t] for t in tags], axis=0)
            out[i] = v / max(float(np.linalg.norm(v)), 1e-12)
            has[i] = True
    return out, has


def tag_photo_vectors(info: DatasetInfo, split: str, encoder, bad: BadRows,
                      batch: int = BATCH) -> Iterator[tuple[list, np.ndarray]]:
    """Streams `(ids, vectors)` batches: each photo's mean tag vector (photos without tags counted in `bad`)."""
    words = TagVectors(encoder)
    for ex in _batches(info, split, ["image_id", "tags"], batch):
        ids = [i.decode("utf-8") for i in ex["image_id"].numpy()]
        rows = [[t.decode("utf-8") for t in row] for row in ex["tags"].to_list()]
        table = words.lookup([t for row in rows for t in row])
        vectors, has = mean_tag_vectors(rows, table, encoder.dim)
        if not has.all():
            bad.skip_many("no_tags", f"{info.data_dir}/{split}", [0] * int((~has).sum()),
                          [i for i, h in zip(ids, has) if not h])
        yield [i for i, h in zip(ids, has) if h], vectors[has]


def model_photo_vectors(run, head, info: DatasetInfo, split: str,
                        batch: int = BATCH) -> Iterator[tuple[list, np.ndarray]]:
    """Streams `(ids, vectors)` batches: the run's embedding head's output for each photo of the split."""
    import tensorflow as tf

    call = tf.function(lambda x: head.model(x, training=False), reduce_retracing=True)
    keys = ["image_id"] + run.preprocessor.record_keys()
    for ex in _batches(info, split, keys, batch):
        ids = [i.decode("utf-8") for i in ex.pop("image_id").numpy()]
        inputs, _ = run.preprocessor(ex, cleaned=True)
        yield ids, np.asarray(call({k: v for k, v in inputs.items() if k in head.model.input}), np.float32)


def _batches(info: DatasetInfo, split: str, keys: list, batch: int) -> Iterator[dict]:
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(info.shard_files(split)).batch(batch)
    yield from ds.map(lambda s: schema.parse_batch(s, keys)).prefetch(1)
