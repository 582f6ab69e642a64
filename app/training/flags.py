"""The flags of a training run (`app/train.py`, and each arm of `tuning/compare.py`): the data and
run folders, and one flag per config field (`app.cli.add_config_flags`)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from app.cli import add_common_flags, add_config_flags, config_overrides
from app.config import SECTIONS, EmbeddingConfig, RunConfig, build_config, read_json

log = logging.getLogger("app.training")

DEMO_DATA = Path("tfrecords/demo")


def parse_args(argv=None, description: str | None = None) -> argparse.Namespace:
    """Parses `app/train.py`'s flags (`description`: its help text)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)  # `--wide-tag` is refused, not read as `--wide-tags`
    p.add_argument("--data", type=Path, default=DEMO_DATA, help="prepared dataset folder [default: %(default)s]")
    p.add_argument("--name", help="run name under saved_models/ [default: the model kind]")
    p.add_argument("--out", type=Path, help="run folder [default: saved_models/NAME]")
    p.add_argument("--config", type=Path, help="a config JSON (e.g. tuning's best_config.json); flags override it")
    p.add_argument("--overwrite", action="store_true", help="replace a run folder that holds another run")
    p.add_argument("--local-workers", type=int, metavar="N",
                   help="with --strategy multi_worker: start N worker processes on this machine (ports chosen free)")
    add_common_flags(p)
    for section, kind in SECTIONS.items():
        add_config_flags(p.add_argument_group(section), kind, section)
    head = p.add_argument_group("embedding head (open vocabulary: docs/open-vocabulary.md)")
    head.add_argument("--embedding-head", action="store_true",
                      help="after training, train the run's embedding head: photos mapped into the text encoder's "
                           "space, for classes named at prediction time, tag suggestion and evaluation on another "
                           "class list (written to RUN/embedding/; a run already complete gets its head now)")
    add_config_flags(head, EmbeddingConfig, "embedding")
    args = p.parse_args(argv)
    head_flags = sorted(config_overrides(args, "embedding"))
    if head_flags and not args.embedding_head:
        p.error(f"{', '.join('--' + f.replace('_', '-') for f in head_flags)}: settings of the embedding head; "
                f"give --embedding-head too")
    if args.local_workers is not None and args.local_workers < 1:
        p.error(f"--local-workers must be >= 1. Received: {args.local_workers}")
    return args


def run_config(args: argparse.Namespace) -> RunConfig:
    """The config file (if any), overridden by the flags given."""
    return build_config(args.config, {section: config_overrides(args, section) for section in SECTIONS})


def embedding_config(args: argparse.Namespace) -> EmbeddingConfig:
    """The embedding head's settings: the defaults, overridden by the flags given."""
    return EmbeddingConfig(**config_overrides(args, "embedding"))


def text_input_given(args: argparse.Namespace) -> bool:
    """Whether `--text-input` was chosen: a flag, or the config file's `model.text_input`."""
    in_file = bool(args.config) and "text_input" in (read_json(args.config).get("model") or {})
    return "text_input" in config_overrides(args, "model") or in_file


def follow_the_data(config: RunConfig, data: Path, given: bool) -> RunConfig:
    """The config with `--text-input` following the dataset when it was not given: `text` (the
    captions) when the train split has captions and no tags (`stats.json`); otherwise as it is."""
    if given or not config.model.uses_tags:
        return config
    from app.records.dataset import DatasetError, DatasetInfo

    try:
        info = DatasetInfo.load(data)
    except DatasetError:  # train reports it, after the checks of the flags
        return config
    counts = info.stats.get("splits", {}).get(config.data.train_split, {})
    if counts.get("with_tags", 1) or not counts.get("with_text", 0):
        if counts.get("with_text", 0) and config.model.text_input == "tags":
            log.info("the dataset has captions too: --text-input both reads them beside the tags")
        return config
    log.info("the %s split has captions and no tags: --text-input text (the captions; give --text-input to choose)",
             config.data.train_split)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, text_input="text"))
