import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.sources.hierarchy import Hierarchy
from app.evaluation import baselines
from app.evaluation.baselines import tune_fusion_weight
from app.evaluation.metrics import (PROTOCOLS, VerifiedPairs, average_precisions, mean_average_precision,
                                    sparse_average_precisions, sparse_mean_average_precision, sparse_summary_metrics,
                                    sparse_threshold_scores, sparse_top_k_scores, sparse_tune_class_thresholds,
                                    summary_metrics, threshold_scores, top_k_scores, tune_class_thresholds)
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


# The tie cases (ties_large; the study protocol's zeros) were computed with the reference on numpy's
# AVX2 argsort kernel; the reference itself orders ties otherwise with the AVX-512 kernel (and with
# NPY_DISABLE_CPU_FEATURES=X86_V3). So the cases are checked in a process pinned to the AVX2 kernel.
AVX2_KERNEL = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}


def test_golden_cases_to_1e_9_on_the_kernel_they_were_computed_with():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import test_metrics as t\n"
            "for case in t.CASES:\n"
            "    for protocol in t.PROTOCOLS:\n"
            "        t.check_golden_case(case, protocol)\n"
            "print('checked', len(t.CASES) * len(t.PROTOCOLS))")
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True, text=True,
                          env={**os.environ, **AVX2_KERNEL}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["checked", str(len(CASES) * len(PROTOCOLS))]


def check_golden_case(case, protocol):
    scores, verified, ci = case_arrays(case)
    ap_key, map_key = EXPECTED[protocol]
    ap = average_precisions(scores, verified, protocol)
    for cls, expected in case[ap_key].items():
        if expected is None:
            assert np.isnan(ap[ci[cls]])
        else:
            assert abs(ap[ci[cls]] - expected) < 1e-9, (case["name"], protocol, cls)
    assert abs(mean_average_precision(scores, verified, protocol) - case[map_key]) < 1e-9
    pairs, pair_scores = case_pairs(case, ci)  # the sparse form, built from the case's rows directly
    np.testing.assert_allclose(sparse_average_precisions(pairs, pair_scores, protocol), ap, rtol=0, atol=1e-12,
                               equal_nan=True)
    assert abs(sparse_mean_average_precision(pairs, pair_scores, protocol) - case[map_key]) < 1e-9


def case_pairs(case, ci):
    """A case's verified pairs (by ImageID, then class) and their scores, without a dense matrix."""
    hierarchy = Hierarchy(case["hierarchy"], sorted(ci, key=ci.get))
    images = sorted({r[0] for r in case["verified"]} | {r[0] for r in case["scores"]})
    per_image, scored = {}, {}
    for image, cls, value in case["verified"]:
        per_image.setdefault(image, []).append((cls, value))
    for image, cls, score in case["scores"]:
        scored[image, cls] = score
    rows, classes, positive, scores = [], [], [], []
    for row, image in enumerate(images):
        expanded = hierarchy.expand(per_image.get(image, []))
        for cls, value in sorted(expanded.items(), key=lambda item: ci[item[0]]):
            rows.append(row), classes.append(ci[cls]), positive.append(value == 1)
            scores.append(scored.get((image, cls), 0.0))
    pairs = VerifiedPairs(np.array(rows, int), np.array(classes, int), np.array(positive, bool), len(images), len(ci))
    return pairs, np.array(scores)


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


def reference_top_k(scores, verified, k):
    """Per image with a positive: its verified classes ranked by score, ties in class order; hits in the first k."""
    precision, recall = [], []
    for s, v in zip(scores, verified):
        judged = [c for c in range(len(v)) if v[c] != -1]
        positives = sum(v[c] == 1 for c in judged)
        if positives:
            hits = sum(v[c] == 1 for c in sorted(judged, key=lambda c: (-s[c], c))[:k])
            precision.append(hits / min(k, len(judged)))
            recall.append(hits / positives)
    return float(np.mean(precision)), float(np.mean(recall))


def reference_threshold_scores(scores, verified, thresholds):
    """Counts over every verified (image, class): micro F1, macro F1 over classes with a positive, Hamming loss."""
    thresholds = np.broadcast_to(thresholds, verified.shape[1:])
    tp, fp, fn = (np.zeros(verified.shape[1]) for _ in range(3))
    for i, c in zip(*np.nonzero(verified != -1)):
        predicted, positive = scores[i, c] >= thresholds[c], verified[i, c] == 1
        tp[c] += predicted and positive
        fp[c] += predicted and not positive
        fn[c] += positive and not predicted
    has_pos = (verified == 1).any(axis=0)
    per_class = [2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]) if 2 * tp[c] + fp[c] + fn[c] else 0.0 for c in range(len(tp))]
    return {"micro_f1": 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1),
            "macro_f1": float(np.mean(np.array(per_class)[has_pos])),
            "hamming_loss": (fp.sum() + fn.sum()) / (verified != -1).sum()}


