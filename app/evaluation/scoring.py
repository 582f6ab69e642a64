"""Loading a trained run and scoring a split of its shards."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from app.config import RunConfig
from app.data.pipeline import DatasetInfo, make_dataset
from app.data.preprocess import TagLookup
from app.data.tags import Vocabulary
from app.model.classifier import load_classifier


@dataclass
class TrainedRun:
    """A run folder written by `app.training.run.train`."""

    path: Path
    config: RunConfig
    model: keras.Model
    vocab: Vocabulary | None
    metrics: dict

    @classmethod
    def load(cls, path: str | Path) -> "TrainedRun":
        path = Path(path)
        if not (path / "model.keras").exists():
            raise FileNotFoundError(f"{path}: no model.keras; train one with `python app/train.py`")
        config = RunConfig.load(path / "config.json")
        vocab = Vocabulary.load(path / "vocab.tsv") if (path / "vocab.tsv").exists() else None
        metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").exists() else {}
        return cls(path, config, load_classifier(path / "model.keras"), vocab, metrics)

    @property
    def name(self) -> str:
        return self.path.name

    def score(self, info: DatasetInfo, split: str, batch_size: int = 256) -> np.ndarray:
        """Scores `[images, classes]` for a split, in shard order."""
        m = self.config.model
        lookup = TagLookup(self.vocab, self.config.data.lowercase) if m.uses_tags else None
        ds = make_dataset(info, split, lookup=lookup, image_size=m.image_size if m.uses_image else None,
                          batch_size=batch_size)
        out = [np.asarray(self.model({k: v for k, v in x.items() if k in self.model.input}, training=False))
               for x, _, _ in ds]
        return np.concatenate(out).astype(np.float64)
