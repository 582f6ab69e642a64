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

    def __call__(self, cosines: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.scale * np.asarray(cosines, np.float64) + self.bias, -50, 50)))

    @classmethod
    def fit(cls, cosines: np.ndarray, labels: np.ndarray, steps: int = 50) -> "Calibration":
        """Logistic regression of 0/1 labels on cosines (Newton's method, two parameters).

        Args:
            cosines: `[n]` (or any shape) cosines.
            labels: 0/1 of the same shape.
        """
        x, y = np.asarray(cosines, np.float64).ravel(), np.asarray(labels, np.float64).ravel()
        w = np.array([10.0, -5.0])
        design = np.stack([x, np.ones_like(x)], axis=1)
        for _ in range(steps):
            p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -50, 50)))
            gradient = design.T @ (p - y)
            hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-6 * np.eye(2)
            step = np.linalg.solve(hessian, gradient)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        return cls(float(w[0]), float(w[1]))


def class_phrases(classes: list) -> list:
    """The text each `(id, name)` class is encoded from: its name, `_` read as a space."""
    return [name.replace("_", " ") for _, name in classes]


def cosine_scores(embeddings: np.ndarray, word_vectors: np.ndarray) -> np.ndarray:
    """`[photos, words]` cosines of unit photo embeddings with unit word vectors."""
    return np.asarray(embeddings, np.float32) @ np.asarray(word_vectors, np.float32).T


def top_words(cosines: np.ndarray, words: list, k: int) -> list[list[tuple[str, float]]]:
    """Each photo's `k` words of highest cosine, best first."""
    k = min(k, len(words))
    top = np.argpartition(-cosines, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(cosines, top, axis=1).argsort(axis=1)[:, ::-1]
    top = np.take_along_axis(top, order, axis=1)
    return [[(words[j], float(row[j])) for j in cols] for row, cols in zip(cosines, top)]
