"""Open Images mAP speed: vectorised numpy against two loops with the same semantics.

Baselines: the reference evaluator's structure (image by image into per-class lists), and a
per-class loop that is itself numpy-vectorised within each class (a much harder baseline).

About 125k images × 500 classes with about 10 verified labels per image (the OID test scale),
scores for every (image, class). Both are run in the same process and must agree to 1e-12.

    python bench/metric_speed.py [--images 125000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.evaluation.metrics import average_precisions, average_precisions_loop  # noqa: E402


def reference_style(scores: np.ndarray, verified: np.ndarray) -> np.ndarray:
    """The tensorflow/models evaluator's structure: detections gathered image by image into
    per-class lists, then per class: sort, cumulative TP, a Python loop for the interpolation."""
    num_classes = scores.shape[1]
    per_class = [([], []) for _ in range(num_classes)]
    num_gt = np.zeros(num_classes, int)
    for i in range(len(scores)):
        labels = np.flatnonzero(verified[i] >= 0)
        for c in labels.tolist():
            positive = verified[i, c] == 1
            num_gt[c] += positive
            if scores[i, c] > 0:
                per_class[c][0].append(scores[i, c])
                per_class[c][1].append(positive)
    out = np.full(num_classes, np.nan)
    for c, (s, tp) in enumerate(per_class):
        if num_gt[c] == 0:
            continue
        s, tp = np.array(s), np.array(tp, float)
        order = np.argsort(s, kind="stable")[::-1]
        cum = np.cumsum(tp[order])
        precision = np.concatenate([[0.0], cum / np.arange(1, len(cum) + 1), [0.0]])
        recall = np.concatenate([[0.0], cum / num_gt[c], [1.0]])
        for k in range(len(precision) - 2, -1, -1):
            precision[k] = max(precision[k], precision[k + 1])
        steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
        out[c] = float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))
    return out


def timed(fn, *args, repeats=3):
    best, out = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - started)
    return best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=125_000)
    parser.add_argument("--classes", type=int, default=500)
    parser.add_argument("--labels-per-image", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, c = args.images, args.classes
    verified = np.full((n, c), -1, np.int8)
    cols = rng.integers(0, c, size=(n, args.labels_per_image))
    verified[np.arange(n)[:, None], cols] = rng.choice([0, 1], size=cols.shape, p=[0.4, 0.6])
    scores = np.round(rng.random((n, c)), 3) * (rng.random((n, c)) > 0.1)  # ties and absent predictions
    vec_s, vec = timed(average_precisions, scores, verified)
    loop_s, loop = timed(average_precisions_loop, scores, verified, repeats=1)
    ref_s, ref = timed(reference_style, scores, verified, repeats=1)
    np.testing.assert_allclose(vec, loop, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(vec, ref, rtol=0, atol=1e-12, equal_nan=True)
    print(json.dumps({"images": n, "classes": c, "verified_labels": int((verified >= 0).sum()),
                      "vectorised_s": round(vec_s, 3),
                      "reference_style_loop_s": round(ref_s, 3), "speedup_vs_reference_style": round(ref_s / vec_s, 1),
                      "numpy_per_class_loop_s": round(loop_s, 3), "speedup_vs_numpy_loop": round(loop_s / vec_s, 1)},
                     indent=2))


if __name__ == "__main__":
    main()
