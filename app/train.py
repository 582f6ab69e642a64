"""Train the contextual (image + tags), tags-only or image-only classifier.

With no arguments: prepares the demo world if it is missing, then trains the contextual model.

    python app/train.py
    python app/train.py --strategy mirrored
    python app/train.py --model tags --epochs 20 --name tags
    python app/train.py --config tuning/runs/demo/best_config.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python app/train.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import setup_logging  # noqa: E402
from app.config import LOSS_ON, MODELS, POOLINGS, STRATEGIES, RunConfig  # noqa: E402

log = logging.getLogger("train")
DEMO_DATA = Path("tfrecords/demo")

# flag -> (config section, field)
FLAGS = {
    "tag_limit": ("data", "tag_limit"), "tag_threshold": ("data", "tag_threshold"),
    "model": ("model", "model"), "embedding_dim": ("model", "embedding_dim"), "pooling": ("model", "pooling"),
    "hidden_layers": ("model", "hidden_layers"), "hidden_units": ("model", "hidden_units"),
    "dropout": ("model", "dropout"), "l2": ("model", "l2"), "tag_dropout": ("model", "tag_dropout"),
    "image_size": ("model", "image_size"), "image_weights": ("model", "image_weights"),
    "train_backbone": ("model", "train_backbone"),
    "epochs": ("train", "epochs"), "time_budget": ("train", "time_budget_hours"), "batch_size": ("train", "batch_size"),
    "learning_rate": ("train", "learning_rate"), "strategy": ("train", "strategy"),
    "cpu_devices": ("train", "cpu_devices"), "seed": ("train", "seed"), "loss_on": ("train", "loss_on"),
    "mixed_precision": ("train", "mixed_precision"),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEMO_DATA, help="prepared dataset folder (default: %(default)s)")
    p.add_argument("--name", help="run name under saved_models/ (default: the model kind)")
    p.add_argument("--out", type=Path, help="run folder (default: saved_models/NAME)")
    p.add_argument("--config", type=Path, help="a config JSON (e.g. tuning's best_config.json); flags override it")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g = p.add_argument_group("data")
    g.add_argument("--tag-limit", type=int, help="keep each photo's first N tags [20]")
    g.add_argument("--tag-threshold", type=int, help="vocabulary: tags seen at least T times in train [10]")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODELS, help="contextual (image+tags), tags or image [contextual]")
    g.add_argument("--embedding-dim", type=int, help="tag embedding size [128]")
    g.add_argument("--pooling", help=f"masked pooling over tags: {' or '.join(POOLINGS)} [max]")
    g.add_argument("--hidden-layers", type=int, help="hidden blocks n [1]")
    g.add_argument("--hidden-units", type=int, help="hidden width q [128]")
    g.add_argument("--dropout", type=float, help="dropout rate [0.1]")
    g.add_argument("--l2", type=float, help="L2 factor on Dense kernels [1e-5]")
    g.add_argument("--tag-dropout", type=float, help="contextual model: drop all of a photo's tags with this probability [0.5]")
    g.add_argument("--image-size", type=int, help="image side in pixels [64]")
    g.add_argument("--image-weights", help="ResNet50 weights: none, imagenet (Keras cache only) or PATH [none]")
    g.add_argument("--train-backbone", action=argparse.BooleanOptionalAction, default=None,
                   help="fine-tune ResNet50 (default: frozen, features computed once)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, help="maximum epochs [120]")
    g.add_argument("--time-budget", type=float, help="hours; train as many epochs as fit")
    g.add_argument("--batch-size", type=int, help="global batch size [128]")
    g.add_argument("--learning-rate", type=float, help="Adam learning rate [5e-3]")
    g.add_argument("--strategy", help=f"{', '.join(STRATEGIES)} [default]")
    g.add_argument("--cpu-devices", type=int, help="logical CPUs for --strategy mirrored without GPUs [2]")
    g.add_argument("--seed", type=int, help="seed [0]")
    g.add_argument("--loss-on", choices=LOSS_ON, help="train on all targets or verified labels only [all]")
    g.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=None, help="float16 on GPUs")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> RunConfig:
    """The config file (if any), overridden by the flags given."""
    raw = RunConfig.load(args.config).to_dict() if args.config else RunConfig().to_dict()
    for flag, (section, key) in FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            raw[section][key] = value
    return RunConfig.from_dict(raw)


def main(argv=None):
    args = parse_args(argv)
    setup_logging()
    try:
        config = build_config(args)
    except ValueError as err:
        sys.exit(f"error: {err}")
    # Logical CPUs and multi-worker collectives must be set up before TensorFlow runs anything.
    from app.training.strategy import get_strategy

    try:
        strategy = get_strategy(config.train.strategy, config.train.cpu_devices)
    except ValueError as err:
        sys.exit(f"error: {err}")
    from app.training.run import train

    if args.data == DEMO_DATA and not (DEMO_DATA / "stats.json").exists():
        from app import prepare

        log.info("no data at %s: preparing the demo world first", DEMO_DATA)
        prepare.main(["--demo", "--out", str(DEMO_DATA)] + (["--no-progress"] if args.no_progress else []))
    run_dir = args.out or Path("saved_models") / (args.name or config.model.model)
    started = time.time()
    result = train(args.data, run_dir, config, progress=not args.no_progress, strategy=strategy)
    m = result.metrics
    if "test_map" not in m:  # a non-chief multi-worker process: the chief reports
        print(f"worker finished {m['epochs']} epochs; the chief wrote {run_dir}/")
        return result
    print(f"trained {m['model']} model for {m['epochs']} epochs in {time.time() - started:.0f}s "
          f"(strategy {config.train.strategy})\n"
          f"  saved to {run_dir}/ (model.keras, config.json, vocab.tsv, history.csv, logs/, metrics.json)\n"
          f"  validation mAP {m['val_map']:.4f} | test mAP {m['test_map']:.4f} (Open Images protocol)")
    return result


if __name__ == "__main__":
    main()
