"""The Open Images image-level mAP and the other metrics on verified labels, vectorised with numpy.

Every metric reads only the verified (image, class) pairs, about 10 per image: its one
implementation takes `VerifiedPairs` and one score per pair (`sparse_*`), so that a split of
any size is scored without a dense `[images, classes]` array. The dense entry points, on
`[images, classes]` scores and labels, pick the pairs out and call it.

Semantics (as tensorflow/models `OpenImagesChallengeEvaluator` with one whole-image box per
label, checked against `tests/data/oid_map_cases.json` to 1e-9):

* ground truth is the expanded verified labels: `1` positive, `0` negative, `-1` unverified;
* a class is scored only on images where it is verified; other scores are ignored;
* protocol `"challenge"`: a score of 0 is no prediction (as for a challenge submission);
  protocol `"study"`: every verified (image, class) is a detection with its score, 0 included
  (as when the evaluator is fed a full score matrix);
* AP is VOC all-point interpolated AP with `num_gt` = number of positives; classes without
  positives are NaN and left out of the mean.

Ties: the reference collects each class's detections in image order and ranks them with
`np.argsort(scores)[::-1]`. numpy's default sort is not stable (and may use SIMD kernels), so
among equal scores its order is whatever that sort gives. We rank classes whose scores are all
distinct in one vectorised sort and re-rank each class with a tie by calling `np.argsort` on the
same float64 array the reference builds. The image axis is the image order: pass images in
ImageID order to match the reference on ties. That order also depends on numpy's sort kernel
(numpy version, CPU features): we match the reference run with the same numpy on the same CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSITIVE, NEGATIVE, UNVERIFIED = 1, 0, -1
PROTOCOLS = ("challenge", "study")


def check_protocol(protocol: str) -> str:
    """Validates a scoring protocol name.

    Args:
        protocol: `"challenge"` (a score of 0 is no prediction) or `"study"` (every verified
            (image, class) is a detection, a score of 0 included).

    Returns:
        The protocol.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}. Received: {protocol!r}")
    return protocol


@dataclass(frozen=True)
class VerifiedPairs:
    """Expanded verified labels as (image, class) pairs, ordered by image, then class.

    The image axis is the metric's image order (ImageID order, to break ties as the reference).

    Args:
        rows: each pair's image, in `[0, num_images)`.
        classes: each pair's class, in `[0, num_classes)`.
        positive: each pair's label: True positive, False negative.
        num_images: images (an image may have no pair).
        num_classes: classes.

    Raises:
        ValueError: arrays of different lengths, or pairs out of range, out of order or repeated.
    """

    rows: np.ndarray
    classes: np.ndarray
    positive: np.ndarray
    num_images: int
    num_classes: int

    def __post_init__(self):
        if not len(self.rows) == len(self.classes) == len(self.positive):
            raise ValueError(f"rows, classes and positive must have one length. Received: {len(self.rows)}, "
                             f"{len(self.classes)} and {len(self.positive)}")
        if len(self.rows) == 0:
            return
        key = self.rows.astype(np.int64) * self.num_classes + self.classes
        if (self.rows.min() < 0 or self.rows.max() >= self.num_images or self.classes.min() < 0
                or self.classes.max() >= self.num_classes or np.any(key[1:] <= key[:-1])):
            raise ValueError(f"pairs must be distinct, in range ({self.num_images} images, {self.num_classes} "
                             f"classes) and ordered by image, then class. Received: images {self.rows.min()}.."
                             f"{self.rows.max()}, classes {self.classes.min()}..{self.classes.max()}")

    @classmethod
    def from_dense(cls, verified: np.ndarray) -> "VerifiedPairs":
        """The pairs of `[images, classes]` labels (1, 0 or -1 unverified)."""
        verified = np.asarray(verified)
        if verified.ndim != 2:
            raise ValueError(f"verified labels must be an [images, classes] array. Received shape {verified.shape}")
        flat = np.flatnonzero(verified.reshape(-1) != UNVERIFIED)  # row-major: by image, then class
        rows, classes = np.divmod(flat, verified.shape[1])
        return cls(rows, classes, verified.reshape(-1)[flat] == POSITIVE, *verified.shape)

    def __len__(self) -> int:
        return len(self.rows)

    def gather(self, dense: np.ndarray) -> np.ndarray:
        """The values of an `[images, classes]` array at the pairs."""
        dense = np.asarray(dense)
        if dense.shape != (self.num_images, self.num_classes):
            raise ValueError(f"scores and verified labels must be [images, classes] arrays of one shape. "
                             f"Received: {dense.shape} and {(self.num_images, self.num_classes)}")
        return dense.reshape(-1)[self.rows.astype(np.int64) * self.num_classes + self.classes]

    def select(self, images: np.ndarray) -> tuple["VerifiedPairs", np.ndarray]:
        """The pairs of some images, renumbered in the same order.

        Args:
            images: `[num_images]` bool, the images kept.

        Returns:
            `(pairs, kept)`: the kept images' pairs, and which pairs of `self` they are (bool).
        """
        kept = images[self.rows]
        renumbered = np.cumsum(images) - 1
        return VerifiedPairs(renumbered[self.rows[kept]], self.classes[kept], self.positive[kept],
                             int(images.sum()), self.num_classes), kept

    def positives_per_class(self) -> np.ndarray:
        return np.bincount(self.classes[self.positive], minlength=self.num_classes)

    def negatives_per_class(self) -> np.ndarray:
        return np.bincount(self.classes[~self.positive], minlength=self.num_classes)


