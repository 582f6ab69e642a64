"""Open Images mAP speed: our vectorised metric against the reference's per-class computation.

The anchor is tensorflow/models `compute_precision_recall` + `compute_average_precision`,
reimplemented here from their documented semantics (their element-by-element recall check and
precision interpolation loops included), fed per class with the class's detections in image
(ImageID) order, as the evaluator does. It is the exact reference, ties included.

Data: about 125k images × 500 classes with about 10 verified labels per image (the OID test
scale), a positive rate per class, and a score for every (image, class). Three score sets, each
in both protocols:

* continuous: floats in (0, 1], no ties;
* rounded: rounded to 3 decimals with 10% zeros, ties in every class;
* most likely: the most-likely baseline (1 or 0 per class, from a training split), all ties.

Printed per set and protocol: seconds for ours (best of 3) and for the anchor (once), their ratio,
the classes with ties and the max per-class AP difference (it must stay under 1e-9).

    python bench/metric_speed.py [--images 125000]

CSV mode (`app.evaluation.csv_mode.evaluate_csv`), files to result, against the reader it replaced
(Python's csv module, dicts, per-image expansion, one dense score matrix), each in a fresh process:

    python bench/metric_speed.py csv [--images 125000 --predictions-per-image 40 --labels-per-image 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.evaluation.baselines import most_likely_scores  # noqa: E402
from app.evaluation.metrics import POSITIVE, PROTOCOLS, UNVERIFIED, average_precisions  # noqa: E402


def anchor_precision_recall(scores: np.ndarray, labels: np.ndarray, num_gt: int) -> tuple:
    """`compute_precision_recall`: rank by `np.argsort(scores)[::-1]`, cumulative TP and FP."""
    ranked = labels[np.argsort(scores)[::-1]]
    true_pos = np.cumsum(ranked)
    false_pos = np.cumsum((ranked <= 0).astype(float))
    return true_pos / (true_pos + false_pos), true_pos / num_gt


def anchor_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """`compute_average_precision`: VOC all-point AP, checked and interpolated element by element."""
    if precision.size == 0:
        return 0.0
    if any(later < earlier for earlier, later in zip(recall[:-1], recall[1:])):
        raise ValueError("recall must be non-decreasing")
    recall = np.r_[0.0, recall, 1.0]
    precision = np.r_[0.0, precision, 0.0]
    for i in reversed(range(len(precision) - 1)):
        precision[i] = np.maximum(precision[i], precision[i + 1])
    steps = np.flatnonzero(np.diff(recall) != 0) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def anchor_average_precisions(scores: np.ndarray, verified: np.ndarray, protocol: str) -> np.ndarray:
    """Per-class AP from each class's detections in image order, as the evaluator feeds them."""
    out = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        rows = np.flatnonzero(verified[:, c] != UNVERIFIED)
        labels = (verified[rows, c] == POSITIVE).astype(float)
        num_gt = labels.sum()
        if protocol == "challenge":
            detected = scores[rows, c] > 0
            rows, labels = rows[detected], labels[detected]
        if num_gt > 0:
            out[c] = anchor_average_precision(*anchor_precision_recall(scores[rows, c], labels, num_gt))
    return out


def classes_with_ties(scores: np.ndarray, verified: np.ndarray, protocol: str) -> int:
    """How many classes have two equal scores among their detections."""
    count = 0
    for c in range(scores.shape[1]):
        s = scores[verified[:, c] != UNVERIFIED, c]
        s = s[s > 0] if protocol == "challenge" else s
        count += len(np.unique(s)) < len(s)
    return count


def timed(fn, *args, repeats: int = 3) -> tuple:
    """Best wall time over `repeats` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - started)
    return best, out


def random_verified(rng: np.random.Generator, n: int, c: int, per_image: int, positive_rate: np.ndarray) -> np.ndarray:
    """`[n, c]` labels: `per_image` random classes verified per image, positive at each class's rate."""
    verified = np.full((n, c), UNVERIFIED, np.int8)
    cols = rng.integers(0, c, size=(n, per_image))
    verified[np.arange(n)[:, None], cols] = rng.random(cols.shape) < positive_rate[cols]
    return verified


