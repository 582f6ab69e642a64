"""A split's ground truth for evaluation, read from its shards in one streaming pass, kept sparse.

Per photo: its ImageID (as a uint64), tag language (a code) and whether it has tags. Per verified
(image, class) pair, the only entries the metrics read (about 10 a photo): the class, the label and
the machine-label confidence. A split costs about 150 bytes a photo, where dense `[photos, 500]`
labels and machine labels cost 2.5 KB. Photos are in ImageID order (the metric's order of ties);
`PairScores` keeps a model's score at each pair from batches in shard order, as `make_dataset`
streams them, so no `[photos, classes]` score matrix is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import tensorflow as tf

from app.records import schema
from app.records.dataset import DatasetError, DatasetInfo
from app.evaluation.image_ids import order_keys
from app.evaluation.metrics import VerifiedPairs

TRUTH_KEYS = ["image_id", "verified_pos", "verified_neg", "machine_ids", "machine_scores", "language", "tags"]
BATCH = 4096


@dataclass
class SplitTruth:
    """A split's verified labels as pairs, the machine labels at those pairs, and per-photo facts.

    Args:
        pairs: the verified pairs, photos in ImageID order.
        machine: float32 machine-label confidence at each pair (0 where there is none).
        image_ids: uint64 ImageID keys in the ids' order (`app.evaluation.image_ids.order_keys`), ascending.
        languages: each photo's tag language, an index into `language_codes`.
        language_codes: ISO 639-1 codes (`un`: undetected).
        has_tags: whether each photo has tags.
        shard_rows: int32, the ImageID-order row of each photo in shard order.
    """

    pairs: VerifiedPairs
    machine: np.ndarray
    image_ids: np.ndarray
    languages: np.ndarray
    language_codes: list
    has_tags: np.ndarray
    shard_rows: np.ndarray

    @property
    def num_images(self) -> int:
        return self.pairs.num_images

    def language_is(self, code: str) -> np.ndarray:
        """`[photos]` bool: the photos whose tag language is `code`."""
        if code not in self.language_codes:
            return np.zeros(self.num_images, dtype=bool)
        return self.languages == self.language_codes.index(code)


def _batches(info: DatasetInfo, split: str, keys: list) -> Iterator[dict]:
    """A split's records in shard order, parsed `BATCH` at a time (only `keys`)."""
    ds = tf.data.TFRecordDataset(info.shard_files(split)).batch(BATCH)
    yield from ds.map(lambda s: schema.parse_batch(s, keys), num_parallel_calls=tf.data.AUTOTUNE).prefetch(1)


