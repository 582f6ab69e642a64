"""The Open Images image-level mAP (challenge protocol), vectorised with numpy.

Semantics (as tensorflow/models `OpenImagesChallengeEvaluator` with one whole-image box per
label, checked against `tests/data/oid_map_cases.json` to 1e-9):

* ground truth is the expanded verified labels: `1` positive, `0` negative, `-1` unverified;
* a class is scored only on images where it is verified; other scores are ignored;
* a score of 0 is no prediction;
* AP is VOC all-point interpolated AP with `num_gt` = number of positives; classes without
  positives are NaN and left out of the mean.

Ties: among equal scores, the detection that comes later in image order is ranked first.
This is what the reference does (`np.argsort(scores)[::-1]`; numpy's sort is stable on the
sizes where it matters here, and reversing it puts later entries first).
"""

from __future__ import annotations

import numpy as np

POSITIVE, NEGATIVE, UNVERIFIED = 1, 0, -1


def average_precisions(scores: np.ndarray, verified: np.ndarray) -> np.ndarray:
    """Per-class AP under the Open Images protocol.

    Args:
        scores: `[images, classes]` predicted scores; 0 means no prediction.
        verified: `[images, classes]` expanded labels: 1, 0 or -1 (unverified).

    Returns:
        `[classes]` AP, NaN where a class has no positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    verified = np.asarray(verified)
    if scores.shape != verified.shape:
        raise ValueError(f"scores and verified labels must have one shape. Received: {scores.shape} and "
                         f"{verified.shape}")
    num_classes = scores.shape[1]
    # Work on the verified entries only (about 10 per image), never on dense [images, classes] arrays.
    img, cls = np.nonzero(verified != UNVERIFIED)
    hit = verified[img, cls] == POSITIVE
    num_gt = np.bincount(cls[hit], minlength=num_classes)
    score = scores[img, cls]
    keep = score > 0
    img, cls, score, hit = img[keep], cls[keep], score[keep], hit[keep]
    # Class ascending, score descending, later image first among ties.
    order = np.lexsort((-img, -score, cls))
    cls, hit = cls[order], hit[order]
    ap = np.full(num_classes, np.nan)
    has_gt = num_gt > 0
    ap[has_gt] = 0.0
    if len(cls) == 0:
        return ap
    starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]])
    lengths = np.diff(np.r_[starts, len(cls)])
    segment_start = np.repeat(starts, lengths)
    cum_hits = np.cumsum(hit)
    before = np.r_[0, cum_hits][starts]
    tp = cum_hits - np.repeat(before, lengths)
    rank = np.arange(len(cls)) - segment_start + 1
    precision = tp / rank
    # Precision made non-increasing from the right, within each class: a reverse running max
    # where every later-in-reverse class gets a larger offset than any earlier value.
    offset = 2.0 * (cls.max() - cls)
    interpolated = np.maximum.accumulate((precision + offset)[::-1])[::-1] - offset
    sums = np.bincount(cls, weights=np.where(hit, interpolated, 0.0), minlength=num_classes)
    ap[has_gt] = sums[has_gt] / num_gt[has_gt]
    return ap


def mean_average_precision(scores: np.ndarray, verified: np.ndarray) -> float:
    """The mean of `average_precisions` over classes with at least one positive (NaN if none)."""
    ap = average_precisions(scores, verified)
    return float(np.nanmean(ap)) if np.any(~np.isnan(ap)) else float("nan")


def average_precisions_loop(scores: np.ndarray, verified: np.ndarray) -> np.ndarray:
    """Straightforward per-class reference implementation (for tests and the benchmark)."""
    scores = np.asarray(scores, dtype=np.float64)
    out = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        labels = verified[:, c]
        num_gt = int((labels == POSITIVE).sum())
        if num_gt == 0:
            continue
        keep = np.flatnonzero((labels != UNVERIFIED) & (scores[:, c] > 0))
        s, tp = scores[keep, c], (labels[keep] == POSITIVE).astype(float)
        order = np.argsort(s, kind="stable")[::-1]
        tp = tp[order]
        cum_tp = np.cumsum(tp)
        precision = cum_tp / np.arange(1, len(tp) + 1)
        recall = cum_tp / num_gt
        precision = np.concatenate([[0.0], precision, [0.0]])
        recall = np.concatenate([[0.0], recall, [1.0]])
        for i in range(len(precision) - 2, -1, -1):
            precision[i] = max(precision[i], precision[i + 1])
        steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
        out[c] = float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))
    return out


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


def summary_metrics(scores: np.ndarray, verified: np.ndarray, thresholds=0.5) -> dict:
    """mAP plus the top-k, threshold and Hamming metrics, on verified labels."""
    out = {"map": mean_average_precision(scores, verified)}
    for k in (1, 3, 5):
        out.update(top_k_scores(scores, verified, k))
    out.update(threshold_scores(scores, verified, thresholds))
    return out
