"""Baselines scored with the same metric on the same images."""

from __future__ import annotations

import numpy as np

from app.evaluation.metrics import NEGATIVE, POSITIVE, mean_average_precision


def machine_label_scores(machine: np.ndarray) -> np.ndarray:
    """Open Images machine-generated labels used as predictions (0 where there is none)."""
    return machine.astype(np.float64)


def most_likely_scores(train_verified: np.ndarray, num_images: int) -> np.ndarray:
    """Per class: "present" (1) on every image if the training split has more verified positives
    than negatives for it, else "absent" (0, no prediction)."""
    present = (train_verified == POSITIVE).sum(0) > (train_verified == NEGATIVE).sum(0)
    return np.broadcast_to(present.astype(np.float64), (num_images, train_verified.shape[1])).copy()


def late_fusion_name(weight: float) -> str:
    """The system name of the late fusion with weight λ."""
    return f"late fusion (λ={weight:.2f})"


def late_fusion(image_scores: np.ndarray, tag_scores: np.ndarray, weight: float) -> np.ndarray:
    """`weight * P_image + (1 - weight) * P_tags`."""
    return weight * image_scores + (1.0 - weight) * tag_scores


def tune_fusion_weight(image_scores: np.ndarray, tag_scores: np.ndarray, verified: np.ndarray,
                       grid: int = 21, protocol: str = "challenge") -> tuple[float, float]:
    """The λ in [0, 1] (on a grid) that maximises mAP on the given (validation) split.

    Args:
        image_scores: `[images, classes]` image-only scores.
        tag_scores: `[images, classes]` tags-only scores.
        verified: `[images, classes]` expanded labels: 1, 0 or -1 (unverified).
        grid: the number of evenly spaced weights tried.
        protocol: the mAP's protocol, `"challenge"` or `"study"`.

    Returns:
        `(weight, map)`.
    """
    results = [(float(w), mean_average_precision(late_fusion(image_scores, tag_scores, w), verified, protocol))
               for w in np.linspace(0.0, 1.0, grid)]
    return max(results, key=lambda wm: wm[1])