def dense_pairs(scores: np.ndarray, verified: np.ndarray) -> tuple[VerifiedPairs, np.ndarray]:
    """`[images, classes]` scores and labels as pairs and one score per pair (the sparse form)."""
    scores, verified = np.asarray(scores), np.asarray(verified)
    if scores.ndim != 2 or scores.shape != verified.shape:
        raise ValueError(f"scores and verified labels must be [images, classes] arrays of one shape. "
                         f"Received: {scores.shape} and {verified.shape}")
    pairs = VerifiedPairs.from_dense(verified)
    return pairs, pairs.gather(scores)


def _pair_scores(pairs: VerifiedPairs, scores: np.ndarray) -> np.ndarray:
    """The scores as float64 (the reference's dtype, which decides its order of ties), one per pair."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(pairs),):
        raise ValueError(f"scores must hold one value per verified pair ({len(pairs)}). Received shape {scores.shape}")
    return scores


def _rank(cls: np.ndarray, score: np.ndarray, num_classes: int) -> np.ndarray:
    """Ranks detections (in image order) as the reference does.

    Returns:
        Indices into the detections: classes ascending, and within a class the order
        `np.argsort(class_scores)[::-1]` gives on the class's scores in image order.
    """
    key = cls.astype(np.min_scalar_type(num_classes))  # small ints: a stable sort is a radix sort
    order = np.argsort(-score)
    order = order[np.argsort(key[order], kind="stable")]
    ranked_cls, ranked = cls[order], score[order]
    # Any class not strictly decreasing (a tie, or a NaN) is ranked per class below.
    tied = (ranked_cls[1:] == ranked_cls[:-1]) & ~(ranked[:-1] > ranked[1:])
    if tied.any():
        _rerank_classes(order, key, score, np.unique(ranked_cls[1:][tied]))
    return order


def _rerank_classes(order: np.ndarray, key: np.ndarray, score: np.ndarray, classes: np.ndarray) -> None:
    """Re-ranks the given classes in `order`, in place, with the reference's own sort.

    Args:
        order: the ranking from `_rank` (classes ascending).
        key: each detection's class, detections in image order.
        score: each detection's score.
        classes: the classes to re-rank.
    """
    by_class = np.argsort(key, kind="stable")  # classes ascending, image order within a class
    counts = np.bincount(key)
    ends = np.cumsum(counts)
    starts = ends - counts
    for c in classes.tolist():
        members = by_class[starts[c]:ends[c]]
        order[starts[c]:ends[c]] = members[np.argsort(score[members])[::-1]]


def _running_counts(cls: np.ndarray, hit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts along ranked detections grouped by class.

    Args:
        cls: each detection's class, equal classes adjacent.
        hit: whether each detection is a positive.

    Returns:
        `(starts, tp, rank)`: where each class's run starts, and at each detection the positives
        so far in its class and its 1-based rank in its class.
    """
    starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]])
    lengths = np.diff(np.r_[starts, len(cls)])
    cum_hits = np.cumsum(hit)
    tp = cum_hits - np.repeat(np.r_[0, cum_hits][starts], lengths)
    rank = np.arange(len(cls)) - np.repeat(starts, lengths) + 1
    return starts, tp, rank


