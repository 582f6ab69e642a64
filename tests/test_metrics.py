import json

import numpy as np
import pytest

from app.data.hierarchy import Hierarchy
from app.evaluation.metrics import average_precisions, average_precisions_loop, mean_average_precision
from conftest import DATA

CASES = json.loads((DATA / "oid_map_cases.json").read_text())["cases"]


def case_arrays(case):
    tree = Hierarchy(case["hierarchy"])
    classes = sorted(set(case["expected_ap"]) | set(tree.classes))
    hierarchy = Hierarchy(case["hierarchy"], classes)
    images = sorted({r[0] for r in case["verified"]} | {r[0] for r in case["scores"]})
    ci, ii = {c: i for i, c in enumerate(classes)}, {m: i for i, m in enumerate(images)}
    verified = -np.ones((len(images), len(classes)), np.int8)
    per_image = {}
    for image, cls, value in case["verified"]:
        per_image.setdefault(image, []).append((cls, value))
    for image, labels in per_image.items():
        for cls, value in hierarchy.expand(labels).items():
            verified[ii[image], ci[cls]] = value
    scores = np.zeros(verified.shape)
    for image, cls, score in case["scores"]:  # a repeated (image, class) keeps its last score
        scores[ii[image], ci[cls]] = score
    return scores, verified, ci


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_cases_to_1e_9(case):
    scores, verified, ci = case_arrays(case)
    ap = average_precisions(scores, verified)
    for cls, expected in case["expected_ap"].items():
        if expected is None:
            assert np.isnan(ap[ci[cls]])
        else:
            assert abs(ap[ci[cls]] - expected) < 1e-9, cls
    assert abs(mean_average_precision(scores, verified) - case["expected_map"]) < 1e-9


def test_hand_computed_cases():
    verified = np.array([[1, 0, -1], [0, 0, 1], [1, -1, -1], [1, 0, -1]])
    scores = np.array([[0.9, 0.5, 0.9], [0.9, 0.1, 0.0], [0.0, 0.8, 0.9], [0.5, 0.5, 0.0]])
    ap = average_precisions(scores, verified)
    # class 0: ranked 0.9 (img1, FP, later image first on the tie), 0.9 (img0, TP), 0.5 (img3, TP);
    # img2 has no prediction. Precision at the TPs is 1/2 and 2/3; made non-increasing from the
    # right both become 2/3, over num_gt = 3 positives.
    assert ap[0] == pytest.approx((2 / 3 + 2 / 3) / 3)
    assert np.isnan(ap[1])  # verified everywhere but never positive: left out of the mean
    assert ap[2] == 0.0  # its only positive has no prediction
    assert mean_average_precision(scores, verified) == pytest.approx(np.mean([ap[0], ap[2]]))


def test_scores_on_unverified_images_are_ignored():
    verified = np.array([[1], [-1], [0]])
    base = average_precisions(np.array([[0.5], [0.0], [0.4]]), verified)
    assert average_precisions(np.array([[0.5], [0.99], [0.4]]), verified)[0] == base[0] == 1.0


def test_vectorised_equals_loop_on_random_data():
    rng = np.random.default_rng(0)
    verified = rng.choice([-1, -1, -1, 0, 1], size=(400, 60)).astype(np.int8)
    scores = np.round(rng.random((400, 60)), 2) * (rng.random((400, 60)) > 0.2)  # ties and absent predictions
    np.testing.assert_allclose(average_precisions(scores, verified), average_precisions_loop(scores, verified),
                               rtol=0, atol=1e-12, equal_nan=True)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one shape"):
        average_precisions(np.zeros((2, 3)), np.zeros((3, 2)))
