"""Peak memory and time of each pipeline step at two dataset sizes: is memory flat in the photos?

Each step runs as the command a user types, in a fresh process, at demo sizes N (train photos;
validation and test get N/4 each, YFCC100M-only photos 3N):

    prepare            python app/prepare.py --oid-dir ... --yfcc ... --images ... (the sources of
                       `prepare.py --demo --demo-size N`, made once and not measured)
    train-contextual   python app/train.py --model contextual (frozen backbone: features extracted, each
                       time from an empty feature cache, then the head)
    train-tags         python app/train.py --model tags
    evaluate           python app/evaluate.py --model contextual --compare tags image
    search             python tuning/search.py (tags, a few trials)

Memory that a setting bounds (prepare's `--bucket-photos`, training's `--shuffle-buffer`, each
10,000 photos by default) grows with the photos until they fill it, then stays. So that both sizes
are past those bounds and the marginal figure shows only what grows per photo, the steps run with
both set to 256 (`CAP`); the bounded part is at most the bound times a record's size. `search` runs
with its defaults. Fixed bounds with no setting are small for the same reason: the readers' 1 MB
blocks of text, 8,192-row batches into the buckets and 4 MB bucket buffers (with 8 MB blocks and
64k-row batches the smaller size sat below them, and prepare looked like +5.8 KB per photo).

Peak RSS is the step's own: a fresh intermediate process (this file's `measure` command, standard
library only) runs the step and reads `getrusage(RUSAGE_CHILDREN).ru_maxrss`, the peak of the
step's process and not of this parent. The table gives, per step, the peak at each size (a range
over `--repeats`), the marginal KB per additional train photo (the worst case over repeats: the
largest peak at the large size minus the smallest at the small size), the seconds at each size,
and pass/fail against `--limit-kb` (2 KB per photo, issue 15).

Sizes alternate within each step (small, large, small, large, ...), each measurement is a fresh
process. Results are saved after every measurement in WORK/results.json and a re-run resumes:
measured (step, size, repeat) are not redone (`--fresh` starts over); the prepared datasets stay in
WORK/data-N and are reused. Runs the steps need but that are not measured (the image-only run that
evaluate compares) are made once. Logs: WORK/logs/.

    python bench/scale.py [--sizes 4000 32000] [--steps prepare evaluate ...] [--repeats 1] [--epochs 2]
                          [--trials 2] [--work bench/results/scale] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/scale.py`: the repository root is importable
    sys.path.insert(0, str(ROOT))

from app.records.dataset import is_complete_dataset  # noqa: E402
from app.runs.rundir import RunDir  # noqa: E402

STEPS = ("prepare", "train-contextual", "train-tags", "evaluate", "search")
LIMIT_KB = 2.0
CAP = 256  # prepare's photos per bucket and training's shuffle buffer, so that both sizes are past them


def measure(argv: list, log_path: Path) -> dict:
    """Runs `argv` from a fresh intermediate process; returns its peak RSS (KB), seconds and exit code."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "measure", str(log_path), "--", *argv],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def measure_main(log_path: str, argv: list) -> None:
    """The intermediate process: runs the step, then prints its peak RSS, seconds and exit code.

    `RUSAGE_CHILDREN` covers the step and any process it waited for, never this process.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.run(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KB on Linux
    print(json.dumps({"peak_kb": peak, "seconds": round(seconds, 1), "rc": code}))


class Bench:
    """The work folder: cached datasets, runs, logs and the results measured so far.

    Args:
        work: the folder.
        epochs: training epochs of every run.
        trials: search trials.
    """

    def __init__(self, work: Path, epochs: int, trials: int):
        self.work, self.epochs, self.trials = work, epochs, trials
        (work / "logs").mkdir(parents=True, exist_ok=True)
        self.results_path = work / "results.json"
        self.results = json.loads(self.results_path.read_text()) if self.results_path.exists() else []

    def data(self, size: int) -> Path:
        return self.work / f"data-{size}"

    def features(self, size: int) -> Path:
        """The dataset's backbone feature cache (`app.training.features.default_cache_root`)."""
        data = self.data(size).resolve()
        return data.parent / f".{data.name}.features"

    def run_dir(self, size: int, kind: str) -> Path:
        return self.work / f"runs-{size}" / kind

    def command(self, step: str, size: int) -> list:
        """The step's command line at `size`, after clearing what it must write afresh."""
        py, data = sys.executable, str(self.data(size))
        if step == "make-data":
            return [py, "app/prepare.py", "--demo", "--demo-size", str(size), "--out", data, "--no-progress",
                    "--bucket-photos", str(CAP)]
        if step == "prepare":  # the demo world's source files (real formats), prepared again
            raw, out = self.data(size) / "raw", self.work / f"prepare-{size}"
            shutil.rmtree(out, ignore_errors=True)
            return [py, "app/prepare.py", "--oid-dir", str(raw / "oid"), "--yfcc", str(raw / "yfcc100m_dataset"),
                    "--autotags", str(raw / "yfcc100m_autotags"), "--extra-tags", str(raw / "extra_tags.tsv"),
                    "--images", str(raw / "images"), "--out", str(out), "--no-progress", "--bucket-photos", str(CAP)]
        if step.startswith("train-"):
            run = self.run_dir(size, step.split("-", 1)[1])
            shutil.rmtree(run, ignore_errors=True)
            if step == "train-contextual":  # measured with its feature extraction, every time
                shutil.rmtree(self.features(size), ignore_errors=True)
            return self.train_command(size, step.split("-", 1)[1], run)
        if step == "evaluate":
            runs = [str(self.run_dir(size, kind)) for kind in ("contextual", "tags", "image")]
            return [py, "app/evaluate.py", "--model", runs[0], "--compare", *runs[1:], "--no-progress"]
        out = self.work / f"search-{size}"
        shutil.rmtree(out, ignore_errors=True)
        return [py, "tuning/search.py", "--data", data, "--max-trials", str(self.trials), "--epochs",
                str(self.epochs), "--out", str(out), "--no-progress"]

    def train_command(self, size: int, kind: str, run: Path) -> list:
        return [sys.executable, "app/train.py", "--model", kind, "--data", str(self.data(size)), "--out", str(run),
                "--epochs", str(self.epochs), "--no-progress", "--shuffle-buffer", str(CAP)]

    def ensure_inputs(self, step: str, size: int) -> None:
        """Makes (unmeasured) the dataset and the runs a step reads, when they are missing."""
        if not is_complete_dataset(self.data(size)):
            self.make(self.command("make-data", size), f"data-{size}")
        kinds = ("contextual", "tags", "image") if step == "evaluate" else ()
        for kind in kinds:
            run = self.run_dir(size, kind)
            if not RunDir(run).is_complete():
                shutil.rmtree(run, ignore_errors=True)
                self.make(self.train_command(size, kind, run), f"{kind}-{size}")

    def make(self, argv: list, name: str) -> None:
        print(f"  making {name} (not measured)", file=sys.stderr)
        log = self.work / "logs" / f"make-{name}.log"
        with open(log, "w") as handle:
            if subprocess.run(argv, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT).returncode:
                sys.exit(f"{' '.join(argv)} failed; see {log}")

    def done(self, step: str, size: int, rep: int) -> bool:
        return any((r["step"], r["size"], r["rep"]) == (step, size, rep) for r in self.results)

    def measure_step(self, step: str, size: int, rep: int) -> dict:
        self.ensure_inputs(step, size)
        log = self.work / "logs" / f"{step}-{size}-{rep}.log"
        result = measure(self.command(step, size), log)
        if result["rc"] != 0:
            sys.exit(f"{step} at {size} failed with exit code {result['rc']}; see {log}")
        row = {"step": step, "size": size, "rep": rep, **result, "load_1min": round(os.getloadavg()[0], 2),
               "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.results.append(row)
        self.results_path.write_text(json.dumps(self.results, indent=1))
        return row


def table(results: list, steps: list, sizes: list, limit_kb: float) -> str:
    """The Markdown table: peak RSS at each size, marginal KB per photo, seconds, pass/fail."""
    small, large = sizes
    head = (f"| step | peak RSS at {small} (MB) | peak RSS at {large} (MB) | marginal KB per photo | "
            f"seconds at {small} | seconds at {large} | ≤ {limit_kb:g} KB |")
    lines = [head, "|---" * 7 + "|"]
    for step in steps:
        rows = {size: [r for r in results if r["step"] == step and r["size"] == size] for size in sizes}
        if not all(rows.values()):
            continue
        peaks = {size: [r["peak_kb"] for r in rows[size]] for size in sizes}
        worst = (max(peaks[large]) - min(peaks[small])) / (large - small)
        best = (min(peaks[large]) - max(peaks[small])) / (large - small)
        marginal = f"{worst:+.2f}" if len(rows[small]) == len(rows[large]) == 1 else f"{best:+.2f} – {worst:+.2f}"
        lines.append(f"| {step} | {span(peaks[small], 1024)} | {span(peaks[large], 1024)} | {marginal} | "
                     f"{span([r['seconds'] for r in rows[small]])} | {span([r['seconds'] for r in rows[large]])} | "
                     f"{'pass' if worst <= limit_kb else 'FAIL'} |")
    return "\n".join(lines)


def span(values: list, unit: float = 1.0) -> str:
    low, high = min(values) / unit, max(values) / unit
    return f"{low:.0f}" if round(low) == round(high) else f"{low:.0f} – {high:.0f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[4000, 32000], help="two demo sizes (train photos)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--repeats", type=int, default=1, help="measurements per step and size, sizes alternating")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each training run and search trial")
    parser.add_argument("--trials", type=int, default=2, help="search trials")
    parser.add_argument("--limit-kb", type=float, default=LIMIT_KB, help="pass: at most this many KB per photo")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "scale")
    parser.add_argument("--fresh", action="store_true", help="forget the measurements saved in WORK/results.json")
    args = parser.parse_args(argv)
    sizes = sorted(args.sizes)
    if sizes[1] < 8 * sizes[0]:
        parser.error(f"--sizes must be at least 8x apart. Received: {sizes[0]} and {sizes[1]}")
    bench = Bench(args.work.resolve(), args.epochs, args.trials)
    if args.fresh:
        bench.results = []
    for rep in range(args.repeats):
        for step in args.steps:
            for size in sizes:
                if bench.done(step, size, rep):
                    continue
                row = bench.measure_step(step, size, rep)
                print(f"{step} at {size} (repeat {rep + 1}): peak {row['peak_kb'] / 1024:.0f} MB, "
                      f"{row['seconds']:.0f}s, load {row['load_1min']}", file=sys.stderr)
    print(table(bench.results, args.steps, sizes, args.limit_kb))


if __name__ == "__main__":
    if sys.argv[1:2] == ["measure"]:
        measure_main(sys.argv[2], sys.argv[sys.argv.index("--") + 1:])
    else:
        main()
