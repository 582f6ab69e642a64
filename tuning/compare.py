"""Paired comparison of a method against its control, trained on the same seeds.

    python tuning/compare.py --name image-presence --control "--no-image-presence" \\
        --method "--image-presence --image-dropout 0.5" --references "tags: --model tags; image: --model image"

Each arm is a set of `app/train.py` flags; `{seed}` in them becomes the seed (`--pretrained
RUNS/pretrain-seed{seed}`), and an arm's own `--data` trains it on that dataset folder (a teacher's
pseudo-labelled one, whose validation and test photos are the comparison's). Every arm (the control, the method and the references)
is trained with each seed into `OUT/runs/SLUG-seedN/` (SLUG: its flags), through the training path
of `app/train.py`, so an arm shared by several comparisons trains once and a killed driver simply
re-runs (run folders resume, or report "already complete"). Each seed is then evaluated on each
split with `app.evaluation.run_mode.evaluate_run` (the method, compared with the control and the
references: a tags-only and an image-only reference add late fusion), cached in
`OUT/NAME/eval-SPLIT-seedN.json`. `OUT/NAME/compare.md` and `compare.json` get mean ± std (sample
std) per system for mAP and every slice, and the paired difference method − each other system
with a 95% t-interval over the seeds: "no gain" where it includes 0. Choose settings on the
validation split; claim on the test split.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # `python tuning/compare.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import add_common_flags, add_config_flags, config_overrides, guarded, setup_logging  # noqa: E402
from app.config import option  # noqa: E402
from app.errors import InputError  # noqa: E402
from app.fileio import atomic_write_json, atomic_write_text, refuse_output_over_inputs  # noqa: E402
from tuning.paired import PairedDifference, mean_std  # noqa: E402

log = logging.getLogger("compare")
RESERVED = ("--seed", "--name", "--out", "--overwrite", "--local-workers")
BASELINES = ("machine labels", "most likely", "label prior")  # app.evaluation.run_mode.BASELINES


@dataclass
class CompareConfig:
    """The arms of a paired comparison, its seeds and the splits it is scored on."""

    name: str = option("", "(required) comparison name: its folder under --out")
    control: str = option("", "app/train.py flags of the control arm, quoted (\"\" = the defaults)")
    method: str = option("", "app/train.py flags of the method arm, quoted")
    references: str = option("", "more arms on the same seeds, ';'-separated, each maybe labelled: "
                                 "'tags: --model tags; image: --model image' (these two add late fusion)")
    seeds: int = option(3, "seeds per arm")
    first_seed: int = option(0, "the first seed")
    splits: str = option("validation,test", "splits to score, comma-separated (choose on validation, claim on test)")


@dataclass(frozen=True)
class Arm:
    """One arm: a label in the tables and its `app/train.py` flags."""

    label: str
    flags: tuple

    @property
    def slug(self) -> str:
        """The run folder stem: the flags in a file name (`defaults` for none)."""
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", " ".join(self.flags)).strip("-") or "defaults"
        if len(slug) > 120:  # file names have a length limit: keep a readable start and a hash of the rest
            slug = slug[:100] + "-" + hashlib.sha256(slug.encode()).hexdigest()[:10]
        return slug

    def run_dir(self, runs: Path, seed: int) -> Path:
        return runs / f"{self.slug}-seed{seed}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("tfrecords/demo"), help="prepared dataset [default: %(default)s]")
    p.add_argument("--out", type=Path, default=Path("tuning/runs/compare"),
                   help="comparisons folder; runs go to OUT/runs/ [default: %(default)s]")
    add_config_flags(p, CompareConfig, "compare")
    add_common_flags(p)
    return p.parse_args(flag_values(argv, ("--control", "--method", "--references")))


def make_arms(config: CompareConfig) -> list[Arm]:
    """The control, the method and the references, checked: distinct, without the flags the driver sets.

    Raises:
        ValueError: naming the arm and the flag.
    """
    if not config.name or config.seeds < 1:
        raise ValueError(f"give --name and --seeds >= 1. Received: name={config.name!r}, seeds={config.seeds}")
    arms = [Arm("control", tuple(shlex.split(config.control))), Arm("method", tuple(shlex.split(config.method)))]
    for text in filter(str.strip, config.references.split(";")):
        label, flags = _labelled(text)
        arms.append(Arm(label or Arm("", flags).slug, flags))
    for arm in arms:
        bad = [f for f in arm.flags if f.split("=")[0] in RESERVED]
        if bad:
            raise ValueError(f"{arm.label} arm: {bad[0]} is set by the driver (one run folder per arm and seed). "
                             f"Received: {' '.join(arm.flags)!r}")
    slugs = [arm.slug for arm in arms]
    if len(set(slugs)) < len(slugs):
        raise ValueError(f"two arms have the same flags: {slugs}")
    return arms


def flag_values(argv: Optional[list], names: tuple) -> list:
    """`argv` (None: the command line's) with each of the flags `names` joined to its value
    (`--method=--image-presence`), so that a value of train.py flags, which starts with `-`, is read as
    the value and not as another flag."""
    argv, out, i = sys.argv[1:] if argv is None else list(argv), [], 0
    while i < len(argv):
        if argv[i] in names and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _labelled(text: str) -> tuple[str, tuple]:
    """`"tags: --model tags"` -> `("tags", ("--model", "tags"))` (a label may hold spaces and commas);
    without a label, `("", flags)`."""
    match = re.match(r"\s*([^\s-][^:]*?):\s", text)
    return (match.group(1), tuple(shlex.split(text[match.end():]))) if match else ("", tuple(shlex.split(text)))


def arm_args(arm: Arm, seed: int) -> argparse.Namespace:
    """The arm's `app/train.py` flags for one seed, parsed (`{seed}` in them becomes the seed).

    Raises:
        InputError: naming the arm, for a flag train.py does not know or a value it refuses.
    """
    from app.training.flags import parse_args as train_args
    from app.training.flags import run_config

    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            args = train_args([flag.replace("{seed}", str(seed)) for flag in arm.flags] + ["--seed", str(seed)])
        run_config(args)
    except SystemExit:
        why = said.getvalue().strip().splitlines()[-1].split(" error: ", 1)[-1]
        raise InputError(f"{arm.label} arm: {why}. Received: {' '.join(arm.flags)!r}") from None
    except ValueError as err:
        raise InputError(f"{arm.label} arm: {err}") from None
    return args


def train_arm(arm: Arm, seed: int, data: Path, runs: Path, progress: bool) -> None:
    """Trains (or resumes, or finds complete) one arm with one seed, as `app/train.py` would.

    `{seed}` in the arm's flags becomes the seed (`--pretrained RUNS/pretrain-seed{seed}`), and an
    arm's own `--data` trains it on that dataset folder (a teacher's pseudo-labelled one, say); every
    arm is scored on the splits of the comparison's `--data`.
    """
    from app.training.flags import run_config
    from app.training.run import RunOptions, train

    run_dir = arm.run_dir(runs, seed)
    args = arm_args(arm, seed)
    own_data = any(flag.split("=")[0] == "--data" for flag in arm.flags)
    if own_data:
        _check_same_scoring_splits(args.data, data)
    result = train(args.data if own_data else data, run_dir, run_config(args), RunOptions(progress=progress))
    log.info("%s seed %d (%s): %s, val mAP %.4f, test mAP %.4f", arm.label, seed, run_dir.name, result.status,
             result.metrics["val_map"], result.metrics["test_map"])


def _check_same_scoring_splits(arm_data: Path, data: Path) -> None:
    """An arm trained on its own dataset is chosen and scored like the others only if its validation
    and test photos are the comparison's."""
    from app.records.dataset import DatasetInfo

    mine, common = DatasetInfo.load(arm_data), DatasetInfo.load(data)
    for split in ("validation", "test"):
        if mine.split_digest(split) != common.split_digest(split):
            raise ValueError(f"{arm_data}: its {split} split is not that of {data}, so the arm would be chosen and "
                             f"scored on other photos than the others")


