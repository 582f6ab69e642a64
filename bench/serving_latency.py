"""Exported SavedModel size and CPU latency (p50/p95) for one photo and a batch of 64.

    python bench/serving_latency.py saved_models/contextual saved_models/tags [--runs 30]

Each run folder is exported to a temporary folder, loaded back with `tf.saved_model.load`, and its
`serving_default` signature is timed on demo-world photos with their tags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from app.runs.trained import TrainedRun  # noqa: E402
from app.serving.signatures import directory_size, export  # noqa: E402


def photos(count: int) -> tuple:
    folder = Path("tfrecords/demo/raw/images")
    files = sorted(folder.glob("*.jpg"))[:count] if folder.exists() else []
    images = [f.read_bytes() for f in files] or [b""] * count
    tags = [["dog", "hund", "park", "2009", "canon"]] * count
    return tags, images


def latency(signature, tags, images, runs: int) -> dict:
    width = max(len(t) for t in tags)
    t = tf.constant([x + [""] * (width - len(x)) for x in tags])
    im = tf.constant(images)
    signature(tags=t, image_bytes=im)  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        signature(tags=t, image_bytes=im)["scores"].numpy()
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--runs-per-case", type=int, default=30)
    args = parser.parse_args()
    results = {}
    for run_dir in args.runs:
        with tempfile.TemporaryDirectory() as tmp:
            target = export(run_dir, Path(tmp) / "serving", 1)
            weights = sum(w.numpy().nbytes for w in TrainedRun(run_dir).model.weights)
            signature = tf.saved_model.load(str(target)).signatures["serving_default"]
            tags, images = photos(64)
            results[run_dir.name] = {
                "export_MB": round(directory_size(target) / 1e6, 1), "weights_MB": round(weights / 1e6, 1),
                "one_photo": latency(signature, tags[:1], images[:1], args.runs_per_case),
                "batch_64": latency(signature, tags, images, args.runs_per_case),
            }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
