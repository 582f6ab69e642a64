"""YFCC100M ingest speed: our chunked scan against the csv-reader baseline, plus peak memory.

Generates real-format 25-field lines (about 600 bytes, percent-encoded text, real URL forms),
of which about 2% are wanted (as Open Images photos are in YFCC100M), then measures in one run:
  * baseline: Python's csv reader over the file, looking up each id in a set (the original tool's method);
  * ours: `app.sources.yfcc.scan_dataset` (every line checked, wanted lines decoded);
and the peak memory of the scan at 100k against 1M lines (each in a fresh process).

    python bench/yfcc_ingest.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def generate(path: Path, lines: int, seed: int = 0) -> set:
    rng = random.Random(seed)
    words = ["dog", "cat", "new+york", "canon", "2009", "beach", "sunset", "hund", "caf%C3%A9", "rock%2C+paper"]
    wanted = set()
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(lines):
            pid = 3_000_000_000 + i * 13
            if rng.random() < 0.02:
                wanted.add(str(pid).encode())
            tags = ",".join(rng.choice(words) for _ in range(rng.randint(0, 14)))
            desc = "+".join(rng.choice(words) for _ in range(rng.randint(8, 40)))
            handle.write(
                f"{i}\t{pid}\t4ccb23d8746b8d9d76ffd603fc7988\t15087210@N00\thenribergius\t2011-09-10 21:13:32.0\t"
                f"1316432672\tNokia+N950\tAround+the+waterpipe\t{desc}\t{tags}\t\t24.93\t60.17\t16\t"
                f"http://www.flickr.com/photos/15087210@N00/{pid}/\thttp://farm7.staticflickr.com/6167/{pid}_5d22abd711.jpg"
                f"\tAttribution-ShareAlike License\thttp://creativecommons.org/licenses/by-sa/2.0/\t6167\t7\t5d22abd711\t"
                f"44e5acb0f2\tjpg\t0\n")
    return wanted


def csv_baseline(path: Path, wanted: set) -> int:
    wanted_text = {w.decode() for w in wanted}
    found = 0
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row[1] in wanted_text:
                found += 1
    return found


def ours(path: Path, wanted: set) -> int:
    from app.badrows import BadRows
    from app.sources.yfcc import scan_dataset

    return sum(1 for _ in scan_dataset(path, wanted, BadRows()))


def peak_memory(lines: int, folder: Path) -> float:
    """Peak RSS (MB) of a fresh process scanning a file of `lines` lines."""
    code = f"""
import resource, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from bench.yfcc_ingest import generate, ours
from pathlib import Path
path = Path({str(folder)!r}) / "mem_{lines}.tsv"
wanted = generate(path, {lines})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ours(path, wanted)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "yfcc100m_dataset"
        wanted = generate(path, args.lines)
        size = path.stat().st_size
        results = {"lines": args.lines, "bytes": size, "mean_line_bytes": round(size / args.lines, 1),
                   "wanted": len(wanted)}
        for name, fn in (("csv_reader_baseline", csv_baseline), ("ours", ours)):
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                found = fn(path, wanted)
                best = min(best, time.perf_counter() - started)
            assert found == len(wanted), (name, found, len(wanted))
            results[name] = {"seconds": round(best, 3), "MB_per_s": round(size / best / 1e6, 1),
                             "lines_per_s": round(args.lines / best)}
        results["speedup_vs_csv"] = round(results["ours"]["MB_per_s"] / results["csv_reader_baseline"]["MB_per_s"], 2)
        results["minutes_for_61GB"] = round(61e9 / (results["ours"]["MB_per_s"] * 1e6) / 60, 1)
        path.unlink()
        results["peak_rss_MB"] = {"100k lines": round(peak_memory(100_000, folder), 1),
                                  "1M lines": round(peak_memory(1_000_000, folder), 1)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