def evaluate_seed(arms: list[Arm], seed: int, split: str, data: Path, runs: Path, out: Path) -> dict:
    """`{"summary", "slices", "slice_sizes"}` of one seed on one split, with systems named by arm
    label; cached in `out` and redone when a run folder's record changed."""
    from app.evaluation.run_mode import evaluate_run
    from app.runs.rundir import RunDir

    dirs = [arm.run_dir(runs, seed) for arm in arms]
    records = {str(d): RunDir(d).record() for d in dirs}
    cache = out / f"eval-{split}-seed{seed}.json"
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved["runs"] == records:
            return saved
    result = evaluate_run(dirs[1], data, split, compare=[dirs[0], *dirs[2:]])
    names = {d.name: arm.label for d, arm in zip(dirs, arms)}

    def rename(systems: dict) -> dict:
        return {("late fusion" if s.startswith("late fusion") else names.get(s, s)): v for s, v in systems.items()}

    saved = {"runs": records, "fusion_weight": result.fusion_weight,
             "summary": rename(result.summary), "slice_sizes": result.slice_sizes,
             "exhaustive": rename(result.exhaustive),
             "slices": {k: {label: rename(v) for label, v in group.items()} for k, group in result.slices.items()}}
    atomic_write_json(cache, saved)
    return saved


