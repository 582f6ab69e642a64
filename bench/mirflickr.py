"""MIRFLICKR-25K as a real benchmark of the tag side, over split seeds.

    python bench/mirflickr.py DIR [--seeds 0 1 2] [--work bench/results/mirflickr]
                              [--report tuning/results/mirflickr-DATE.md] [--arm "label: train.py flags"]

DIR is a MIRFLICKR-25K folder (all_imgs.txt, all_tags.txt, all_labels.txt; e.g.
../shared/reference/mirflickr25k). For each split seed the bench prepares DIR with `prepare.py
--mirflickr DIR --split-seed N` (60/10/30), then scores on the test split (choices are made on
validation):

* the label prior (each class scored by its train frequency, `app.evaluation.baselines`);
* one-vs-rest logistic regression on the binary tag bag of words of all_tags.txt (scikit-learn,
  C chosen on validation class mAP), the ten lines a user would write;
* each arm of `ARMS`, a list of `app/train.py` flags trained with the seed (an arm is one line; `--arm`
  adds one for a run); the contextual model only when DIR holds the photos (`mirflickr/`).

It writes class mAP, photo mAP, CF1@3 and OF1@3 as mean ± std over the seeds, the paired difference
against the logistic regression with a 95% t-interval ("no gain" where it includes 0), each arm's
training time (wall seconds, early stopping on) and the machine's load average while it trained,
between two markers of the results page (what the page holds around them is kept).
Prepared data, run folders and scores are kept under --work, so a re-run only does what is missing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # `python bench/mirflickr.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import guarded, setup_logging  # noqa: E402
from app.errors import InputError  # noqa: E402
from app.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from tuning.compare import Arm, _labelled, flag_values, train_arm  # noqa: E402
from tuning.paired import PairedDifference, mean_std  # noqa: E402

log = logging.getLogger("bench.mirflickr")
ARMS = (
    # The defaults: the tag embedding starts from the text encoder's vectors, frozen (chosen on validation,
    # tuning/results/2026-12-04-text-encoder.md).
    Arm("tags, defaults (encoder vectors, frozen)", ("--model", "tags")),
    Arm("tags, learned from scratch", ("--model", "tags", "--word-vectors", "scratch")),
    # Chosen on split seed 0's validation mAP among 23 settings learned from scratch (tuning/results/mirflickr-2026-12-05.md).
    Arm("tags, from scratch, best on validation", ("--model", "tags", "--word-vectors", "scratch", "--embedding-dim", "256")),
    # Chosen on split seed 0's validation mAP among 21 settings with the encoder's frozen vectors
    # (tuning/results/mirflickr-2026-12-05.md).
    Arm("tags, encoder vectors, best on validation", ("--model", "tags", "--dropout", "0.3")),
    Arm("tags, encoder vectors, dropout 0.3, 256 hidden units", ("--model", "tags", "--dropout", "0.3", "--hidden-units", "256")),
    # A linear tag x class path beside the deep one (wide and deep), measured after the search above.
    Arm("tags, encoder vectors, wide tag path, dropout 0.3", ("--model", "tags", "--wide-tags", "--dropout", "0.3")),
)
CONTEXTUAL = Arm("contextual", ("--model", "contextual"))  # only where the photos are there
LR, PRIOR = "logistic regression (tag bag of words)", "label prior"
C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
START, END = "<!-- bench/mirflickr.py: generated from here -->", "<!-- bench/mirflickr.py: generated up to here -->"
METRICS = {"class mAP": lambda r: r["class_map"], "photo mAP": lambda r: r["photo_map"],
           "CF1@3": lambda r: r["top_k"]["cf1"], "OF1@3": lambda r: r["top_k"]["of1"]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mirflickr", type=Path, nargs="?", help="the MIRFLICKR-25K folder (all_imgs.txt, all_tags.txt, "
                                                           "all_labels.txt)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="split seeds [default: 0 1 2]")
    p.add_argument("--work", type=Path, default=Path("bench/results/mirflickr"),
                   help="prepared data, runs and scores [default: %(default)s]")
    p.add_argument("--report", type=Path, help="the results page [default: tuning/results/mirflickr-TODAY.md]")
    p.add_argument("--arm", action="append", default=[], help="another arm: 'label: app/train.py flags'")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(flag_values(argv, ("--arm",)))
    if args.mirflickr is None:
        p.error("give the MIRFLICKR-25K folder, e.g. python bench/mirflickr.py ../shared/reference/mirflickr25k")
    return args


def prepare_seed(root: Path, seed: int, work: Path) -> Path:
    """The dataset of one split seed (prepared once; `prepare.py --mirflickr`)."""
    from app import prepare
    from app.records.dataset import DatasetError, DatasetInfo

    data = work / f"data-seed{seed}"
    try:
        if DatasetInfo.load(data).stats["collection"]["hash_split"]["seed"] == seed:
            return data
    except DatasetError:
        pass
    prepare.main(["--mirflickr", str(root), "--split-seed", str(seed), "--out", str(data), "--no-progress"])
    return data


def train_seed(arm: Arm, seed: int, data: Path, runs: Path) -> dict:
    """Trains one arm (or finds it trained) and returns its metrics.json with the load average and
    the CPU seconds of this process (every thread: a figure the machine's other jobs barely move)
    measured while it trained (kept beside the run; None for a run trained elsewhere)."""
    from app.runs.rundir import RunDir

    run_dir, loads = arm.run_dir(runs, seed), runs / f"{arm.run_dir(runs, seed).name}.load.json"
    before, cpu = os.getloadavg()[0], time.process_time()
    trained = not RunDir(run_dir).is_complete()
    train_arm(arm, seed, data, runs, progress=False)
    if trained or not loads.exists():
        atomic_write_json(loads, {"load_before": before, "load_after": os.getloadavg()[0],
                                  "cpu_seconds": time.process_time() - cpu if trained else None})
    return {**RunDir(run_dir).metrics(), **json.loads(loads.read_text())}


def model_reports(run_dir: Path, data: Path, splits: tuple = ("validation", "test")) -> dict:
    """`{split: {"model": report, PRIOR: report}}`: the exhaustive report of a run and of the label
    prior on each split (`evaluate.py`'s functions)."""
    from app.evaluation import baselines
    from app.evaluation.exhaustive import complete_pairs, exhaustive_report
    from app.evaluation.scoring import TrainedModel
    from app.evaluation.truth import class_counts, load_truth
    from app.records.dataset import DatasetInfo

    info, model = DatasetInfo.load(data), TrainedModel(run_dir)
    prior = baselines.label_prior(*class_counts(info, "train"))
    out = {}
    for split in splits:
        truth = load_truth(info, split)
        scores = {"model": model.score(info, split, truth), PRIOR: baselines.class_pair_scores(prior, truth.pairs)}
        out[split] = {name: exhaustive_report(*complete_pairs(truth.pairs, s)) for name, s in scores.items()}
    return out


def read_split_photos(root: Path, seed: int) -> dict:
    """`{split: (tag lists, [photos, 24] labels)}` of all_tags.txt and all_labels.txt, split as
    `prepare.py --mirflickr --split-seed seed` splits them (the raw tags: no cleaning, no limit)."""
    from app.badrows import BadRows
    from app.prepare import MIRFLICKR_TEST_FRACTION
    from app.sources.mirflickr import MirFlickr
    from app.sources.photo import HashSplit

    source, split_of = MirFlickr(root), HashSplit(MIRFLICKR_TEST_FRACTION, 0.1, seed)
    out: dict = {s: ([], []) for s in ("train", "validation", "test")}
    for photo in source.photos(BadRows()):
        tags, labels = out[split_of(photo.image_id)]
        tags.append(photo.tags)
        labels.append(np.isin(np.arange(len(source.classes)), photo.labels).astype(np.int8))
    return {s: (tags, np.stack(labels)) for s, (tags, labels) in out.items()}


def logistic_regression(photos: dict) -> dict:
    """One-vs-rest logistic regression on the binary tag bag of words: C chosen on validation class mAP.

    Returns:
        `{"C", "validation": report, "test": report}` (`app.evaluation.exhaustive.exhaustive_report`).
    """
    try:
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
    except ImportError:
        raise InputError("the logistic-regression baseline needs scikit-learn: pip install -e '.[bench]'") from None

    from app.evaluation.exhaustive import exhaustive_report

    words = CountVectorizer(analyzer=lambda tags: tags, binary=True).fit(photos["train"][0])
    x = {split: words.transform(tags) for split, (tags, _) in photos.items()}

    def fit(c: float):
        with warnings.catch_warnings():  # a class without a train positive (tiny data) is scored constant
            warnings.simplefilter("ignore", UserWarning)
            return OneVsRestClassifier(LogisticRegression(C=c, solver="liblinear")).fit(x["train"], photos["train"][1])

    scored = {c: exhaustive_report(fit(c).predict_proba(x["validation"]), photos["validation"][1]) for c in C_GRID}
    best = max(C_GRID, key=lambda c: scored[c]["class_map"])
    test = exhaustive_report(fit(best).predict_proba(x["test"]), photos["test"][1])
    return {"C": best, "validation": scored[best], "test": test}


def run_seed(root: Path, seed: int, arms: list, work: Path) -> dict:
    """Every system on one split seed: `{"systems": {name: {split: report}}, "training": {arm: metrics}}`."""
    cache = work / f"scores-seed{seed}.json"
    data = prepare_seed(root, seed, work)
    training = {arm.label: train_seed(arm, seed, data, work / "runs") for arm in arms}
    saved = json.loads(cache.read_text()) if cache.exists() else {}
    if saved.get("training") == training and set(saved.get("systems", {})) >= {a.label for a in arms}:
        return saved
    systems: dict = {}
    for arm in arms:
        reports = model_reports(arm.run_dir(work / "runs", seed), data)
        systems[arm.label] = {split: r["model"] for split, r in reports.items()}
        systems[PRIOR] = {split: r[PRIOR] for split, r in reports.items()}
    lr = saved.get("systems", {}).get(LR) or logistic_regression(read_split_photos(root, seed))
    systems[LR] = lr
    result = {"seed": seed, "systems": systems, "training": training}
    atomic_write_json(cache, result)
    return result


def table(results: list, split: str, systems: list) -> list[str]:
    """Mean ± std per system and metric, then the paired difference against the logistic regression."""
    values = {s: {m: [f(r["systems"][s][split]) for r in results] for m, f in METRICS.items()} for s in systems}
    lines = ["| system | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    lines += [f"| {s} | " + " | ".join("%.3f ± %.3f" % mean_std(values[s][m]) for m in METRICS) + " |" for s in systems]
    lines += ["", f"Paired difference against the logistic regression (mean [95% t-interval over {len(results)} "
                  f"seeds], {split}):", "", "| system | " + " | ".join(METRICS) + " |",
              "|---" * (len(METRICS) + 1) + "|"]
    lines += [f"| {s} − LR | " + " | ".join(str(PairedDifference.of(values[s][m], values[LR][m])) for m in METRICS)
              + " |" for s in systems if s != LR]
    return lines


def training_lines(results: list, arms: list) -> list[str]:
    lines = ["| arm | app/train.py flags | wall seconds (mean ± std, max) | CPU seconds | epochs | best epoch | load "
             "average (1 min) during training |", "|---|---|---|---|---|---|---|"]
    for arm in arms:
        rows = [r["training"][arm.label] for r in results]
        seconds = [row["seconds"] for row in rows]
        loads = ", ".join(f"{row['load_before']:.1f}→{row['load_after']:.1f}" for row in rows)
        cpu = ", ".join("?" if row.get("cpu_seconds") is None else f"{row['cpu_seconds']:.0f}" for row in rows)
        lines.append(f"| {arm.label} | `{' '.join(arm.flags)}` | {'%.0f ± %.0f' % mean_std(seconds)}, "
                     f"{max(seconds):.0f} | {cpu} | {', '.join(str(row['epochs']) for row in rows)} | "
                     f"{', '.join(str(row['best_epoch']) for row in rows)} | {loads} |")
    return lines


def best_arm(results: list, arms: list) -> str:
    """The model arm with the highest mean validation class mAP over the seeds (the goals are about it)."""
    return max((a.label for a in arms), key=lambda label: np.mean(
        [r["systems"][label]["validation"]["class_map"] for r in results]))


def goal_lines(results: list, arms: list) -> list[str]:
    """The issue's goals for the best arm on validation: class mAP ≥ LR + 0.02, photo mAP ≥ LR, training ≤ 60 s."""
    if not arms or not all(a.label in r["systems"] for a in arms for r in results):
        return []
    best = best_arm(results, arms)

    def diff(metric: str) -> PairedDifference:
        f = METRICS[metric]
        return PairedDifference.of([f(r["systems"][best]["test"]) for r in results],
                                   [f(r["systems"][LR]["test"]) for r in results])

    seconds = max(r["training"][best]["seconds"] for r in results)
    class_gap, photo_gap = diff("class mAP"), diff("photo mAP")
    return [f"The best model arm on validation (mean class mAP over the seeds): {best}.", "",
            f"- class mAP ≥ LR + 0.02: {class_gap.mean:+.4f} over LR → {'met' if class_gap.mean >= 0.02 else 'NOT met'}",
            f"- photo mAP ≥ LR: {photo_gap.mean:+.4f} ({photo_gap}) → {'met' if photo_gap.mean >= 0 else 'NOT met'}",
            f"- training with early stopping ≤ 60 s: at most {seconds:.0f} s of wall time → "
            f"{'met' if seconds <= 60 else 'NOT met'} as measured (a shared 2-core machine: see the load averages "
            f"and the CPU seconds under Training)"]


def report(root: Path, results: list, arms: list, contextual: bool) -> str:
    systems = [PRIOR, LR] + [a.label for a in arms]
    c_values = ", ".join(str(r["systems"][LR]["C"]) for r in results)
    seeds = ", ".join(str(r["seed"]) for r in results)
    lines = [f"# MIRFLICKR-25K benchmark ({datetime.date.today()})", "",
             f"`python bench/mirflickr.py {root}`: {root} split 60/10/30 by seeds {seeds} "
             f"(`prepare.py --mirflickr DIR --split-seed N`); each model arm trained with the split's seed, early "
             f"stopping on (validation mAP); the logistic regression's C chosen on validation class mAP (chosen: "
             f"{c_values}). Test split, mean ± std over the seeds:", "", *table(results, "test", systems), "",
             "Contextual (image + tags): " + ("trained, in the table." if contextual else
                                               "n/a: the folder has no photos (no `mirflickr/`), so the image branch "
                                               "would only see missing images."),
             "", "## Goals (test)", "", *goal_lines(results, [a for a in arms if a is not CONTEXTUAL]), "",
             "## Training", "", *training_lines(results, arms),
             "", "## Validation split (where choices are made)", "", *table(results, "validation", systems), ""]
    return "\n".join(lines)


def _arm(text: str) -> Arm:
    """An arm from `--arm 'label: flags'` (without a label: named by its flags)."""
    label, flags = _labelled(text)
    return Arm(label or Arm("", flags).slug, flags)


def within_page(path: Path, text: str) -> str:
    """The results page with `text` between its bench markers; what is written around them (the
    search, notes) is kept."""
    generated = f"{START}\n{text}\n{END}"
    page = path.read_text(encoding="utf-8") if path.exists() else ""
    if START in page and END in page:
        return page[:page.index(START)] + generated + page[page.index(END) + len(END):]
    return generated + "\n" + page


@guarded
def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging(args.verbose)
    arms = list(ARMS) + [_arm(text) for text in args.arm]
    contextual = (args.mirflickr / "mirflickr").is_dir()
    if contextual:
        arms.append(CONTEXTUAL)
    results = [run_seed(args.mirflickr, seed, arms, args.work) for seed in args.seeds]
    text = report(args.mirflickr, results, arms, contextual)
    out = args.report or Path("tuning/results") / f"mirflickr-{datetime.date.today()}.md"
    atomic_write_text(out, within_page(out, text))
    print(text + f"\nwritten: {out}")
    return {"results": results, "report": str(out)}


if __name__ == "__main__":
    main()
