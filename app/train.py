"""Train the contextual (image + tags), tags-only or image-only classifier.

With no arguments: prepares the demo world if it is missing, then trains the contextual model.

    python app/train.py
    python app/train.py --strategy mirrored
    python app/train.py --model tags --epochs 20 --name tags
    python app/train.py --config tuning/runs/demo/best_config.json --name best
    python app/train.py --model tags --name tags-2workers --strategy multi_worker --local-workers 2

Re-running on a run folder resumes it, or reports it as already complete; a folder that holds a
run of other data, config or code is refused unless --overwrite.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python app/train.py`: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from app.cli import exit_on_sigterm, fail, guarded, setup_logging, writing_to  # noqa: E402
from app.config import RunConfig  # noqa: E402
from app.fileio import refuse_output_over_inputs  # noqa: E402
from app.training.flags import (DEMO_DATA, embedding_config, follow_the_data, parse_args, run_config,  # noqa: E402
                                text_input_given)

log = logging.getLogger("train")


@guarded
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv, __doc__)
    config = run_config(args)
    head_config = embedding_config(args) if args.embedding_head else None
    multi_worker = config.train.strategy == "multi_worker"
    if multi_worker and not args.local_workers:
        exit_on_sigterm()  # before TensorFlow starts (setup_logging imports it): its runtime swallows SIGTERM
    setup_logging(args.verbose)
    run_dir = args.out or Path("saved_models") / (args.name or config.model.model)
    refuse_output_over_inputs(run_dir, {"--data": args.data, "--pretrained": config.train.pretrained}, "never")
    if not multi_worker or args.local_workers:  # (workers started by hand must not all prepare it)
        ensure_demo_data(args)
    config = follow_the_data(config, args.data, text_input_given(args))
    if args.local_workers:
        if not multi_worker:
            fail("--local-workers needs --strategy multi_worker")
        from app.training.launch import launch_local_workers

        sys.exit(launch_local_workers(args.local_workers, strip_flag(argv, "--local-workers")))
    # Logical CPUs and multi-worker collectives must be set up before TensorFlow runs anything.
    from app.training.strategy import get_strategy

    t = config.train
    strategy = get_strategy(t.strategy, t.cpu_devices, t.worker_timeout)
    from app.training.run import RunOptions, train

    started = time.time()
    with writing_to(run_dir):
        result = train(args.data, run_dir, config, RunOptions(progress=not args.no_progress, overwrite=args.overwrite),
                       strategy=strategy)
    print(report(result, config, run_dir, time.time() - started))
    if head_config is not None and result.metrics and result.status != "worker":
        train_embedding_head(run_dir, config, head_config)
    return result


def train_embedding_head(run_dir: Path, config: RunConfig, head_config) -> None:
    """Trains the finished run's embedding head (again, when the run changed) and prints its validation mAP."""
    from app.errors import InputError
    from app.runs.embedding_head import EmbeddingHead, has_embedding_head
    from app.runs.rundir import RunDir
    from app.text.encoders import encoder_from_spec
    from app.training.embedding_head import fit_embedding_head

    run = RunDir(run_dir)
    spec = config.model.text_encoder
    encoder = encoder_from_spec(spec)
    if has_embedding_head(run):
        try:
            record = EmbeddingHead.record_of(run)
        except InputError:  # damaged: replaced
            record = {}
        if (record.get("run") == run.identity() and record.get("config") == head_config.__dict__
                and record.get("encoder") == f"{encoder.name}@{encoder.version}"):
            print(f"  embedding head: {run_dir}/embedding/ holds this head already; nothing was trained now")
            return
        print(f"  embedding head: {run_dir}/embedding/ holds a head of other settings or of another state of the run: "
              f"training a new one in its place")
    started = time.time()
    with writing_to(run_dir):
        head = fit_embedding_head(run_dir, encoder, spec, head_config, config.train.seed)
    scores = head.record["validation_map"]
    held_out = head.record["unseen_classes"]
    unseen = ("" if not held_out else f", unseen classes {scores['unseen']:.4f}" if scores["unseen"] is not None
              else ", unseen classes: none has a validation photo")
    print(f"  embedding head: {run_dir}/embedding/ in {time.time() - started:.0f}s (validation mAP by class-name "
          f"cosine: seen classes {scores['seen']:.4f}{unseen}, all {scores['all']:.4f})")


def ensure_demo_data(args: argparse.Namespace) -> None:
    """Prepares the demo world at the default data folder when it is not a complete dataset."""
    if args.data != DEMO_DATA:
        return
    from app.records.dataset import DatasetError, DatasetInfo

    try:
        DatasetInfo.load(DEMO_DATA)
    except DatasetError:
        from app.records.summary import summary
        from app.demo.dataset import prepare_demo

        log.info("no complete dataset at %s: preparing the demo world first", DEMO_DATA)
        started = time.time()
        with writing_to(DEMO_DATA):
            stats = prepare_demo(DEMO_DATA, progress=not args.no_progress and sys.stderr.isatty())
        print(summary(stats, DEMO_DATA, time.time() - started))


def strip_flag(argv: list, flag: str) -> list:
    """`argv` without `flag` and its value (`--flag N` or `--flag=N`)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == flag:
            skip = True
        elif not item.startswith(flag + "="):
            out.append(item)
    return out


def report(result, config: RunConfig, run_dir: Path, seconds: float) -> str:
    """What happened, in a few lines."""
    m = result.metrics
    if result.status == "worker":
        return f"worker finished {len(result.history)} epochs; the chief wrote {run_dir}/"
    if not m:  # another multi-worker process than the chief, on a finished run
        return f"worker: {run_dir}/ is already complete (the chief reports it); nothing was trained now"
    scores = (f"  best epoch {m['best_epoch']} of {m['epochs']}: validation mAP {m['val_map']:.4f} | "
              f"test mAP {m['test_map']:.4f} (Open Images protocol"
              + (f"; the seen classes: {len(m['unseen_classes'])} held out)" if m.get("unseen_classes") else ")"))
    scores += "".join(f"\n  warning: {warning}" for warning in m.get("warnings", []))
    if result.status == "complete":
        return (f"already complete: {run_dir}/ holds this run, trained earlier ({m['model']} model, {m['epochs']} "
                f"epochs, {m['seconds']:.0f}s); nothing was trained now. Its metrics (metrics.json):\n{scores}")
    stopped = (f", stopped early: no validation gain in {config.train.early_stopping_patience} epochs"
               if m.get("stopped_early") else "")
    return (f"trained {m['model']} model for {m['epochs']} epochs in {seconds:.0f}s (strategy {config.train.strategy}"
            f"{stopped})\n"
            f"  saved to {run_dir}/ (model.keras, config.json, history.csv, logs/, metrics.json, thresholds.json)\n{scores}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