EXHAUSTIVE_ROWS = {"per-class mAP (every photo, every class)": lambda r: r["class_map"],
                   "per-photo mAP": lambda r: r["photo_map"], "overall F1@3": lambda r: r["top_k"]["of1"],
                   "per-class F1@3": lambda r: r["top_k"]["cf1"]}


def metric_rows(evaluations: list[dict]) -> dict:
    """`{metric: {system: [value per seed]}}`: mAP, the exhaustive metrics where the split is
    exhaustively labelled, then each slice's mAP."""
    rows: dict = {}
    for ev in evaluations:
        for system, metrics in ev["summary"].items():
            rows.setdefault("mAP", {}).setdefault(system, []).append(metrics["map"])
        for system, report in ev.get("exhaustive", {}).items():
            for metric, value in EXHAUSTIVE_ROWS.items():
                rows.setdefault(metric, {}).setdefault(system, []).append(value(report))
        for key, group in ev["slices"].items():
            for label, systems in group.items():
                metric = f"mAP, {label} ({ev['slice_sizes'][key][label]} photos)"
                for system, value in systems.items():
                    rows.setdefault(metric, {}).setdefault(system, []).append(value)
    return rows


def report(name: str, split: str, seeds: list, rows: dict) -> tuple[str, dict]:
    """The markdown tables of one split, and the same as JSON."""
    systems = list(rows["mAP"])
    others = [s for s in systems if s != "method" and s not in BASELINES]
    head = (f"### {name}: {split} split, seeds {', '.join(map(str, seeds))} (mean ± std over {len(seeds)} seeds)"
            if len(seeds) > 1 else f"### {name}: {split} split, seed {seeds[0]} (one seed, no spread: --seeds 3 gives one)")
    lines = [head, "", "| metric | " + " | ".join(systems) + " |", "|---" * (len(systems) + 1) + "|"]
    data: dict = {"split": split, "seeds": seeds, "metrics": {}}
    for metric, values in rows.items():
        cells = []
        for system in systems:
            v = values.get(system)
            cells.append("-" if not v or len(v) < len(seeds) else
                         "%.4f ± %.4f" % mean_std(v) if len(seeds) > 1 else f"{v[0]:.4f}")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        data["metrics"][metric] = {s: v for s, v in values.items()}
    spread = f"mean [95% t-interval over {len(seeds)} seeds]" if len(seeds) > 1 else "one seed: no interval"
    lines += ["", f"Paired difference, method − system ({spread}):", "",
              "| metric | " + " | ".join(f"− {s}" for s in others) + " |", "|---" * (len(others) + 1) + "|"]
    for metric, values in rows.items():
        cells = [str(PairedDifference.of(values["method"], values[s]))
                 if len(values.get(s, [])) == len(values.get("method", [])) == len(seeds) else "-" for s in others]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", data


@guarded
def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logging(args.verbose)
    config = CompareConfig(**config_overrides(args, "compare"))
    refuse_output_over_inputs(args.out, {"--data": args.data}, "never")
    arms = make_arms(config)
    seeds = list(range(config.first_seed, config.first_seed + config.seeds))
    for arm in arms:  # every arm's flags, before any training
        arm_args(arm, seeds[0])
    runs, out = args.out / "runs", args.out / config.name
    progress = not args.no_progress and sys.stderr.isatty()
    for seed in seeds:
        for arm in arms:
            train_arm(arm, seed, args.data, runs, progress)
    texts, result = [], {"name": config.name, "arms": {a.label: " ".join(a.flags) for a in arms}, "splits": {}}
    for split in filter(None, (s.strip() for s in config.splits.split(","))):
        evaluations = [evaluate_seed(arms, seed, split, args.data, runs, out) for seed in seeds]
        text, result["splits"][split] = report(config.name, split, seeds, metric_rows(evaluations))
        texts.append(text)
    flags = "\n".join(f"- {a.label}: `{' '.join(a.flags) or '(defaults)'}`" for a in arms)
    atomic_write_text(out / "compare.md", f"Arms (app/train.py flags):\n\n{flags}\n\n" + "\n".join(texts))
    atomic_write_json(out / "compare.json", result)
    print("\n".join(texts) + f"\nwritten: {out}/compare.md, compare.json")
    return result


if __name__ == "__main__":
    main()
