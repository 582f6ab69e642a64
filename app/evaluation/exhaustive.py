"""Metrics for exhaustively labelled data (NUS-WIDE, COCO, a manifest with `--labels exhaustive`).

Every test photo carries a label for every class (1 positive, 0 negative), so each metric reads a
dense `[photos, classes]` score matrix and a 0/1 label matrix of the same shape. Conventions (the
multi-label NUS-WIDE / COCO literature's, made explicit):

* **AP** is the non-interpolated average precision: the mean, over the positives, of the precision
  at each positive's rank. Equal scores form one group, ranked together: every positive of a group
  gets the precision at the group's end (as `sklearn.metrics.average_precision_score`), so the
  result does not depend on the order of ties.
* **Per-class mAP**: the AP of each class over all photos, averaged over the classes with at least
  one positive photo (a class without one has no AP: NaN, left out).
* **Per-photo mAP** (the NUS-WIDE papers' "image-centric" mAP): the AP of each photo's ranking of
  the classes, averaged over the photos with at least one positive class.
* **Top-k** precision/recall/F1 (k = 3 by default): each photo predicts its k highest-scored
  classes (ties: the lower class index first). Per class c: `Np` photos predicting c, `Nc` of them
  positive, `Ng` positives. Overall: `OP = sum Nc / sum Np`, `OR = sum Nc / sum Ng`. Per class
  averaged: `CP = mean(Nc / Np)`, `CR = mean(Nc / Ng)`, over the classes with a positive (the
  classes of the per-class mAP); a class that no photo predicts has precision 0. `OF1` and `CF1`
  are the harmonic means of (OP, OR) and (CP, CR), 0 when both are 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

TOP_K = 3


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must be [photos, classes] arrays of one shape. "
                         f"Received: {scores.shape} and {labels.shape}")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError("exhaustive labels must be 0 or 1 for every (photo, class); unverified pairs (-1) "
                         "belong to the Open Images metrics (app.evaluation.metrics)")
    return scores, labels.astype(bool)


def _column_average_precisions(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """The AP of each column (ranking the rows by score), NaN for a column without a positive."""
    rows, cols = scores.shape
    order = np.argsort(-scores, axis=0, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=0)
    hits = np.take_along_axis(positive, order, axis=0)
    true_pos = np.cumsum(hits, axis=0)
    # A tie group's members all get the counts at the group's last row.
    last = np.ones((rows, cols), dtype=bool)
    last[:-1] = ranked[1:] != ranked[:-1]
    group_end = np.where(last, np.arange(rows)[:, None], rows)
    group_end = np.minimum.accumulate(group_end[::-1], axis=0)[::-1]
    tp_at_end = np.take_along_axis(true_pos, group_end, axis=0)
    precision = tp_at_end / (group_end + 1.0)
    # AP = sum over groups of precision * (recall gain of the group) = mean over positives of their group's precision.
    total = hits.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (precision * hits).sum(axis=0) / total, np.nan)


def per_class_average_precisions(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each class's AP over every photo (`[classes]`, NaN for a class without a positive)."""
    scores, positive = _check(scores, labels)
    return _column_average_precisions(scores, positive)


def per_photo_average_precisions(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each photo's AP of its class ranking (`[photos]`, NaN for a photo without a positive)."""
    scores, positive = _check(scores, labels)
    return _column_average_precisions(scores.T, positive.T)


@dataclass(frozen=True)
class TopKScores:
    """Top-k precision, recall and F1, overall (`o*`) and per class averaged (`c*`), and k."""

    k: int
    op: float
    orecall: float
    of1: float
    cp: float
    cr: float
    cf1: float

    def as_dict(self) -> dict:
        return asdict(self)


def _harmonic(a: float, b: float) -> float:
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def top_k_scores(scores: np.ndarray, labels: np.ndarray, k: int = TOP_K) -> TopKScores:
    """Precision/recall/F1 of each photo's k highest-scored classes (conventions: the module docstring).

    Args:
        scores: `[photos, classes]` scores.
        labels: `[photos, classes]` 0/1 labels.
        k: classes predicted per photo (all of them when there are fewer).

    Returns:
        The overall and per-class-averaged scores; NaN when no class has a positive.
    """
    scores, positive = _check(scores, labels)
    photos, classes = scores.shape
    k = min(k, classes)
    predicted = np.zeros_like(positive)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.put_along_axis(predicted, top, True, axis=1)
    n_pred, n_gt = predicted.sum(axis=0), positive.sum(axis=0)
    n_correct = (predicted & positive).sum(axis=0)
    scored = n_gt > 0
    if not scored.any():
        return TopKScores(k, *([float("nan")] * 6))
    op = float(n_correct.sum() / max(n_pred.sum(), 1))
    orecall = float(n_correct.sum() / n_gt.sum())
    cp = float(np.mean(n_correct[scored] / np.maximum(n_pred[scored], 1)))
    cr = float(np.mean(n_correct[scored] / n_gt[scored]))
    return TopKScores(k, op, orecall, _harmonic(op, orecall), cp, cr, _harmonic(cp, cr))


def exhaustive_report(scores: np.ndarray, labels: np.ndarray, k: int = TOP_K) -> dict:
    """Every metric of this module in one dictionary (for `evaluate.py`'s JSON report).

    Returns:
        `{"class_map", "classes_scored", "photo_map", "photos_scored", "top_k": {...}}`.
    """
    per_class = per_class_average_precisions(scores, labels)
    per_photo = per_photo_average_precisions(scores, labels)

    def mean(values: np.ndarray) -> float:
        kept = values[~np.isnan(values)]
        return float(kept.mean()) if len(kept) else float("nan")

    return {"class_map": mean(per_class), "classes_scored": int((~np.isnan(per_class)).sum()),
            "photo_map": mean(per_photo), "photos_scored": int((~np.isnan(per_photo)).sum()),
            "top_k": top_k_scores(scores, labels, k).as_dict()}


def is_exhaustive(pairs) -> bool:
    """Whether every (photo, class) of a `metrics.VerifiedPairs` is verified (and there is one)."""
    return len(pairs) > 0 and len(pairs) == pairs.num_images * pairs.num_classes


def complete_pairs(pairs, scores: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Dense `(scores, labels)` from verified pairs when every (photo, class) is verified, else None.

    Args:
        pairs: a `metrics.VerifiedPairs` (ordered by photo, then class).
        scores: one score per pair.
    """
    if not is_exhaustive(pairs):
        return None
    shape = (pairs.num_images, pairs.num_classes)
    return np.asarray(scores, dtype=np.float64).reshape(shape), pairs.positive.reshape(shape).astype(np.int8)


def exhaustive_reports(pairs, systems: dict, k: int = TOP_K) -> dict:
    """`{system: exhaustive_report}` when the split is exhaustively labelled, else `{}`."""
    out = {}
    for name, scores in systems.items():
        dense = complete_pairs(pairs, scores)
        if dense is None:
            return {}
        out[name] = exhaustive_report(*dense, k)
    return out
