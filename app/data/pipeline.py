"""tf.data pipelines over prepared shards: parse, tags -> ids, decode images, batch, prefetch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from app.data import records
from app.data.oid import read_classes
from app.data.preprocess import TagLookup, decode_images
from app.data.tags import Vocabulary, build_vocabulary

AUTOTUNE = tf.data.AUTOTUNE


@dataclass
class DatasetInfo:
    """What a prepared dataset folder holds beside its shards."""

    data_dir: Path
    classes: list  # (mid, name)
    vocab: Vocabulary
    lowercase: bool
    split_sizes: dict

    @classmethod
    def load(cls, data_dir: str | Path) -> "DatasetInfo":
        data_dir = Path(data_dir)
        if not (data_dir / "stats.json").exists():
            raise FileNotFoundError(f"{data_dir}: not a prepared dataset (no stats.json); run `python app/prepare.py`")
        stats = json.loads((data_dir / "stats.json").read_text())
        return cls(data_dir, read_classes(data_dir / "classes.csv"), Vocabulary.load(data_dir / "vocab.tsv"),
                   bool(stats["config"].get("lowercase", False)),
                   {split: c["images"] for split, c in stats["splits"].items()})

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def vocabulary(self, limit: int, threshold: int) -> Vocabulary:
        """The saved vocabulary if it matches, else one rebuilt from the train split's tags."""
        if (limit, threshold) == (self.vocab.limit, self.vocab.threshold):
            return self.vocab
        return build_vocabulary(read_tags(self.data_dir, "train"), limit, threshold)


def read_tags(data_dir: str | Path, split: str) -> list:
    """All photos' tag lists of a split, in shard order (for vocabularies)."""
    ds = tf.data.TFRecordDataset(records.shard_files(data_dir, split)).batch(4096)
    out = []
    for batch in ds.map(lambda s: records.parse_batch(s, ["tags"])["tags"]):
        out.extend([[t.decode("utf-8") for t in row] for row in batch.to_list()])
    return out


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
) -> tf.data.Dataset:
    """Batches of `(inputs, targets, loss_mask)` from a split's shards.

    Args:
        info: the dataset folder.
        split: `train`, `validation` or `test`.
        lookup: maps tags to ids; None for image-only models.
        image_size: decode images at this size; None to skip images.
        batch_size: per-replica batch size.
        training: shuffle (seeded) and drop nothing; evaluation keeps shard order.
        seed: shuffle seed (vary it per epoch for a new order).
        verified_only: the loss mask is 1 only on verified (positive or negative) labels.
        input_context: under a distribution strategy, each input pipeline reads its own shards.
        shuffle_buffer: shuffle buffer size.
        repeat: repeat forever before batching, so that every batch is full (a step then has
            the same examples whatever the number of replicas).

    Returns:
        A dataset of `(inputs dict, targets [b, C], loss_mask [b, C])`.
    """
    files = records.shard_files(info.data_dir, split)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) < input_context.num_input_pipelines:
            raise ValueError(f"{split} has {len(files)} shards for {input_context.num_input_pipelines} workers; "
                             f"prepare with more shards (--records-per-shard)")
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if training:
        ds = ds.shuffle(len(files), seed=seed)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)), num_parallel_calls=AUTOTUNE,
                           deterministic=True)
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    else:  # shard order, as `load_eval_arrays` reads it
        ds = ds.flat_map(tf.data.TFRecordDataset)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size)
    num_classes = info.num_classes

    keys = ["label_ids", "label_targets"]  # parse only what this pipeline uses
    keys += ["tags"] if lookup is not None else []
    keys += ["image"] if image_size is not None else []
    keys += ["verified_pos", "verified_neg"] if verified_only else []

    def to_inputs(serialized):
        ex = records.parse_batch(serialized, keys)
        inputs = {}
        if lookup is not None:
            inputs["tag_ids"] = lookup(ex["tags"], cleaned=True)  # prepare cleaned them
        if image_size is not None:
            inputs["image"], _ = decode_images(ex["image"], image_size)
        targets = dense_rows(ex["label_ids"], ex["label_targets"], num_classes)
        if verified_only:
            mask = dense_rows(ex["verified_pos"], None, num_classes) + dense_rows(ex["verified_neg"], None, num_classes)
        else:
            mask = tf.ones_like(targets)
        return inputs, targets, mask

    return ds.map(to_inputs, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)


@dataclass
class EvalArrays:
    """A split's ground truth as arrays, for the Open Images metric and the baselines."""

    image_ids: np.ndarray
    verified: np.ndarray  # [N, C] int8: 1, 0 or -1 (unverified)
    machine: np.ndarray  # [N, C] float32 machine-label confidence, 0 where none
    languages: np.ndarray
    has_tags: np.ndarray


def load_eval_arrays(info: DatasetInfo, split: str) -> EvalArrays:
    """Reads a split's verified labels, machine labels, languages and tag presence in shard order."""
    keys = ["image_id", "verified_pos", "verified_neg", "machine_ids", "machine_scores", "language", "tags"]
    ds = tf.data.TFRecordDataset(records.shard_files(info.data_dir, split)).batch(4096)
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