def reference_thresholds(scores, verified, default=0.5):
    """Per class: its verified images ranked by score (ties in image order); the score of the first best F1."""
    out = np.full(verified.shape[1], default)
    for c in range(verified.shape[1]):
        rows = np.flatnonzero(verified[:, c] != -1)
        positive = verified[rows, c] == 1
        if positive.any():
            ranked = sorted(range(len(rows)), key=lambda j: -scores[rows[j], c])  # sorted() is stable
            f1 = [2 * positive[ranked[:n + 1]].sum() / (n + 1 + positive.sum()) for n in range(len(rows))]
            out[c] = scores[rows[ranked[int(np.argmax(f1))]], c]
    return out


def tied_case(seed):
    """Labels and scores with many ties: scores in tenths, a fifth of them 0; a class without positives,
    an image without verified labels."""
    rng = np.random.default_rng(seed)
    verified = rng.choice([-1, 0, 1], size=(300, 12), p=[0.5, 0.25, 0.25]).astype(np.int8)
    verified[:, 11] = np.where(verified[:, 11] == 1, 0, verified[:, 11])
    verified[7] = -1
    scores = np.round(rng.random(verified.shape), 1) * (rng.random(verified.shape) > 0.2)
    return scores, verified


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("seed", range(3))
def test_sparse_metrics_equal_the_dense_computations_with_many_ties(seed, protocol):
    scores, verified = tied_case(seed)
    pairs = VerifiedPairs.from_dense(verified)
    pair_scores = scores[pairs.rows, pairs.classes]
    assert len(pairs) == (verified != -1).sum() and pairs.positive.sum() == (verified == 1).sum()
    ap = sparse_average_precisions(pairs, pair_scores, protocol)
    np.testing.assert_allclose(ap, reference_semantics(scores, verified, protocol), rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(ap, average_precisions(scores, verified, protocol))
    thresholds = reference_thresholds(scores, verified)
    np.testing.assert_array_equal(sparse_tune_class_thresholds(pairs, pair_scores), thresholds)
    np.testing.assert_array_equal(tune_class_thresholds(scores, verified), thresholds)
    for k in (1, 3, 5):
        at_k = sparse_top_k_scores(pairs, pair_scores, k)
        assert (at_k[f"precision@{k}"], at_k[f"recall@{k}"]) == pytest.approx(reference_top_k(scores, verified, k),
                                                                               abs=1e-12)
        assert top_k_scores(scores, verified, k) == at_k
    for t in (0.5, thresholds):
        assert sparse_threshold_scores(pairs, pair_scores, t) == pytest.approx(
            reference_threshold_scores(scores, verified, t), abs=1e-12)
        assert threshold_scores(scores, verified, t) == sparse_threshold_scores(pairs, pair_scores, t)
    summary = sparse_summary_metrics(pairs, pair_scores, thresholds, protocol)
    assert summary == summary_metrics(scores, verified, thresholds, protocol)
    assert summary["map"] == pytest.approx(np.nanmean(reference_semantics(scores, verified, protocol)), abs=1e-12)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sparse_baselines_equal_the_dense_ones(protocol):
    scores, verified = tied_case(5)
    tags, train = tied_case(6)[0], tied_case(7)[1]
    pairs = VerifiedPairs.from_dense(verified)
    positives, negatives = (train == 1).sum(axis=0), (train == 0).sum(axis=0)
    present = baselines.most_likely_classes(positives, negatives)
    assert present.tolist() == [bool(p > n) for p, n in zip(positives, negatives)]
    dense = baselines.most_likely_scores(train, len(verified))
    np.testing.assert_array_equal(dense, np.tile(present, (len(verified), 1)))
    np.testing.assert_array_equal(baselines.class_pair_scores(present, pairs), dense[pairs.rows, pairs.classes])
    weight, best = baselines.sparse_tune_fusion_weight(pairs, scores[pairs.rows, pairs.classes],
                                                       tags[pairs.rows, pairs.classes], protocol=protocol)
    by_weight = {w: np.nanmean(reference_semantics(w * scores + (1 - w) * tags, verified, protocol))
                 for w in np.linspace(0, 1, 21)}
    assert best == pytest.approx(max(by_weight.values()), abs=1e-12)
    assert by_weight[min(by_weight, key=lambda w: abs(w - weight))] == pytest.approx(best, abs=1e-12)
    assert tune_fusion_weight(scores, tags, verified, protocol=protocol) == (weight, best)


def test_pairs_out_of_order_or_scores_of_another_length_are_errors():
    with pytest.raises(ValueError, match=r"ordered by image, then class. Received: images 0..1"):
        VerifiedPairs(np.array([1, 0]), np.array([0, 0]), np.array([True, False]), 2, 1)
    with pytest.raises(ValueError, match=r"distinct, in range \(2 images, 3 classes\)"):
        VerifiedPairs(np.array([0, 0]), np.array([1, 1]), np.array([True, False]), 2, 3)
    pairs = VerifiedPairs.from_dense(np.array([[1, -1], [0, 1]]))
    with pytest.raises(ValueError, match=r"one value per verified pair \(3\). Received shape \(4,\)"):
        sparse_average_precisions(pairs, np.zeros(4))


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