def _batch_pairs(ex: dict, num_classes: int, where: str) -> VerifiedPairs:
    """A parsed batch's verified pairs (rows within the batch); a class both positive and negative is positive."""
    pos, neg = ex["verified_pos"], ex["verified_neg"]
    rows = np.concatenate([pos.value_rowids().numpy(), neg.value_rowids().numpy()])
    classes = np.concatenate([pos.flat_values.numpy(), neg.flat_values.numpy()])
    positive = np.arange(len(classes)) < len(pos.flat_values)
    if len(classes) and (classes.min() < 0 or classes.max() >= num_classes):
        raise DatasetError(f"{where}: a verified label of class {classes.min()}..{classes.max()}, outside the "
                           f"dataset's {num_classes} classes; re-run `python app/prepare.py`")
    key = rows * num_classes + classes
    order = np.lexsort((~positive, key))  # each pair's positive label first
    key, positive = key[order], positive[order]
    first = np.r_[True, key[1:] != key[:-1]]
    key = key[first]
    return VerifiedPairs(key // num_classes, key % num_classes, positive[first], int(pos.nrows()), num_classes)


def _machine_at(ex: dict, pairs: VerifiedPairs) -> np.ndarray:
    """float32 machine confidence at each of a batch's pairs (repeats add up, as dense rows did)."""
    ids = ex["machine_ids"]
    key = ids.value_rowids().numpy() * pairs.num_classes + ids.flat_values.numpy()
    pair_key = pairs.rows * pairs.num_classes + pairs.classes
    at = np.minimum(np.searchsorted(pair_key, key), max(len(pair_key) - 1, 0))
    found = pair_key[at] == key if len(pair_key) else np.zeros(len(key), dtype=bool)
    machine = np.zeros(len(pairs), dtype=np.float32)
    np.add.at(machine, at[found], ex["machine_scores"].flat_values.numpy()[found])
    return machine


def _image_ids(ex: dict) -> pa.Array:
    """A batch's ImageIDs (any form: collections name photos freely)."""
    return pa.array(ex["image_id"].numpy(), type=pa.binary())


def load_truth(info: DatasetInfo, split: str) -> SplitTruth:
    """Reads a split's ground truth in one streaming pass over its shards.

    Args:
        info: the dataset.
        split: `train`, `validation` or `test`.

    Returns:
        The split's truth, photos in ImageID order.

    Raises:
        DatasetError: a class index outside the dataset's classes.
    """
    where, c = f"{info.data_dir} ({split} split)", info.num_classes
    parts: dict = {k: [] for k in ("rows", "classes", "positive", "machine", "ids", "languages", "has_tags")}
    codes: dict = {}
    seen = 0
    for ex in _batches(info, split, TRUTH_KEYS):
        pairs = _batch_pairs(ex, c, where)
        languages, inverse = np.unique(ex["language"].numpy(), return_inverse=True)
        known = np.array([codes.setdefault(code.decode(), len(codes)) for code in languages], dtype=np.uint16)
        for key, value in (("rows", (pairs.rows + seen).astype(np.int32)), ("classes", pairs.classes.astype(np.int32)),
                           ("positive", pairs.positive),
                           ("machine", _machine_at(ex, pairs)), ("ids", _image_ids(ex)),
                           ("languages", known[inverse.reshape(-1)]),
                           ("has_tags", (ex["tags"].row_lengths() > 0).numpy())):
            parts[key].append(value)
        seen += pairs.num_images
    ids = order_keys(pa.concat_arrays(parts.pop("ids")) if parts["ids"] else pa.array([], pa.binary()))
    return _in_image_id_order({"ids": ids, **{k: _concatenate(v) for k, v in parts.items()}}, list(codes), c)


def _concatenate(parts: list) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _in_image_id_order(arrays: dict, language_codes: list, num_classes: int) -> SplitTruth:
    """The split's arrays (in shard order) with photos sorted by ImageID, and pairs by photo, then class."""
    n = len(arrays["ids"])
    order = np.argsort(arrays["ids"], kind="stable")
    shard_rows = np.empty(n, dtype=np.int32)
    shard_rows[order] = np.arange(n, dtype=np.int32)
    rows = shard_rows[arrays["rows"]]
    by_photo = np.argsort(rows.astype(np.int64) * num_classes + arrays["classes"], kind="stable")
    class_type = np.int16 if num_classes < 2**15 else np.int32
    pairs = VerifiedPairs(rows[by_photo], arrays["classes"][by_photo].astype(class_type),
                          arrays["positive"][by_photo].astype(bool), n, num_classes)
    return SplitTruth(pairs, arrays["machine"][by_photo].astype(np.float32), arrays["ids"][order].astype(np.uint64),
                      arrays["languages"][order].astype(np.uint16), language_codes,
                      arrays["has_tags"][order].astype(bool), shard_rows)


def class_counts(info: DatasetInfo, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Verified positives and negatives per class in a split, streamed (nothing kept per photo).

    Returns:
        `([classes] positives, [classes] negatives)`.
    """
    c = info.num_classes
    positives, negatives = np.zeros(c, dtype=np.int64), np.zeros(c, dtype=np.int64)
    for ex in _batches(info, split, ["verified_pos", "verified_neg"]):
        pairs = _batch_pairs(ex, c, f"{info.data_dir} ({split} split)")
        positives += pairs.positives_per_class()
        negatives += pairs.negatives_per_class()
    return positives, negatives


class PairScores:
    """A model's score at each verified pair of a split, collected from batches in shard order.

    Args:
        truth: the split's ground truth.
    """

    def __init__(self, truth: SplitTruth):
        self.truth = truth
        self.values = np.zeros(len(truth.pairs), dtype=np.float32)
        self._starts = np.searchsorted(truth.pairs.rows, np.arange(truth.num_images + 1))  # each photo's first pair
        self.seen = 0

    def add(self, scores: np.ndarray) -> None:
        """Keeps the scores of the split's next photos at their pairs.

        Args:
            scores: `[batch, classes]` scores of the next `batch` photos in shard order.
        """
        scores = np.asarray(scores)
        n, truth = len(scores), self.truth
        if scores.shape[1:] != (truth.pairs.num_classes,) or self.seen + n > truth.num_images:
            raise ValueError(f"expected [batch, {truth.pairs.num_classes}] scores for at most "
                             f"{truth.num_images - self.seen} more photos. Received shape {scores.shape}")
        rows = truth.shard_rows[self.seen:self.seen + n]
        first = self._starts[rows]
        counts = self._starts[rows + 1] - first
        ends = np.cumsum(counts)
        where = np.arange(ends[-1] if n else 0) + np.repeat(first - (ends - counts), counts)
        self.values[where] = scores[np.repeat(np.arange(n), counts), truth.pairs.classes[where]]
        self.seen += n

    def result(self) -> np.ndarray:
        """float32 score at each pair, pairs in the truth's order.

        Raises:
            ValueError: fewer photos were scored than the split holds.
        """
        if self.seen != self.truth.num_images:
            raise ValueError(f"scored {self.seen} photos, but the split holds {self.truth.num_images}")
        return self.values