def _ranked_average_precisions(cls: np.ndarray, hit: np.ndarray, num_gt: np.ndarray) -> np.ndarray:
    """VOC all-point AP per class from ranked detections (classes ascending).

    Args:
        cls: each ranked detection's class.
        hit: whether each ranked detection is a positive.
        num_gt: the number of positives per class.

    Returns:
        `[classes]` AP, NaN where a class has no positive.
    """
    num_classes = len(num_gt)
    ap = np.full(num_classes, np.nan)
    has_gt = num_gt > 0
    ap[has_gt] = 0.0
    if len(cls) == 0:
        return ap
    _, tp, rank = _running_counts(cls, hit)
    precision = tp / rank
    # Precision made non-increasing from the right, within each class: a reverse running max
    # where every later-in-reverse class gets a larger offset than any earlier value.
    offset = 2.0 * (cls.max() - cls)
    interpolated = np.maximum.accumulate((precision + offset)[::-1])[::-1] - offset
    sums = np.bincount(cls, weights=np.where(hit, interpolated, 0.0), minlength=num_classes)
    ap[has_gt] = sums[has_gt] / num_gt[has_gt]
    return ap


def sparse_average_precisions(pairs: VerifiedPairs, scores: np.ndarray, protocol: str = "challenge") -> np.ndarray:
    """Per-class AP under the Open Images protocol.

    Args:
        pairs: the verified pairs, images in ImageID order (the reference's order, which decides ties).
        scores: one predicted score per pair.
        protocol: `"challenge"` (a score of 0 is no prediction) or `"study"` (every verified
            (image, class) is a detection, a score of 0 included).

    Returns:
        `[classes]` AP, NaN where a class has no positive.
    """
    check_protocol(protocol)
    cls, score, hit = pairs.classes, _pair_scores(pairs, scores), pairs.positive
    num_gt = pairs.positives_per_class()
    if protocol == "challenge":
        keep = score > 0
        cls, score, hit = cls[keep], score[keep], hit[keep]
    order = _rank(cls, score, pairs.num_classes)
    return _ranked_average_precisions(cls[order], hit[order], num_gt)


def sparse_mean_average_precision(pairs: VerifiedPairs, scores: np.ndarray, protocol: str = "challenge") -> float:
    """The mean of `sparse_average_precisions` over classes with at least one positive (NaN if none).

    Args:
        pairs: the verified pairs, images in ImageID order.
        scores: one predicted score per pair.
        protocol: `"challenge"` or `"study"`, as for `sparse_average_precisions`.

    Returns:
        The mAP.
    """
    ap = sparse_average_precisions(pairs, scores, protocol)
    return float(np.nanmean(ap)) if np.any(~np.isnan(ap)) else float("nan")


def sparse_top_k_scores(pairs: VerifiedPairs, scores: np.ndarray, k: int) -> dict:
    """Precision, recall and F1 at top-k, ranking each image's verified classes only.

    Images without a verified positive are skipped. Precision divides by `min(k, verified classes)`.
    Equal scores rank in class order.

    Args:
        pairs: the verified pairs.
        scores: one predicted score per pair.
        k: how many classes each image predicts.

    Returns:
        `{"precision@k": ..., "recall@k": ..., "f1@k": ...}`.
    """
    score = _pair_scores(pairs, scores)
    order = np.lexsort((-score, pairs.rows))  # by image, then score descending; stable: ties in class order
    rows = pairs.rows[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    hit = (rank < k) & pairs.positive[order] & np.isfinite(score[order])
    n = pairs.num_images
    hits = np.bincount(rows[hit], minlength=n)
    positives = np.bincount(pairs.rows[pairs.positive], minlength=n)
    judged = np.minimum(k, np.bincount(pairs.rows, minlength=n))
    keep = positives > 0
    precision = float(np.mean(hits[keep] / judged[keep])) if keep.any() else float("nan")
    recall = float(np.mean(hits[keep] / positives[keep])) if keep.any() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {f"precision@{k}": precision, f"recall@{k}": recall, f"f1@{k}": f1}


def sparse_threshold_scores(pairs: VerifiedPairs, scores: np.ndarray, thresholds) -> dict:
    """Micro and macro F1 and Hamming loss on verified labels.

    Args:
        pairs: the verified pairs.
        scores: one predicted score per pair.
        thresholds: one threshold, or one per class; a score at or above it predicts the class.

    Returns:
        `{"micro_f1": ..., "macro_f1": ..., "hamming_loss": ...}`.
    """
    score = _pair_scores(pairs, scores)
    c = pairs.num_classes
    predicted = score >= np.broadcast_to(np.asarray(thresholds, dtype=float), (c,))[pairs.classes]
    truth = pairs.positive
    tp = np.bincount(pairs.classes[predicted & truth], minlength=c).astype(float)
    fp = np.bincount(pairs.classes[predicted & ~truth], minlength=c).astype(float)
    fn = np.bincount(pairs.classes[~predicted & truth], minlength=c).astype(float)
    micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1.0)
    has_pos = pairs.positives_per_class() > 0
    per_class = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    hamming = float((fp.sum() + fn.sum()) / max(len(pairs), 1))
    return {"micro_f1": float(micro), "macro_f1": float(per_class[has_pos].mean()) if has_pos.any() else float("nan"),
            "hamming_loss": hamming}


