"""Baselines scored with the same metric on the same images.

Each works on one score per verified pair (`VerifiedPairs`, the sparse form) or on dense
`[images, classes]` arrays; the dense forms call the sparse ones.
"""

from __future__ import annotations

import numpy as np

from app.evaluation.metrics import VerifiedPairs, dense_pairs, sparse_mean_average_precision


def machine_label_scores(machine: np.ndarray) -> np.ndarray:
    """Open Images machine-generated labels used as predictions (0 where there is none), per pair or dense."""
    return machine.astype(np.float64)


def most_likely_classes(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Per class: "present" if the training split has more verified positives than negatives for it.

    Args:
        positives: `[classes]` verified positives in the training split.
        negatives: `[classes]` verified negatives in the training split.

    Returns:
        `[classes]` bool.
    """
    return np.asarray(positives) > np.asarray(negatives)


def label_prior(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Per class: its frequency in the training split, positives / (positives + negatives) verified (0 for
    a class never verified there). As scores, it ranks every photo's classes the same way, most frequent
    first: the baseline of exhaustively labelled data (the most likely answer's 0/1 scores tie).

    Args:
        positives: `[classes]` verified positives in the training split.
        negatives: `[classes]` verified negatives in the training split.

    Returns:
        `[classes]` float64 in [0, 1].
    """
    positives, negatives = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    return np.divide(positives, positives + negatives, out=np.zeros_like(positives), where=positives + negatives > 0)


def class_pair_scores(per_class: np.ndarray, pairs: VerifiedPairs) -> np.ndarray:
    """A per-class score (the most likely answer's 0/1, the label prior) at each pair."""
    return np.asarray(per_class)[pairs.classes].astype(np.float64)


def most_likely_scores(train_verified: np.ndarray, num_images: int) -> np.ndarray:
    """The most-likely answer as dense `[num_images, classes]` scores, from dense training labels."""
    train = VerifiedPairs.from_dense(train_verified)
    present = most_likely_classes(train.positives_per_class(), train.negatives_per_class())
    return np.broadcast_to(present.astype(np.float64), (num_images, train.num_classes)).copy()


def late_fusion_name(weight: float) -> str:
    """The system name of the late fusion with weight λ."""
    return f"late fusion (λ={weight:.2f})"


def late_fusion(image_scores: np.ndarray, tag_scores: np.ndarray, weight: float) -> np.ndarray:
    """`weight * P_image + (1 - weight) * P_tags`, per pair or dense."""
    return weight * image_scores + (1.0 - weight) * tag_scores


def sparse_tune_fusion_weight(pairs: VerifiedPairs, image_scores: np.ndarray, tag_scores: np.ndarray,
                              grid: int = 21, protocol: str = "challenge") -> tuple[float, float]:
    """The λ in [0, 1] (on a grid) that maximises mAP on the given (validation) split.

    Args:
        pairs: the verified pairs, images in ImageID order.
        image_scores: image-only scores, one per pair.
        tag_scores: tags-only scores, one per pair.
        grid: the number of evenly spaced weights tried.
        protocol: the mAP's protocol, `"challenge"` or `"study"`.

    Returns:
        `(weight, map)`.
    """
    results = [(float(w), sparse_mean_average_precision(pairs, late_fusion(image_scores, tag_scores, w), protocol))
               for w in np.linspace(0.0, 1.0, grid)]
    return max(results, key=lambda wm: wm[1])


def tune_fusion_weight(image_scores: np.ndarray, tag_scores: np.ndarray, verified: np.ndarray,
                       grid: int = 21, protocol: str = "challenge") -> tuple[float, float]:
    """`sparse_tune_fusion_weight` on `[images, classes]` scores and labels: `(weight, map)`."""
    pairs, image = dense_pairs(image_scores, verified)
    return sparse_tune_fusion_weight(pairs, image, pairs.gather(tag_scores), grid, protocol)
