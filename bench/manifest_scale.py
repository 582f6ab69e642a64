"""A photo manifest at two sizes 8x apart: is `prepare.py --manifest` flat in memory, and how fast
is the manifest read against `pandas.read_csv`? (issue 22, item 9)

Writes a synthetic manifest of N rows (id, tags, text, labels from 81 classes, no split column, no
images) and one of 8N, then:

* runs `python app/prepare.py --manifest ... --classes ...` on each in a fresh process
  (`bench.scale.measure`: the step's own peak RSS) and reports the marginal KB per photo
  (limit: 2 KB);
* times one pass of `ManifestReader.rows()` (the parse prepare does before building records)
  and `pandas.read_csv` (C engine, every column as text) over the large manifest, in this process.

    python bench/manifest_scale.py [--sizes 20000 160000] [--work bench/results/manifest-scale]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scale import measure  # noqa: E402

CLASSES = [f"concept{i:02d}" for i in range(81)]
WORDS = [f"word{i}" for i in range(5000)]


def write_manifest(path: Path, rows: int, seed: int = 0) -> None:
    """A synthetic manifest of `rows` photos (the same for a seed)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "tags", "text", "labels"])
        for i in range(rows):
            tags = "|".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12)))
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(7, 49)))
            labels = " ".join(sorted(rng.sample(CLASSES, rng.randint(1, 3))))
            writer.writerow([f"photo-{i:08d}", tags, text, labels])


def read_speeds(path: Path, classes: Path) -> dict:
    """Seconds for one pass of our reader and of `pandas.read_csv` over the same manifest."""
    import pandas as pd

    from app.data.collections.classes import read_class_list
    from app.data.collections.manifest_source import ManifestReader

    started = time.perf_counter()
    rows = sum(1 for _ in ManifestReader(path, read_class_list(classes)).rows())
    ours = time.perf_counter() - started
    started = time.perf_counter()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    theirs = time.perf_counter() - started
    assert len(frame) == rows
    return {"rows": rows, "ours_s": round(ours, 2), "pandas_s": round(theirs, 2)}


def main(argv=None) -> dict:
    """Measures both sizes and the read speed; returns (and saves) the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[20000, 160000])
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "manifest-scale")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    classes = args.work / "classes.csv"
    classes.write_text("".join(f"{c}\n" for c in CLASSES))
    results: dict = {"prepare": {}}
    for size in args.sizes:
        manifest = args.work / f"photos-{size}.csv"
        if not manifest.exists():
            write_manifest(manifest, size)
        results["prepare"][size] = measure(
            [sys.executable, "app/prepare.py", "--manifest", str(manifest), "--classes", str(classes),
             "--out", str(args.work / f"data-{size}"), "--no-progress"], args.work / f"prepare-{size}.log")
        print(f"prepare {size:>8} photos: {results['prepare'][size]}", file=sys.stderr)
    small, large = args.sizes
    marginal = (results["prepare"][large]["peak_kb"] - results["prepare"][small]["peak_kb"]) / (large - small)
    results["kb_per_photo"] = round(marginal, 3)
    results["read"] = read_speeds(args.work / f"photos-{large}.csv", classes)
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
