"""How far a split's figures can be trusted: small splits are reported as such, not dressed up.

Under `MIN_RELIABLE_PHOTOS` photos, a split's mAP is one of a handful of values (on one photo it is
0 or 1, and it swings between them from epoch to epoch), so the validation mAP that chooses the
best epoch, the test mAP and per-class thresholds tuned for F1 are noise. Such a split's figures
carry a warning (the log, the summaries, `metrics.json`), and thresholds are not tuned on it: every
class keeps the default 0.5.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from app.evaluation.metrics import sparse_tune_class_thresholds
from app.evaluation.truth import VerifiedPairs
from app.wording import plural

MIN_RELIABLE_PHOTOS = 50
DEFAULT_THRESHOLD = 0.5


def small_split_warning(split: str, photos: int) -> Optional[str]:
    """A warning for a split of fewer than `MIN_RELIABLE_PHOTOS` photos, or None."""
    if photos >= MIN_RELIABLE_PHOTOS:
        return None
    return (f"the {split} split has {plural(photos, 'photo')}, under {MIN_RELIABLE_PHOTOS}: its mAP is unreliable "
            f"(on a handful of photos an AP is 0 or 1 by chance)")


def tuned_thresholds(pairs: VerifiedPairs, scores: np.ndarray, photos: int,
                     split: str = "validation") -> tuple[np.ndarray, Optional[str]]:
    """Per-class thresholds tuned for F1 on a split's verified pairs, or 0.5 for every class when the
    split is too small to tune on.

    Args:
        pairs: the split's verified pairs.
        scores: one score per pair.
        photos: photos in the split.
        split: its name, for the note.

    Returns:
        `(thresholds, note)`: the note says why the thresholds were not tuned (None when they were).
    """
    if photos >= MIN_RELIABLE_PHOTOS:
        return sparse_tune_class_thresholds(pairs, scores, DEFAULT_THRESHOLD), None
    note = (f"thresholds not tuned: the {split} split has {plural(photos, 'photo')}, under {MIN_RELIABLE_PHOTOS}; "
            f"every class uses {DEFAULT_THRESHOLD}")
    return np.full(pairs.num_classes, DEFAULT_THRESHOLD), note
