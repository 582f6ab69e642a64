"""Prepare's peak memory and time against the number of photos, each run in a fresh process.

For each demo size, the demo world is generated first (in its own process), then prepared from its
files through the real-sources command line (`--oid-dir --yfcc --autotags --extra-tags --images`)
in a fresh process that reports its peak RSS (VmHWM). The marginal memory per photo is the
difference of the peaks over the difference of the photo counts (Open Images and `yfcc` photos).

    python bench/prepare_memory.py [--sizes 4000 32000] [--work /tmp/prepare-memory] [--demo]

`--demo` times `app/prepare.py --demo --demo-size N` end to end instead (generation included).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK = "import atexit, re; atexit.register(lambda: print('VMHWM_KB', re.search(r'VmHWM:\\s+(\\d+)', " \
       "open('/proc/self/status').read()).group(1)))"


def run_measured(argv: list, cwd: Path) -> tuple[float, int, str]:
    """Runs `python app/prepare.py ARGV` in a fresh process; returns seconds, peak RSS in KB, output."""
    code = f"{PEAK}; import sys; sys.argv = ['app/prepare.py', *{argv!r}]; import runpy; " \
           f"runpy.run_path('app/prepare.py', run_name='__main__')"
    started = time.time()
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    peak = int(done.stdout.rsplit("VMHWM_KB", 1)[1].split()[0])
    return time.time() - started, peak, done.stdout


def world(size: int, folder: Path) -> int:
    """Generates the demo world of `size` train photos; returns its number of photos."""
    code = ("import sys; sys.path.insert(0, '.'); from app.demo.world import WorldConfig, write_world; "
            f"write_world({str(folder)!r}, WorldConfig(train_size={size}, validation_size={size // 4}, "
            f"test_size={size // 4}, extra_yfcc={3 * size}))")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
    return size + 2 * (size // 4) + 3 * size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 32000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/prepare-memory"))
    parser.add_argument("--demo", action="store_true", help="time prepare --demo end to end")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        work = args.work / str(size)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        if args.demo:
            photos = size + 2 * max(50, size // 4) + 3 * size
            seconds, peak, out = run_measured(["--demo", "--demo-size", str(size), "--out", str(work / "out"),
                                               "--no-progress"], ROOT)
        else:
            photos = world(size, work / "raw")
            raw = work / "raw"
            seconds, peak, out = run_measured(
                ["--oid-dir", str(raw / "oid"), "--yfcc", str(raw / "yfcc100m_dataset"), "--autotags",
                 str(raw / "yfcc100m_autotags"), "--extra-tags", str(raw / "extra_tags.tsv"), "--images",
                 str(raw / "images"), "--out", str(work / "out"), "--no-progress"], ROOT)
        rows.append({"train": size, "photos": photos, "seconds": round(seconds, 1), "peak_rss_mb": round(peak / 1024, 1)})
        print(json.dumps(rows[-1]), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    for small, large in zip(rows, rows[1:]):
        marginal = (large["peak_rss_mb"] - small["peak_rss_mb"]) * 1024 / (large["photos"] - small["photos"])
        print(f"marginal {small['train']} -> {large['train']} train photos: {marginal:.3f} KB per photo")


if __name__ == "__main__":
    main()
