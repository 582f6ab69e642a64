"""Open Images mAP speed: vectorised numpy against two loops with the same semantics.

Baselines: the reference evaluator's structure (image by image into per-class lists), and a
per-class loop that is itself numpy-vectorised within each class (a much harder baseline).

About 125k images × 500 classes with about 10 verified labels per image (the OID test scale),
scores for every (image, class). Both are run in the same process and must agree to 1e-12.

    python bench/metric_speed.py [--images 125000]

CSV mode (`app.evaluation.csv_mode.evaluate_csv`), files to result, against the reader it replaced
(Python's csv module, dicts, per-image expansion, one dense score matrix), each in a fresh process:

    python bench/metric_speed.py csv [--images 125000 --predictions-per-image 40 --labels-per-image 8]
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


# --- CSV mode: files to mAP --------------------------------------------------------------------


def legacy_evaluate_csv(predictions: Path, labels: Path, hierarchy_path: Path, classes_path: Path) -> float:
    """The CSV mode this project had before `app.evaluation.csv_mode` (its reading, expansion and
    scoring steps, without its error checks): the baseline of the ratio."""
    import csv

    from app.data.hierarchy import Hierarchy
    from app.data.oid import read_classes

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
    from app.data.oid import read_classes

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
