"""The demo world prepared as a dataset folder (`python app/prepare.py --demo`, and `app/train.py`
when the demo dataset is missing)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from app.config import PrepareConfig
from app.records.dataset import DEMO_SOURCES
from app.records.join import JoinHooks, prepare_dataset
from app.demo.world import WorldConfig, write_world

log = logging.getLogger("prepare")


def prepare_demo(out_dir: str | Path, train_size: int = WorldConfig.train_size, seed: int = 0,
                 config: Optional[PrepareConfig] = None, progress: bool = True, hooks: JoinHooks = JoinHooks()) -> dict:
    """Generates the demo world (its raw files under `out_dir/raw/`) and prepares it into `out_dir`.

    Args:
        out_dir: the dataset folder, swapped into place when complete.
        train_size: train photos (`WorldConfig.sized`).
        seed: the world's seed (the same seed gives the same files).
        config: how the dataset is prepared (default: `PrepareConfig()`).
        progress: show progress bars.
        hooks: where the YFCC100M scan and the join run (`app.records.join.JoinHooks`).

    Returns:
        The stats (also in `stats.json`), plus the dataset's `fingerprint`.
    """
    world = WorldConfig.sized(train_size, seed)
    log.info("generating the demo world (train=%d, seed=%d)", train_size, seed)
    return prepare_dataset(lambda folder: write_world(folder / DEMO_SOURCES, world), out_dir,
                           config or PrepareConfig(), progress, hooks)
