"""Metrics for exhaustively labelled data, against scikit-learn (computed independently) and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_score, recall_score

from app.evaluation.exhaustive import (exhaustive_report, per_class_average_precisions,
                                       per_photo_average_precisions, top_k_scores)


def _random_case(seed: int, photos: int = 40, classes: int = 7):
    rng = np.random.default_rng(seed)
    labels = (rng.random((photos, classes)) < 0.3).astype(np.int8)
    labels[:, -1] = 0  # a class without a positive
    labels[0] = 0  # a photo without a positive
    scores = np.round(rng.random((photos, classes)), 1)  # one decimal: many ties
    return scores, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_and_per_photo_ap_match_sklearn_with_ties(seed):
    scores, labels = _random_case(seed)
    per_class = per_class_average_precisions(scores, labels)
    expected = [average_precision_score(labels[:, c], scores[:, c]) for c in range(labels.shape[1] - 1)]
    np.testing.assert_allclose(per_class[:-1], expected, rtol=0, atol=1e-12)
    assert np.isnan(per_class[-1])
    per_photo = per_photo_average_precisions(scores, labels)
    rows = [i for i in range(len(labels)) if labels[i].any()]
    np.testing.assert_allclose(per_photo[rows], [average_precision_score(labels[i], scores[i]) for i in rows],
                               rtol=0, atol=1e-12)
    assert np.isnan(per_photo[0])


def test_ap_hand_worked():
    # Ranking: p(1) n p(.5) -> precisions 1 and 2/3: AP = 5/6. A tie of a positive and a negative at
    # the top: precision 1/2 for that positive.
    assert per_class_average_precisions([[0.9], [0.8], [0.7]], [[1], [0], [1]])[0] == pytest.approx(5 / 6)
    assert per_class_average_precisions([[0.5], [0.5], [0.1]], [[0], [1], [0]])[0] == pytest.approx(0.5)


def test_top3_matches_sklearn_on_the_top3_predictions():
    scores, labels = _random_case(5, photos=60, classes=9)
    result = top_k_scores(scores, labels, k=3)
    predicted = np.zeros_like(labels)
    for i, row in enumerate(scores):
        predicted[i, sorted(range(len(row)), key=lambda c: (-row[c], c))[:3]] = 1
    scored = [c for c in range(labels.shape[1]) if labels[:, c].any()]
    assert result.op == pytest.approx(precision_score(labels, predicted, average="micro", zero_division=0))
    assert result.orecall == pytest.approx(recall_score(labels, predicted, average="micro", zero_division=0))
    assert result.cp == pytest.approx(precision_score(labels, predicted, average="macro", labels=scored,
                                                      zero_division=0))
    assert result.cr == pytest.approx(recall_score(labels, predicted, average="macro", labels=scored,
                                                   zero_division=0))
    assert result.of1 == pytest.approx(2 * result.op * result.orecall / (result.op + result.orecall))
    assert result.cf1 == pytest.approx(2 * result.cp * result.cr / (result.cp + result.cr))


def test_top_k_hand_worked_with_an_unpredicted_class():
    # 2 photos, 4 classes, k=1. Photo 0 predicts class 0 (positive), photo 1 predicts class 0
    # (negative). Class 2 is positive in photo 1 but never predicted: precision 0, recall 0.
    scores = [[0.9, 0.1, 0.2, 0.0], [0.8, 0.1, 0.3, 0.0]]
    labels = [[1, 0, 0, 0], [0, 0, 1, 0]]
    result = top_k_scores(scores, labels, k=1)
    assert (result.op, result.orecall) == (0.5, 0.5)
    assert (result.cp, result.cr) == (0.25, 0.5)  # classes 0 and 2 scored: (1/2 + 0) / 2, (1 + 0) / 2
    assert result.cf1 == pytest.approx(2 * 0.25 * 0.5 / 0.75)


def test_report_and_refusals():
    scores, labels = _random_case(7)
    report = exhaustive_report(scores, labels)
    assert report["classes_scored"] == labels.shape[1] - 1
    assert report["photos_scored"] == int(labels.any(axis=1).sum())
    assert report["top_k"]["k"] == 3
    with pytest.raises(ValueError, match="0 or 1"):
        per_class_average_precisions([[0.5]], [[-1]])
    with pytest.raises(ValueError, match="one shape"):
        top_k_scores([[0.5, 0.1]], [[1]])
