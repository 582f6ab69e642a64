"""The classes a photo shows, as a person wants them: the most specific confident classes.

A class is confident when its score reaches its threshold (tuned for F1 on validation at the end of
training). A confident class implies its ancestors (a Dog is an Animal), so a confident class is
shown only when no confident class below it is: "Dog", not "Dog, Carnivore, Mammal, Animal". A
photo needs review when no class is confident, or when some class's score lies within the review
margin of its threshold (the model is unsure about it: those classes are returned too). The margin
is a probability at 0.5 and the same distance in logits elsewhere (margin m: |logit(score) -
logit(threshold)| < 4m), so a class with a threshold of 0.001 is near only for scores of about
0.0008 to 0.0012, not for every score under 0.05; a threshold of 0 or 1 has no near scores. Graph ops only: it runs in TF Serving.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from app.sources.hierarchy import Hierarchy

CLIP = 1e-6  # scores are clipped to [CLIP, 1 - CLIP] before taking logits


def ancestor_matrix(hierarchy: Hierarchy, mids: list) -> np.ndarray:
    """`[C, C]` float32: entry (c, a) is 1 when class `a` is an ancestor of class `c`."""
    index = {mid: i for i, mid in enumerate(mids)}
    matrix = np.zeros((len(mids), len(mids)), np.float32)
    for mid in mids:
        for ancestor in hierarchy.ancestors.get(mid, ()):
            matrix[index[mid], index[ancestor]] = 1.0
    return matrix


def specific_classes(scores: tf.Tensor, thresholds: tf.Tensor, ancestors: tf.Tensor, k: int,
                     margin: float) -> dict:
    """The most specific confident classes of each photo, best first.

    Args:
        scores: `[batch, C]`.
        thresholds: `[C]` per-class thresholds.
        ancestors: `[C, C]` from `ancestor_matrix`.
        k: how many to return per photo (padded with index -1 and score 0).
        margin: a score this close to its threshold makes the photo need review (a probability at 0.5,
            the same distance in logits elsewhere).

    Returns:
        `indices`, `scores` `[batch, k]`, `count` `[batch]` (specific confident classes, even
        beyond k), `needs_review` `[batch]`, and `review_indices` `[batch, k]`: the classes whose
        score lies within the margin of their threshold, closest first (padded with -1). A photo
        needs review when it has no specific confident class, or some review class.
    """
    confident = scores >= thresholds
    implied = tf.matmul(tf.cast(confident, tf.float32), ancestors) > 0  # a confident class lies below
    specific = confident & ~implied
    top = tf.math.top_k(tf.where(specific, scores, -1.0), k=k)
    valid = top.values >= 0
    count = tf.reduce_sum(tf.cast(specific, tf.int32), axis=1)
    gap = tf.abs(_logit(scores) - _logit(thresholds)) / 4.0  # the margin as a probability at 0.5, as logits elsewhere
    unsure = (gap < margin) & _decidable(thresholds)
    closest = tf.math.top_k(tf.where(unsure, -gap, -1e9), k=k)
    return {"indices": tf.where(valid, top.indices, -1), "scores": tf.where(valid, top.values, 0.0),
            "count": count, "needs_review": tf.equal(count, 0) | tf.reduce_any(unsure, axis=1),
            "review_indices": tf.where(closest.values > -1e9, closest.indices, -1)}


def _decidable(thresholds: tf.Tensor) -> tf.Tensor:
    """Thresholds a score can lie near: not at 0 or 1, where float32 scores cannot tell a near score from
    a far one (a threshold of 0, tuned for a class F1 wants on every photo, makes it always confident)."""
    return (thresholds > CLIP) & (thresholds < 1.0 - CLIP)


def _logit(p: tf.Tensor) -> tf.Tensor:
    """log(p / (1 - p)), finite for 0 and 1."""
    p = tf.clip_by_value(tf.cast(p, tf.float32), CLIP, 1.0 - CLIP)
    return tf.math.log(p) - tf.math.log1p(-p)


def at_indices(table: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """`table[indices]`, where index -1 (`specific_classes`' padding) takes the table's last entry.

    `tf.gather` does not wrap negative indices: on CPU it raises, and a photo with fewer than k
    specific confident classes failed the whole request.

    Args:
        table: `[C + 1]`, the last entry standing for "no class".
        indices: any shape, each in [-1, C).
    """
    return tf.gather(table, tf.where(indices < 0, tf.shape(table, out_type=indices.dtype)[0] - 1, indices))

