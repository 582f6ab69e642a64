"""Scores for any class list or word list: cosines between photo embeddings and the words' encoder vectors,
mapped to probabilities by one calibration (a, b) fitted on validation: `sigmoid(a * cosine + b)`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """`sigmoid(scale * cosine + bias)`: one pair for every class, seen or not."""

    scale: float = 10.0
    bias: float = -5.0

    def __post_init__(self):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                   for v in (self.scale, self.bias)):
            raise ValueError(f"a calibration is two finite numbers. Received: scale={self.scale!r}, bias={self.bias!r}")

    def __call__(self, cosines: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.scale * np.asarray(cosines, np.float64) + self.bias, -50, 50)))

    @classmethod
    def fit(cls, cosines: np.ndarray, labels: np.ndarray, steps: int = 100) -> "Calibration":
        """Logistic regression of 0/1 labels on cosines: Newton's method with step halving, so the
        log-likelihood never gets worse (two parameters; a tiny L2 keeps separable data finite).

        Args:
            cosines: `[n]` (or any shape) cosines.
            labels: 0/1 of the same shape.
        """
        x, y = np.asarray(cosines, np.float64).ravel(), np.asarray(labels, np.float64).ravel()
        if not len(x) or y.min() == y.max():
            return cls()
        design = np.stack([x, np.ones_like(x)], axis=1)
        w = np.array([cls.scale, cls.bias])
        cost = _negative_log_likelihood(design, y, w)
        for _ in range(steps):
            p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -50, 50)))
            gradient = design.T @ (p - y) + 1e-6 * w
            hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-6 * np.eye(2)
            step = np.linalg.solve(hessian, gradient)
            size = 1.0
            while size > 1e-6 and _negative_log_likelihood(design, y, w - size * step) > cost:
                size /= 2
            if size <= 1e-6:
                break
            w = w - size * step
            cost = _negative_log_likelihood(design, y, w)
            if np.abs(size * step).max() < 1e-8:
                break
        return cls(float(w[0]), float(w[1]))


def _negative_log_likelihood(design: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    z = design @ w
    return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5e-6 * w @ w)


def class_phrases(classes: list) -> list:
    """The text each `(id, name)` class is encoded from: its name, `_` read as a space."""
    return [name.replace("_", " ") for _, name in classes]


def cosine_scores(embeddings: np.ndarray, word_vectors: np.ndarray) -> np.ndarray:
    """`[photos, words]` cosines of unit photo embeddings with unit word vectors."""
    return np.asarray(embeddings, np.float32) @ np.asarray(word_vectors, np.float32).T


def top_words(cosines: np.ndarray, words: list, k: int, exclude: list | None = None) -> list[list[tuple[str, float]]]:
    """Each photo's `k` words of highest cosine, best first.

    Args:
        cosines: `[photos, words]`.
        words: the words, in column order.
        k: how many per photo (at most the number of words not excluded).
        exclude: per photo, words it must not get (its own tags), or None.
    """
    cosines = np.array(cosines, np.float64)
    if exclude is not None:
        index = {w: j for j, w in enumerate(words)}
        for i, own in enumerate(exclude):
            cosines[i, [index[w] for w in own if w in index]] = -np.inf
    k = min(k, len(words))
    top = np.argsort(-cosines, axis=1, kind="stable")[:, :k]
    return [[(words[j], float(row[j])) for j in cols if np.isfinite(row[j])] for row, cols in zip(cosines, top)]