def sparse_tune_class_thresholds(pairs: VerifiedPairs, scores: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per-class thresholds that maximise F1 on verified labels (e.g. of the validation split).

    Each class's threshold is the score of the first of its pairs, ranked by score (ties in image
    order), whose F1 is the class's highest. Classes without a verified positive keep `default`.

    Args:
        pairs: the verified pairs.
        scores: one predicted score per pair.
        default: the threshold of classes without a positive.

    Returns:
        `[classes]` thresholds.
    """
    score = _pair_scores(pairs, scores)
    order = np.lexsort((-score, pairs.classes))  # by class, then score descending; stable: ties in image order
    cls, ranked, hit = pairs.classes[order], score[order], pairs.positive[order]
    thresholds = np.full(pairs.num_classes, float(default))
    if not len(cls):
        return thresholds
    starts, tp, rank = _running_counts(cls, hit)
    positives = pairs.positives_per_class()
    f1 = 2 * tp / (rank + positives[cls])
    lengths = np.diff(np.r_[starts, len(cls)])
    best = np.maximum.reduceat(f1, starts)
    first_best = np.minimum.reduceat(np.where(f1 == np.repeat(best, lengths), np.arange(len(cls)), len(cls)), starts)
    has_pos = positives[cls[starts]] > 0
    thresholds[cls[starts][has_pos]] = ranked[first_best[has_pos]]
    return thresholds


def sparse_summary_metrics(pairs: VerifiedPairs, scores: np.ndarray, thresholds=0.5,
                           protocol: str = "challenge") -> dict:
    """mAP plus the top-k, threshold and Hamming metrics, on verified labels.

    Args:
        pairs: the verified pairs, images in ImageID order.
        scores: one predicted score per pair.
        thresholds: one threshold, or one per class, for the threshold metrics.
        protocol: the mAP's protocol, `"challenge"` or `"study"` (the other metrics have none).

    Returns:
        `{"map": ..., "precision@1": ..., ...}`.
    """
    out = {"map": sparse_mean_average_precision(pairs, scores, protocol)}
    for k in (1, 3, 5):
        out.update(sparse_top_k_scores(pairs, scores, k))
    out.update(sparse_threshold_scores(pairs, scores, thresholds))
    return out


# Dense entry points: `[images, classes]` scores and labels (1, 0 or -1 unverified), images in
# ImageID order. Each picks the verified pairs out and calls its sparse counterpart.


def average_precisions(scores: np.ndarray, verified: np.ndarray, protocol: str = "challenge") -> np.ndarray:
    """`sparse_average_precisions` on `[images, classes]` scores and labels: `[classes]` AP."""
    check_protocol(protocol)
    return sparse_average_precisions(*dense_pairs(scores, verified), protocol)


def mean_average_precision(scores: np.ndarray, verified: np.ndarray, protocol: str = "challenge") -> float:
    """`sparse_mean_average_precision` on `[images, classes]` scores and labels."""
    check_protocol(protocol)
    return sparse_mean_average_precision(*dense_pairs(scores, verified), protocol)


def top_k_scores(scores: np.ndarray, verified: np.ndarray, k: int) -> dict:
    """`sparse_top_k_scores` on `[images, classes]` scores and labels."""
    return sparse_top_k_scores(*dense_pairs(scores, verified), k)


def threshold_scores(scores: np.ndarray, verified: np.ndarray, thresholds) -> dict:
    """`sparse_threshold_scores` on `[images, classes]` scores and labels."""
    return sparse_threshold_scores(*dense_pairs(scores, verified), thresholds)


def tune_class_thresholds(scores: np.ndarray, verified: np.ndarray, default: float = 0.5) -> np.ndarray:
    """`sparse_tune_class_thresholds` on `[images, classes]` scores and labels."""
    return sparse_tune_class_thresholds(*dense_pairs(scores, verified), default)


def summary_metrics(scores: np.ndarray, verified: np.ndarray, thresholds=0.5, protocol: str = "challenge") -> dict:
    """`sparse_summary_metrics` on `[images, classes]` scores and labels."""
    check_protocol(protocol)
    return sparse_summary_metrics(*dense_pairs(scores, verified), thresholds, protocol)
