"""KerasTuner random search over tag limit × tag threshold (and the rest), objective validation mAP.

    python tuning/search.py --data tfrecords/demo --max-trials 20 [--trial-time-budget MIN] [--out tuning/runs/demo]
    python tuning/search.py ... --repeat-top 3 --seeds 3      # the study's protocol, automated

Re-running with the same --out resumes: finished trials and finished repeats are not redone.
Distributed tuning uses KerasTuner's chief/worker mode: start the same command in each process with
KERASTUNER_TUNER_ID (`chief`, `tuner0`, `tuner1`, ...), KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python tuning/search.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import keras_tuner as kt  # noqa: E402

from app.cli import setup_logging  # noqa: E402

log = logging.getLogger("search")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("tfrecords/demo"), help="prepared dataset folder")
    p.add_argument("--max-trials", type=int, default=20)
    p.add_argument("--trial-time-budget", type=float, help="minutes of training per trial")
    p.add_argument("--epochs", type=int, default=20, help="maximum epochs per trial")
    p.add_argument("--out", type=Path, help="search folder (default: tuning/runs/<data name>)")
    p.add_argument("--model", choices=["tags", "contextual"], default="tags")
    p.add_argument("--image-size", type=int, default=64, help="contextual: image size of the frozen backbone")
    p.add_argument("--seed", type=int, default=0, help="random search seed (and the first training seed)")
    p.add_argument("--repeat-top", type=int, default=0, help="re-run the top K configs of every (limit, threshold)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per repeated config, the original one included")
    return p.parse_args(argv)


class ProgressRandomSearch(kt.RandomSearch):
    """RandomSearch that logs one summary line per finished trial."""

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        hp = trial.hyperparameters.values
        score = trial.score if trial.score is not None else float("nan")
        log.info("trial %s: val mAP %.4f | limit %s threshold %s units %s %s batch %s dropout %s lr %.2g l2 %.2g",
                 trial.trial_id, score, hp["tag_limit"], hp["tag_threshold"], hp["units"], hp["pooling"],
                 hp["batch_size"], hp["dropout"], hp["learning_rate"], hp["l2"])


def image_features(data_dir: Path, image_size: int, cache: Path) -> tuple:
    """Frozen-backbone features for train and validation, computed once (shard order)."""
    from app.config import ModelConfig, RunConfig
    from app.data.pipeline import DatasetInfo
    from app.model.classifier import build_backbone
    from app.training.run import RunInputs

    config = RunConfig(model=ModelConfig(model="image", image_size=image_size))
    data = RunInputs(DatasetInfo.load(data_dir), config, None, build_backbone(image_size), cache, progress=False)
    return data.arrays["train"]["image_features"], data.arrays["validation"]["image_features"]


def repeat_top(tuner, hypermodel, out: Path, top: int, seeds: int, first_seed: int) -> list:
    """Re-runs the top `top` trials of every (limit, threshold) with `seeds - 1` more seeds.

    Results are appended to `repeats.jsonl` one by one, so an interrupted run resumes.
    """
    path = out / "repeats.jsonl"
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            done[(row["trial_id"], row["seed"])] = row["val_map"]
    trials = [t for t in tuner.oracle.trials.values() if t.score is not None]
    by_pair: dict = {}
    for trial in sorted(trials, key=lambda t: -t.score):
        key = (trial.hyperparameters.get("tag_limit"), trial.hyperparameters.get("tag_threshold"))
        by_pair.setdefault(key, []).append(trial)
    chosen = [t for group in by_pair.values() for t in group[:top]]
    for trial in chosen:
        for seed in range(first_seed + 1, first_seed + seeds):
            if (trial.trial_id, seed) in done:
                continue
            model = hypermodel.build(trial.hyperparameters)
            result = hypermodel.fit(trial.hyperparameters, model, seed=seed)
            done[(trial.trial_id, seed)] = result["val_map"]
            with open(path, "a") as handle:
                handle.write(json.dumps({"trial_id": trial.trial_id, "seed": seed, "val_map": result["val_map"]}) + "\n")
            log.info("repeat trial %s seed %d: val mAP %.4f", trial.trial_id, seed, result["val_map"])
    return [(t, [t.score] + [done[(t.trial_id, s)] for s in range(first_seed + 1, first_seed + seeds)
                             if (t.trial_id, s) in done]) for t in trials]


def write_summary(out: Path, rows: list, hypermodel) -> dict:
    """Writes summary.csv, heatmap_mean.png, heatmap_std.png, pooling.png and best_config.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from app.fileio import atomic_output, atomic_write_json
    from tuning.hypermodel import TAG_LIMITS, TAG_THRESHOLDS

    keys = ["tag_limit", "tag_threshold", "units", "pooling", "batch_size", "dropout", "learning_rate", "l2"]
    table = []
    for trial, scores in rows:
        hp = trial.hyperparameters.values
        table.append({"trial_id": trial.trial_id, **{k: hp[k] for k in keys}, "runs": len(scores),
                      "mean_map": float(np.mean(scores)), "std_map": float(np.std(scores)),
                      "maps": " ".join(f"{s:.4f}" for s in scores)})
    table.sort(key=lambda r: -r["mean_map"])
    with atomic_output(out / "summary.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)

    for stat in ("mean", "std"):
        grid = np.full((len(TAG_LIMITS), len(TAG_THRESHOLDS)), np.nan)
        for row in table:  # best configuration (by mean) per cell
            i, j = TAG_LIMITS.index(row["tag_limit"]), TAG_THRESHOLDS.index(row["tag_threshold"])
            if np.isnan(grid[i, j]) or stat == "mean" and row["mean_map"] > grid[i, j]:
                grid[i, j] = row[f"{stat}_map"]
        fig, ax = plt.subplots(figsize=(6, 5))
        image = ax.imshow(grid, cmap="viridis")
        ax.set(xticks=range(len(TAG_THRESHOLDS)), xticklabels=TAG_THRESHOLDS, yticks=range(len(TAG_LIMITS)),
               yticklabels=TAG_LIMITS, xlabel="tag threshold", ylabel="tag limit",
               title=f"validation mAP ({stat}), best config per cell")
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7, color="w")
        fig.colorbar(image)
        fig.tight_layout()
        fig.savefig(out / f"heatmap_{stat}.png", dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(4, 4))
    pools = ["max", "avg"]
    values = [[r["mean_map"] for r in table if r["pooling"] == p] for p in pools]
    ax.bar(pools, [np.mean(v) if v else 0 for v in values], yerr=[np.std(v) if v else 0 for v in values], capsize=6)
    ax.set(ylabel="validation mAP (mean over trials)", title="masked max vs avg pooling")
    fig.tight_layout()
    fig.savefig(out / "pooling.png", dpi=110)
    plt.close(fig)

    best = table[0]
    trial = next(t for t, _ in rows if t.trial_id == best["trial_id"])
    config = hypermodel.run_config(trial.hyperparameters).to_dict()
    atomic_write_json(out / "best_config.json", config)
    return best


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    setup_logging()
    from tuning.hypermodel import TagHyperModel

    out = args.out or Path("tuning/runs") / args.data.name
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    features = image_features(args.data, args.image_size, out / "cache") if args.model == "contextual" else None
    hypermodel = TagHyperModel(args.data, args.model, args.epochs,
                               args.trial_time_budget * 60 if args.trial_time_budget else None, features, args.seed)
    tuner = ProgressRandomSearch(hypermodel=hypermodel, objective=kt.Objective("val_map", "max"),
                                 # KerasTuner reads seed 0 as "pick one at random"
                                 max_trials=args.max_trials, seed=args.seed + 1, directory=str(out.parent),
                                 project_name=out.name, overwrite=False)
    tuner.search()
    if os.environ.get("KERASTUNER_TUNER_ID", "chief") != "chief":
        log.info("worker %s finished its trials", os.environ["KERASTUNER_TUNER_ID"])
        return None
    rows = (repeat_top(tuner, hypermodel, out, args.repeat_top, args.seeds, args.seed) if args.repeat_top
            else [(t, [t.score]) for t in tuner.oracle.trials.values() if t.score is not None])
    best = write_summary(out, rows, hypermodel)
    print(f"search finished in {time.time() - started:.0f}s: {len(rows)} trials in {out}/\n"
          f"  best val mAP {best['mean_map']:.4f} (± {best['std_map']:.4f} over {best['runs']} runs): "
          f"limit {best['tag_limit']}, threshold {best['tag_threshold']}, units {best['units']}, {best['pooling']} "
          f"pooling, batch {best['batch_size']}, dropout {best['dropout']}, lr {best['learning_rate']:.2g}, "
          f"l2 {best['l2']:.2g}\n  train it: python app/train.py --config {out}/best_config.json")
    return best


if __name__ == "__main__":
    main()
