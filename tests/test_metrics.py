import json

import numpy as np
import pytest

from app.data.hierarchy import Hierarchy
from app.evaluation.baselines import tune_fusion_weight
from app.evaluation.metrics import PROTOCOLS, average_precisions, mean_average_precision, summary_metrics
from conftest import DATA

CASES = json.loads((DATA / "oid_map_cases.json").read_text())["cases"]
EXPECTED = {"challenge": ("expected_ap", "expected_map"), "study": ("expected_ap_study", "expected_map_study")}


def case_arrays(case):
    tree = Hierarchy(case["hierarchy"])
    classes = sorted(set(case["expected_ap"]) | set(tree.classes))
    hierarchy = Hierarchy(case["hierarchy"], classes)
    images = sorted({r[0] for r in case["verified"]} | {r[0] for r in case["scores"]})  # ImageID order
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


# The tie cases (ties_large; the study protocol's zeros) hold for numpy's AVX2 argsort kernel, as
# on the CI machines: with NPY_DISABLE_CPU_FEATURES=X86_V3 the reference itself orders ties otherwise.
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_cases_to_1e_9(case, protocol):
    scores, verified, ci = case_arrays(case)
    ap_key, map_key = EXPECTED[protocol]
    ap = average_precisions(scores, verified, protocol)
    for cls, expected in case[ap_key].items():
        if expected is None:
            assert np.isnan(ap[ci[cls]])
        else:
            assert abs(ap[ci[cls]] - expected) < 1e-9, cls
    assert abs(mean_average_precision(scores, verified, protocol) - case[map_key]) < 1e-9


def reference_semantics(scores, verified, protocol):
    """Per class, as documented for the reference: the class's detections in image order, ranked
    by `np.argsort(scores)[::-1]`, cumulative TP and FP, VOC all-point interpolated AP."""
    out = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        num_gt = np.sum(verified[:, c] == 1)
        rows = np.flatnonzero(verified[:, c] != -1)
        if protocol == "challenge":
            rows = rows[scores[rows, c] > 0]
        if num_gt == 0:
            continue
        positive = (verified[rows, c] == 1)[np.argsort(scores[rows, c])[::-1]]
        tp, fp = np.cumsum(positive), np.cumsum(~positive)
        precision = np.maximum.accumulate(np.r_[0.0, tp / (tp + fp), 0.0][::-1])[::-1]
        recall = np.r_[0.0, tp / num_gt, 1.0]
        changed = np.flatnonzero(recall[1:] != recall[:-1]) + 1
        out[c] = np.sum((recall[changed] - recall[changed - 1]) * precision[changed])
    return out


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("seed", range(4))
def test_equals_reference_semantics_with_large_tie_groups(seed, protocol):
    rng = np.random.default_rng(seed)
    verified = rng.choice([-1, 0, 1], size=(700, 15), p=[0.4, 0.3, 0.3]).astype(np.int8)
    scores = 1.0 - rng.random(verified.shape)  # columns 0-4: distinct, never 0
    scores[:, 5:10] *= rng.random((700, 5)) > 0.2  # columns 5-9: distinct or 0 (tied in the study protocol)
    scores[:, 10:] = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=(700, 5))  # groups of about 80 ties
    verified[:, 14] = np.where(verified[:, 14] == 1, 0, verified[:, 14])  # a class without positives
    np.testing.assert_allclose(average_precisions(scores, verified, protocol),
                               reference_semantics(scores, verified, protocol), rtol=0, atol=1e-12, equal_nan=True)


def test_hand_computed_cases():
    verified = np.array([[1, 0, -1], [0, 0, 1], [1, -1, -1], [1, 0, -1]])
    scores = np.array([[0.9, 0.5, 0.9], [0.95, 0.1, 0.0], [0.0, 0.8, 0.9], [0.5, 0.5, 0.0]])
    ap = average_precisions(scores, verified)
    # class 0: ranked 0.95 (img1, FP), 0.9 (img0, TP), 0.5 (img3, TP); img2 has no prediction.
    # Precision at the TPs is 1/2 and 2/3; made non-increasing from the right both become 2/3,
    # over num_gt = 3 positives.
    assert ap[0] == pytest.approx((2 / 3 + 2 / 3) / 3)
    assert np.isnan(ap[1])  # verified everywhere but never positive: left out of the mean
    assert ap[2] == 0.0  # its only positive has no prediction
    assert mean_average_precision(scores, verified) == pytest.approx(np.mean([ap[0], ap[2]]))
    study = average_precisions(scores, verified, "study")
    # class 0 adds img2 (TP) at 0.0, ranked last: precisions 1/2, 2/3, 3/4 all become 3/4
    assert study[0] == pytest.approx(3 / 4)
    assert np.isnan(study[1])
    assert study[2] == 1.0  # its only positive is a detection at 0.0, ranked first of one


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_scores_on_unverified_images_are_ignored(protocol):
    verified = np.array([[1], [-1], [0]])
    base = average_precisions(np.array([[0.5], [0.0], [0.4]]), verified, protocol)
    assert average_precisions(np.array([[0.5], [0.99], [0.4]]), verified, protocol)[0] == base[0] == 1.0


def test_protocol_reaches_summary_and_fusion_tuning():
    verified = np.array([[1, 0], [0, 1], [1, 1], [0, -1]])
    image = np.array([[0.9, 0.0], [0.2, 0.8], [0.0, 0.0], [0.6, 0.3]])
    tags = np.array([[0.5, 0.1], [0.5, 0.0], [0.0, 0.7], [0.5, 0.5]])
    for protocol in PROTOCOLS:
        expected = mean_average_precision(image, verified, protocol)
        assert summary_metrics(image, verified, protocol=protocol)["map"] == expected
        weight, best = tune_fusion_weight(image, tags, verified, protocol=protocol)
        assert best == mean_average_precision(weight * image + (1 - weight) * tags, verified, protocol)
    assert mean_average_precision(image, verified, "study") != mean_average_precision(image, verified)


@pytest.mark.parametrize("call", [
    lambda s, v: average_precisions(s, v, "kaggle"), lambda s, v: mean_average_precision(s, v, "kaggle"),
    lambda s, v: summary_metrics(s, v, protocol="kaggle"), lambda s, v: tune_fusion_weight(s, s, v, protocol="kaggle")])
def test_unknown_protocol_is_an_error(call):
    with pytest.raises(ValueError, match="Received: 'kaggle'"):
        call(np.ones((2, 1)), np.ones((2, 1)))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"one shape. Received: \(2, 3\) and \(3, 2\)"):
        average_precisions(np.zeros((2, 3)), np.zeros((3, 2)))