def score_sets(rng: np.random.Generator, verified: np.ndarray, train: np.ndarray):
    """Yields `(name, scores)` for the continuous, rounded and most-likely sets, one at a time."""
    continuous = 1.0 - rng.random(verified.shape)
    yield "continuous", continuous
    yield "rounded_3_decimals", np.round(continuous, 3) * (rng.random(verified.shape) > 0.1)
    del continuous
    yield "most_likely", most_likely_scores(train, len(verified))


def matrix_case(args: argparse.Namespace) -> dict:
    """Times ours and the anchor on each score set in both protocols and compares their APs."""
    rng = np.random.default_rng(0)
    positive_rate = rng.uniform(0.2, 0.8, args.classes)
    verified = random_verified(rng, args.images, args.classes, args.labels_per_image, positive_rate)
    train = random_verified(rng, args.images, args.classes, args.labels_per_image, positive_rate)
    rows = []
    for name, scores in score_sets(rng, verified, train):
        for protocol in PROTOCOLS:
            ours_s, ours = timed(average_precisions, scores, verified, protocol)
            anchor_s, anchor = timed(anchor_average_precisions, scores, verified, protocol, repeats=1)
            diff = float(np.nanmax(np.abs(ours - anchor)))
            same_nan = bool(np.array_equal(np.isnan(ours), np.isnan(anchor)))
            rows.append({"scores": name, "protocol": protocol,
                         "classes_with_ties": classes_with_ties(scores, verified, protocol),
                         "ours_s": round(ours_s, 3), "anchor_s": round(anchor_s, 2),
                         "anchor_over_ours": round(anchor_s / ours_s, 1),
                         "max_ap_diff": diff, "same_nan_classes": same_nan,
                         "map": round(float(np.nanmean(ours)), 4)})
    return {"images": args.images, "classes": args.classes, "verified_labels": int((verified >= 0).sum()),
            "numpy": np.__version__, "cpus": os.cpu_count(), "rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=125_000)
    parser.add_argument("--classes", type=int, default=500)
    parser.add_argument("--labels-per-image", type=int, default=10)
    args = parser.parse_args()
    load_before = os.getloadavg()
    result = matrix_case(args)
    result["load_average_1min_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result, indent=2))
    bad = [r for r in result["rows"] if not (r["max_ap_diff"] < 1e-9 and r["same_nan_classes"])]
    if bad:
        sys.exit(f"ours and the anchor disagree: {bad}")


# --- CSV mode: files to mAP --------------------------------------------------------------------


def legacy_evaluate_csv(predictions: Path, labels: Path, hierarchy_path: Path, classes_path: Path) -> float:
    """The CSV mode this project had before `app.evaluation.csv_mode` (its reading, expansion and
    scoring steps, without its error checks): the baseline of the ratio."""
    import csv

    from app.sources.hierarchy import Hierarchy
    from app.sources.oid import read_classes

    mids = [m for m, _ in read_classes(classes_path)]
    index = {m: i for i, m in enumerate(mids)}
    hierarchy = Hierarchy.from_json(hierarchy_path, mids)
    per_image: dict = {}
    with open(labels, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        for row in reader:
            row = dict(zip(header, row))
            per_image.setdefault(row["ImageID"], []).append((row["LabelName"], int(float(row["Confidence"]))))
    scores_by_key = {}
    with open(predictions, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for image, label, text in reader:
            scores_by_key[(image, index[label])] = float(text)
    images = sorted(set(per_image) | {image for image, _ in scores_by_key})
    row_of = {image: i for i, image in enumerate(images)}
    verified = -np.ones((len(images), len(mids)), np.int8)
    for image, image_labels in per_image.items():
        for mid, value in hierarchy.expand(image_labels).items():
            verified[row_of[image], index[mid]] = value
    scores = np.zeros(verified.shape)
    for (image, c), score in scores_by_key.items():
        scores[row_of[image], c] = score
    ap = average_precisions(scores, verified)
    return float(np.nanmean(ap))


def write_csv_case(folder: Path, images: int, per_image: int, labels_per_image: int, seed: int = 0) -> None:
    """Writes `labels.csv` and `predictions.csv` over the 500 challenge classes: image by image in
    ImageID order (as Open Images files are), distinct classes per image, scores with 3 decimals
    (so that ties occur)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from app import resources
    from app.sources.oid import read_classes

    rng = np.random.default_rng(seed)
    mids = np.array([m for m, _ in read_classes(resources.CHALLENGE_CLASSES_CSV)])
    ids = np.array([f"{x:016x}" for x in np.sort(rng.choice(2**62, images, replace=False))])  # sorted, as OID
    coprime = np.array([s for s in range(1, 500) if s % 2 and s % 5])

    def classes(k: int) -> np.ndarray:  # k distinct classes per image: start + j * step, step coprime to 500
        start, step = rng.integers(0, 500, images), rng.choice(coprime, images)
        return mids[((start[:, None] + np.arange(k) * step[:, None]) % 500).ravel()]

    options = pacsv.WriteOptions(quoting_style="none")
    count = images * labels_per_image
    labels = pa.table({"ImageID": np.repeat(ids, labels_per_image), "Source": ["verification"] * count,
                       "LabelName": classes(labels_per_image), "Confidence": rng.integers(0, 2, count)})
    pacsv.write_csv(labels, folder / "labels.csv", write_options=options)
    predictions = pa.table({"ImageID": np.repeat(ids, per_image), "LabelName": classes(per_image),
                            "Score": np.round(rng.random(images * per_image), 3)})
    pacsv.write_csv(predictions, folder / "predictions.csv", write_options=options)


def csv_worker(kind: str, folder: Path) -> None:
    """In a fresh process: scores the case with one implementation, prints seconds, peak RSS, mAP.

    Peak RSS is this process's VmHWM: `ru_maxrss` would include the parent's size at the fork.
    """
    from app import resources
    from app.evaluation.csv_mode import evaluate_csv

    files = (folder / "predictions.csv", folder / "labels.csv", resources.HIERARCHY_JSON,
             resources.CHALLENGE_CLASSES_CSV)
    started = time.perf_counter()
    value = evaluate_csv(*files).map if kind == "new" else legacy_evaluate_csv(*files)
    seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text()
    peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "map": value}))


def csv_main(argv: list) -> None:
    """The CSV-mode case: each run in its own process; the new reader `--repeats` times, the old once."""
    import subprocess
    import tempfile

    parser = argparse.ArgumentParser(description="CSV mode: files to mAP")
    parser.add_argument("--images", type=int, default=125_000)
    parser.add_argument("--predictions-per-image", type=int, default=40)
    parser.add_argument("--labels-per-image", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    def run(kind: str) -> dict:
        done = subprocess.run([sys.executable, __file__, "csv-worker", kind, str(folder)], check=True,
                              capture_output=True, text=True)
        return json.loads(done.stdout.splitlines()[-1])

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_csv_case(folder, args.images, args.predictions_per_image, args.labels_per_image)
        new = [run("new") for _ in range(args.repeats)]
        old = run("old")
    assert all(abs(r["map"] - old["map"]) < 1e-9 for r in new), (new, old)
    seconds = sorted(r["seconds"] for r in new)
    print(json.dumps({
        "images": args.images, "predictions": args.images * args.predictions_per_image,
        "verified_labels": args.images * args.labels_per_image, "map": old["map"],
        "csv_mode_s_best": round(seconds[0], 2), "csv_mode_s_median": round(seconds[len(seconds) // 2], 2),
        "csv_mode_peak_rss_mb": round(max(r["peak_rss_mb"] for r in new)),
        "old_reader_s": round(old["seconds"], 2), "old_reader_peak_rss_mb": round(old["peak_rss_mb"]),
        "speedup_vs_old_reader_median": round(old["seconds"] / seconds[len(seconds) // 2], 1)}, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["csv"]:
        csv_main(sys.argv[2:])
    elif sys.argv[1:2] == ["csv-worker"]:
        csv_worker(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
