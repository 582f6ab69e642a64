"""Tiny text encoders the tests build themselves: a SavedModel and a Keras model mapping strings to vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

BUCKETS = 64


class TinySavedModelEncoder(tf.Module):
    """Known words -> their given vectors; any other text -> a fixed random vector of its hash bucket.

    Args:
        rows: `{word: vector}` (words given the same vector are perfect synonyms).
        dim: the vector size.
        seed: seed of the bucket vectors.
    """

    def __init__(self, rows: dict, dim: int, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        known = np.array([rows[w] for w in rows], np.float32).reshape(len(rows), dim)
        self.vectors = tf.Variable(np.concatenate([known, rng.normal(size=(BUCKETS, dim)).astype(np.float32)]))
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(rows)), tf.range(len(rows), dtype=tf.int64)), -1)
        self.known = len(rows)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, texts):
        ids = self.table.lookup(texts)
        hashed = self.known + tf.strings.to_hash_bucket_fast(texts, BUCKETS)
        return tf.gather(self.vectors, tf.where(ids >= 0, ids, hashed))


def save_tiny_encoder(path: Path, rows: dict, dim: int, seed: int = 0) -> Path:
    """Writes a `TinySavedModelEncoder` as a SavedModel folder."""
    tf.saved_model.save(TinySavedModelEncoder(rows, dim, seed), str(path))
    return path


def one_hot_rows(groups: list, dim: int) -> dict:
    """`{word: vector}` where the words of `groups[i]` share the unit vector `e_i` (synonyms)."""
    return {word: np.eye(dim, dtype=np.float32)[i] for i, group in enumerate(groups) for word in group}
