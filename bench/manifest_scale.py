"""A photo manifest at two sizes 8x apart: is `prepare.py --manifest` flat in memory, and is the
manifest read at least as fast as `pandas.read_csv`? (issue 22, item 9)

Writes a synthetic CSV manifest of N rows (id, 0-12 tags, a 7-49 word caption, 1-3 labels by name
from a list of 300 classes with ids; no split column, no images) and one of 8N (default 125,000 and
1,000,000), into one scratch folder that is deleted at the end (the run refuses to start when the
disk has too little free space for both manifests and datasets). Then:

* runs `python app/prepare.py --manifest ... --classes ...` on each in a fresh process
  (`bench.scale.measure`: the step's own peak RSS from `getrusage(RUSAGE_CHILDREN)`) and reports
  the marginal KB per photo (limit: 2 KB);
* times one pass of `ManifestReader.rows()` (the parse prepare does before building records) and
  `pandas.read_csv` (C engine, every column as text) over the large manifest, in this process
  (limit: ours no slower).

Exit 0 when both targets hold, 1 when one fails.

    python bench/manifest_scale.py [--sizes 125000 1000000] [--scratch /tmp] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scale import measure  # noqa: E402

CLASSES = [(f"c{i:04d}", f"concept {i}") for i in range(300)]
WORDS = [f"word{i}" for i in range(5000)]
LIMIT_KB = 2.0
BYTES_PER_ROW = 4096  # disk needed per row: the manifest (~330 B) and its dataset (~1.5 KB), with room


def write_manifest(path: Path, rows: int, seed: int = 0) -> None:
    """A synthetic manifest of `rows` photos (the same for a seed)."""
    rng = random.Random(seed)
    names = [name for _, name in CLASSES]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "tags", "text", "labels"])
        for i in range(rows):
            tags = " ".join(rng.choices(WORDS, k=rng.randint(0, 12)))
            text = " ".join(rng.choices(WORDS, k=rng.randint(7, 49)))
            labels = "|".join(sorted(rng.sample(names, rng.randint(1, 3))))
            writer.writerow([f"photo-{i:08d}", tags, text, labels])


def read_speeds(path: Path, classes: Path) -> dict:
    """Seconds for one pass of our reader and of `pandas.read_csv` over the same manifest."""
    import pandas as pd

    from app.sources.classes import read_class_list
    from app.sources.manifest import ManifestReader

    started = time.perf_counter()
    rows = sum(1 for _ in ManifestReader(path, read_class_list(classes)).rows())
    ours = time.perf_counter() - started
    started = time.perf_counter()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    theirs = time.perf_counter() - started
    if len(frame) != rows:
        raise SystemExit(f"row counts differ: ours {rows}, pandas {len(frame)}")
    return {"rows": rows, "ours_s": round(ours, 2), "pandas_s": round(theirs, 2)}


def check_disk(folder: Path, sizes: list) -> None:
    """Refuses (exit 2) when `folder`'s disk has less free space than the run needs."""
    need = sum(sizes) * BYTES_PER_ROW
    free = shutil.disk_usage(folder).free
    if free < need:
        raise SystemExit(f"error: {folder}: {free / 1e9:.1f} GB free, the run needs {need / 1e9:.1f} GB")


def run(work: Path, sizes: list) -> dict:
    """Measures both sizes and the read speed in `work`; returns the results."""
    classes = work / "classes.csv"
    classes.write_text("name,id\n" + "".join(f"{name},{cid}\n" for cid, name in CLASSES))
    results: dict = {"classes": len(CLASSES), "prepare": {}}
    for size in sizes:
        manifest = work / f"photos-{size}.csv"
        started = time.perf_counter()
        write_manifest(manifest, size)
        print(f"wrote {manifest.name} ({manifest.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
        measured = measure([sys.executable, "app/prepare.py", "--manifest", str(manifest), "--classes", str(classes),
                            "--out", str(work / f"data-{size}"), "--no-progress"], work / f"prepare-{size}.log")
        if measured["rc"] != 0:
            raise SystemExit(f"prepare failed ({measured}):\n{(work / f'prepare-{size}.log').read_text()[-3000:]}")
        results["prepare"][size] = measured
        print(f"prepare {size:>8} photos: {measured}", file=sys.stderr)
        shutil.rmtree(work / f"data-{size}")
        if size != max(sizes):
            manifest.unlink()
    small, large = sizes
    marginal = (results["prepare"][large]["peak_kb"] - results["prepare"][small]["peak_kb"]) / (large - small)
    results["kb_per_photo"] = round(marginal, 3)
    results["read"] = read_speeds(work / f"photos-{large}.csv", classes)
    results["memory_ok"] = marginal <= LIMIT_KB
    results["speed_ok"] = results["read"]["ours_s"] <= results["read"]["pandas_s"]
    return results


def main(argv=None) -> int:
    """Runs the bench in a scratch folder (deleted at the end); prints the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[125_000, 1_000_000])
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the scratch folder is made [default: the temp folder]")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (to inspect the logs)")
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes)
    args.scratch.mkdir(parents=True, exist_ok=True)
    check_disk(args.scratch, sizes)
    work = Path(tempfile.mkdtemp(prefix="manifest-scale-", dir=args.scratch))
    try:
        results = run(work, sizes)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1))
    return 0 if results["memory_ok"] and results["speed_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
