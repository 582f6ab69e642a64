"""The Open Images image-level mAP, vectorised with numpy.

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


def _detections(scores: np.ndarray, verified: np.ndarray, protocol: str) -> tuple:
    """The detections the reference evaluator sees, ordered by image, then class.

    Returns:
        `(cls, score, hit, num_gt)`: each detection's class, float64 score and whether its label
        is positive, and the number of positives per class.
    """
    scores = np.asarray(scores, dtype=np.float64)
    verified = np.asarray(verified)
    if scores.ndim != 2 or scores.shape != verified.shape:
        raise ValueError(f"scores and verified labels must be [images, classes] arrays of one shape. "
                         f"Received: {scores.shape} and {verified.shape}")
    # Work on the verified entries only (about 10 per image), never on dense [images, classes] arrays.
    flat = np.flatnonzero(verified.reshape(-1) != UNVERIFIED)  # row-major: by image, then class
    cls = flat % scores.shape[1]
    hit = verified.reshape(-1)[flat] == POSITIVE
    num_gt = np.bincount(cls[hit], minlength=scores.shape[1])
    score = scores.reshape(-1)[flat]
    if protocol == "challenge":
        keep = score > 0
        cls, score, hit = cls[keep], score[keep], hit[keep]
    return cls, score, hit, num_gt


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
    starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]])
    lengths = np.diff(np.r_[starts, len(cls)])
    cum_hits = np.cumsum(hit)
    tp = cum_hits - np.repeat(np.r_[0, cum_hits][starts], lengths)
    rank = np.arange(len(cls)) - np.repeat(starts, lengths) + 1
    precision = tp / rank
    # Precision made non-increasing from the right, within each class: a reverse running max
    # where every later-in-reverse class gets a larger offset than any earlier value.
    offset = 2.0 * (cls.max() - cls)
    interpolated = np.maximum.accumulate((precision + offset)[::-1])[::-1] - offset
    sums = np.bincount(cls, weights=np.where(hit, interpolated, 0.0), minlength=num_classes)
    ap[has_gt] = sums[has_gt] / num_gt[has_gt]
    return ap


def average_precisions(scores: np.ndarray, verified: np.ndarray, protocol: str = "challenge") -> np.ndarray:
    """Per-class AP under the Open Images protocol.

    Args:
        scores: `[images, classes]` predicted scores, images in ImageID order (the reference's
            order, which decides ties).
        verified: `[images, classes]` expanded labels: 1, 0 or -1 (unverified).
        protocol: `"challenge"` (a score of 0 is no prediction) or `"study"` (every verified
            (image, class) is a detection, a score of 0 included).

    Returns:
        `[classes]` AP, NaN where a class has no positive.
    """
    check_protocol(protocol)
    cls, score, hit, num_gt = _detections(scores, verified, protocol)
    order = _rank(cls, score, len(num_gt))
    return _ranked_average_precisions(cls[order], hit[order], num_gt)


def mean_average_precision(scores: np.ndarray, verified: np.ndarray, protocol: str = "challenge") -> float:
    """The mean of `average_precisions` over classes with at least one positive (NaN if none).

    Args:
        scores: `[images, classes]` predicted scores, images in ImageID order.
        verified: `[images, classes]` expanded labels: 1, 0 or -1 (unverified).
        protocol: `"challenge"` or `"study"`, as for `average_precisions`.

    Returns:
        The mAP.
    """
    ap = average_precisions(scores, verified, protocol)
    return float(np.nanmean(ap)) if np.any(~np.isnan(ap)) else float("nan")


def top_k_scores(scores: np.ndarray, verified: np.ndarray, k: int) -> dict:
    """Precision, recall and F1 at top-k, ranking each image's verified classes only.

    Images without a verified positive are skipped. Precision divides by `min(k, verified classes)`.
    """
    masked = np.where(verified != UNVERIFIED, scores, -np.inf)
    top = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(scores))[:, None]
    hits = (verified[rows, top] == POSITIVE) & np.isfinite(masked[rows, top])
    positives = (verified == POSITIVE).sum(axis=1)
    judged = np.minimum(k, (verified != UNVERIFIED).sum(axis=1))
    keep = positives > 0
    precision = float(np.mean(hits[keep].sum(1) / judged[keep])) if keep.any() else float("nan")
    recall = float(np.mean(hits[keep].sum(1) / positives[keep])) if keep.any() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {f"precision@{k}": precision, f"recall@{k}": recall, f"f1@{k}": f1}


def threshold_scores(scores: np.ndarray, verified: np.ndarray, thresholds) -> dict:
    """Micro and macro F1 and Hamming loss on verified labels, at one threshold or one per class."""
    judged = verified != UNVERIFIED
    predicted = scores >= np.broadcast_to(np.asarray(thresholds, dtype=float), scores.shape[1:])
    truth = verified == POSITIVE
    tp = (predicted & truth & judged).sum(0).astype(float)
    fp = (predicted & ~truth & judged).sum(0).astype(float)
    fn = (~predicted & truth & judged).sum(0).astype(float)
    micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1.0)
    has_pos = truth.sum(0) > 0
    per_class = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    hamming = float((fp.sum() + fn.sum()) / max(judged.sum(), 1))
    return {"micro_f1": float(micro), "macro_f1": float(per_class[has_pos].mean()) if has_pos.any() else float("nan"),
            "hamming_loss": hamming}


def tune_class_thresholds(scores: np.ndarray, verified: np.ndarray, default: float = 0.5) -> np.ndarray:
    """Per-class thresholds that maximise F1 on verified labels (e.g. of the validation split).

    Classes without a verified positive keep `default`.
    """
    thresholds = np.full(scores.shape[1], default)
    for c in range(scores.shape[1]):
        judged = verified[:, c] != UNVERIFIED
        truth = verified[judged, c] == POSITIVE
        if not truth.any():
            continue
        s = scores[judged, c]
        order = np.argsort(-s, kind="stable")
        s, t = s[order], truth[order]
        tp = np.cumsum(t)
        fp = np.cumsum(~t)
        f1 = 2 * tp / (tp + fp + truth.sum())
        best = int(np.argmax(f1))
        thresholds[c] = s[best]
    return thresholds


def summary_metrics(scores: np.ndarray, verified: np.ndarray, thresholds=0.5, protocol: str = "challenge") -> dict:
    """mAP plus the top-k, threshold and Hamming metrics, on verified labels.

    Args:
        scores: `[images, classes]` predicted scores, images in ImageID order.
        verified: `[images, classes]` expanded labels: 1, 0 or -1 (unverified).
        thresholds: one threshold, or one per class, for the threshold metrics.
        protocol: the mAP's protocol, `"challenge"` or `"study"` (the other metrics have none).

    Returns:
        `{"map": ..., "precision@1": ..., ...}`.
    """
    out = {"map": mean_average_precision(scores, verified, protocol)}
    for k in (1, 3, 5):
        out.update(top_k_scores(scores, verified, k))
    out.update(threshold_scores(scores, verified, thresholds))
    return out
