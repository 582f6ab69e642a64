"""KerasTuner random search over tag limit × tag threshold (and the rest), objective validation mAP.

    python tuning/search.py --data tfrecords/demo --max-trials 20 [--trial-time-budget MIN] [--out tuning/runs/demo]
    python tuning/search.py ... --repeat-top 3 --seeds 3      # the study's protocol, automated

Each trial trains with the code of `python app/train.py`, into its own run folder in the search
folder, and is scored by its best epoch's validation mAP. Re-running with the same --out resumes:
finished trials and repeats are not redone. Distributed tuning uses KerasTuner's chief/worker
mode: start the same command in each process with KERASTUNER_TUNER_ID (`chief`, `tuner0`, ...),
KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # `python tuning/search.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import add_common_flags, add_config_flags, config_overrides, guarded, setup_logging  # noqa: E402
from app.config import ModelConfig, option, same_as  # noqa: E402

log = logging.getLogger("search")
SUMMARY, BEST_CONFIG = "summary.csv", "best_config.json"


@dataclass
class SearchConfig:
    """What the random search explores and how long it trains."""

    max_trials: int = option(20, "trials of the random search")
    epochs: int = option(20, "maximum epochs per trial")
    trial_time_budget: Optional[float] = option(None, "minutes of training per trial")
    model: str = option("tags", "tags (the study's search) or contextual (frozen image backbone)", ("tags", "contextual"))
    image_size: int = same_as(ModelConfig, "image_size", "contextual: image size of the frozen backbone")
    image_weights: str = same_as(ModelConfig, "image_weights",
                                 "contextual: backbone weights (none, imagenet or a file)")
    text_input: str = same_as(ModelConfig, "text_input", "the text the models read: tags, captions (text) or both")
    text_branch: str = same_as(ModelConfig, "text_branch", "with --text-input both: shared or separate branches")
    seed: int = option(0, "random search seed, and the first training seed")
    repeat_top: int = option(0, "re-run the top K configurations of every (limit, threshold)")
    seeds: int = option(3, "seeds per repeated configuration, the original one included")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("tfrecords/demo"), help="prepared dataset [default: %(default)s]")
    p.add_argument("--out", type=Path, help="search folder [default: tuning/runs/<data name>]")
    add_config_flags(p, SearchConfig, "search")
    add_common_flags(p)
    return p.parse_args(argv)


def repeat_top(tuner, hypermodel, out: Path, top: int, seeds: int, first_seed: int) -> list:
    """Re-runs the top `top` trials of every (limit, threshold) with `seeds - 1` more seeds.

    Each repeat is a run folder under `out/repeats/`, so an interrupted search resumes there and a
    finished repeat is read back, not redone.

    Returns:
        `[(trial, [val mAP per seed])]` for every scored trial.
    """
    trials = [t for t in tuner.oracle.trials.values() if t.score is not None]
    by_pair: dict = {}
    for trial in sorted(trials, key=lambda t: -t.score):
        key = (trial.hyperparameters.get("tag_limit"), trial.hyperparameters.get("tag_threshold"))
        by_pair.setdefault(key, []).append(trial)
    chosen = {t.trial_id for group in by_pair.values() for t in group[:top]}
    rows = []
    for trial in trials:
        scores = [trial.score]
        for seed in range(first_seed + 1, first_seed + seeds) if trial.trial_id in chosen else ():
            hp = trial.hyperparameters
            result = hypermodel.fit(hp, hypermodel.build(hp), run_dir=out / "repeats" / f"{trial.trial_id}-seed{seed}",
                                    seed=seed)
            scores.append(result["val_map"])
            log.info("repeat of trial %s with seed %d: val mAP %.4f", trial.trial_id, seed, result["val_map"])
        rows.append((trial, scores))
    return rows


def write_summary(out: Path, rows: list, hypermodel) -> dict:
    """Writes summary.csv, the plots and best_config.json; returns the best row."""
    import numpy as np

    from app.config import RunConfig
    from app.fileio import atomic_output
    from tuning.hypermodel import SEARCHED
    from tuning.plots import write_plots

    table = []
    for trial, scores in rows:
        hp = trial.hyperparameters.values
        table.append({"trial_id": trial.trial_id, **{k: hp[k] for k in SEARCHED}, "runs": len(scores),
                      "mean_map": float(np.mean(scores)), "std_map": float(np.std(scores)),
                      "maps": " ".join(f"{s:.4f}" for s in scores)})
    table.sort(key=lambda r: -r["mean_map"])
    with atomic_output(out / SUMMARY) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    write_plots(out, table)
    best = table[0]
    trial = next(t for t, _ in rows if t.trial_id == best["trial_id"])
    config: RunConfig = hypermodel.run_config(trial.hyperparameters)
    config.save(out / BEST_CONFIG)
    return best


def open_tuner(out: str | Path, data_dir: str | Path, search: Optional[SearchConfig] = None):
    """The search's KerasTuner tuner, reloaded from `out` if the search was run before.

    With it, a finished search is used the KerasTuner way: `tuner.results_summary()`,
    `tuner.get_best_models(1)[0]`, `tuner.get_best_hyperparameters()`.

    Args:
        out: the search folder (`--out`).
        data_dir: the prepared dataset (`--data`).
        search: the search's settings (default: the defaults of `tuning/search.py`).

    Returns:
        A `tuning.hypermodel.SearchTuner`.
    """
    import keras_tuner as kt

    from tuning.hypermodel import SearchTuner, TagHyperModel

    search, out = search or SearchConfig(), Path(out)
    hypermodel = TagHyperModel(data_dir, search.model, search.epochs,
                               search.trial_time_budget * 60 if search.trial_time_budget else None, search.seed,
                               search.image_size, search.image_weights, out / "cache", search.text_input,
                               search.text_branch)
    return SearchTuner(hypermodel=hypermodel, objective=kt.Objective("val_map", "max"),
                       # KerasTuner reads seed 0 as "pick one at random"
                       max_trials=search.max_trials, seed=search.seed + 1, directory=str(out.parent),
                       project_name=out.name, overwrite=False)


@guarded
def main(argv=None) -> Optional[dict]:
    args = parse_args(argv)
    setup_logging(args.verbose)
    search = SearchConfig(**config_overrides(args, "search"))
    from app.fileio import refuse_output_over_inputs

    out = args.out or Path("tuning/runs") / args.data.name
    refuse_output_over_inputs(out, {"--data": args.data}, "never")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tuner = open_tuner(out, args.data, search)
    hypermodel = tuner.hypermodel
    tuner.search()
    if os.environ.get("KERASTUNER_TUNER_ID", "chief") != "chief":
        log.info("worker %s finished its trials", os.environ["KERASTUNER_TUNER_ID"])
        return None
    rows = (repeat_top(tuner, hypermodel, out, search.repeat_top, search.seeds, search.seed) if search.repeat_top
            else [(t, [t.score]) for t in tuner.oracle.trials.values() if t.score is not None])
    if not rows:
        raise ValueError(f"{out}: no trial finished with a score; see the trial folders' messages")
    best = write_summary(out, rows, hypermodel)
    print(f"search finished in {time.time() - started:.0f}s: {len(rows)} trials in {out}/\n"
          f"  best val mAP {best['mean_map']:.4f} ({_spread(best)}): "
          f"limit {best['tag_limit']}, threshold {best['tag_threshold']}, units {best['units']}, {best['pooling']} "
          f"pooling, batch {best['batch_size']}, dropout {best['dropout']}, lr {best['learning_rate']:.2g}, "
          f"l2 {best['l2']:.2g}\n"
          f"  train it: python app/train.py --data {args.data} --config {out}/{BEST_CONFIG} --name best")
    return best


def _spread(row: dict) -> str:
    """`± std over N runs`, or that one run has no spread (and how to get one)."""
    if row["runs"] > 1:
        return f"± {row['std_map']:.4f} over {row['runs']} runs"
    return "one run, no spread: --repeat-top K --seeds N re-runs the best with more seeds"


if __name__ == "__main__":
    main()
