"""Typed run configuration, one dataclass per concern, saved as JSON next to every output."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from app.fileio import atomic_write_text

MODELS = ("contextual", "tags", "image")
POOLINGS = ("max", "avg")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker")
LOSS_ON = ("all", "verified")


def _check_choice(name: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}. Received: {name}={value!r}")


@dataclass
class DataConfig:
    """How sources become shards and shards become model inputs.

    Args:
        tag_limit: keep each photo's first N tags (the study's best: 20).
        tag_threshold: a tag enters the vocabulary with at least T train-split occurrences
            after the limit (the study's best: 10).
        lowercase: fold tags to lower case when cleaning (YFCC100M tags already are).
        records_per_shard: shard size target.
        min_shards: at least this many shards per split, so that workers can split them.
    """

    tag_limit: int = 20
    tag_threshold: int = 10
    lowercase: bool = False
    records_per_shard: int = 1024
    min_shards: int = 2

    def __post_init__(self):
        if self.tag_limit < 1 or self.tag_threshold < 1:
            raise ValueError(f"tag_limit and tag_threshold must be >= 1. Received: "
                             f"tag_limit={self.tag_limit}, tag_threshold={self.tag_threshold}")


@dataclass
class ModelConfig:
    """The classifier's shape (see `app.model.classifier.build_classifier`).

    Args:
        model: `contextual` (tags + image), `tags` or `image`.
        embedding_dim: tag embedding size `l`.
        pooling: masked `max` or `avg` pooling over a photo's tags.
        hidden_layers: number `n` of Dropout -> Dense(relu) blocks.
        hidden_units: their width `q`.
        dropout: dropout rate before each Dense.
        l2: L2 factor on the Dense kernels and the embedding.
        tag_dropout: probability of dropping all of a photo's tags in training (contextual model
            only: it makes the image branch carry photos without tags; a tags-only model would just
            lose examples).
        image_size: square input size of the image branch.
        image_weights: `none`, `imagenet` (from the Keras cache) or a path to a weights file.
        train_backbone: fine-tune ResNet50 instead of freezing it.
    """

    model: str = "contextual"
    embedding_dim: int = 128
    pooling: str = "max"
    hidden_layers: int = 1
    hidden_units: int = 128
    dropout: float = 0.1
    l2: float = 1e-5
    tag_dropout: float = 0.5
    image_size: int = 64
    image_weights: str = "none"
    train_backbone: bool = False

    def __post_init__(self):
        _check_choice("model", self.model, MODELS)
        _check_choice("pooling", self.pooling, POOLINGS)
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.tag_dropout < 1.0:
            raise ValueError(f"dropout rates must be in [0, 1). Received: dropout={self.dropout}, "
                             f"tag_dropout={self.tag_dropout}")

    @property
    def uses_tags(self) -> bool:
        return self.model in ("contextual", "tags")

    @property
    def uses_image(self) -> bool:
        return self.model in ("contextual", "image")


@dataclass
class TrainConfig:
    """How a model is trained.

    Args:
        epochs: maximum number of epochs.
        time_budget_hours: stop starting new epochs once this much time has passed.
        batch_size: global batch size (split over replicas).
        learning_rate: Adam learning rate.
        strategy: `default`, `one_device`, `mirrored` or `multi_worker`.
        cpu_devices: with `mirrored` and no GPU, split the CPU into this many logical devices.
        seed: seeds weights, shuffling and dropout.
        loss_on: `all` targets (human + machine) or `verified` labels only.
        mixed_precision: float16 compute on GPUs.
        shuffle_buffer: tf.data shuffle buffer size.
    """

    epochs: int = 120
    time_budget_hours: Optional[float] = None
    batch_size: int = 128
    learning_rate: float = 5e-3
    strategy: str = "default"
    cpu_devices: int = 2
    seed: int = 0
    loss_on: str = "all"
    mixed_precision: bool = False
    shuffle_buffer: int = 10000

    def __post_init__(self):
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("loss_on", self.loss_on, LOSS_ON)
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"batch_size and epochs must be >= 1. Received: batch_size={self.batch_size}, "
                             f"epochs={self.epochs}")


@dataclass
class RunConfig:
    """Everything needed to reproduce a training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "RunConfig":
        """Builds a config; unknown keys are an error that names them."""
        parts = {}
        for name, kind in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
            section = dict(raw.get(name, {}))
            known = {f.name for f in dataclasses.fields(kind)}
            unknown = sorted(set(section) - known)
            if unknown:
                raise ValueError(f"unknown {name} config keys {unknown}; known: {sorted(known)}")
            parts[name] = kind(**section)
        extra = sorted(set(raw) - {"data", "model", "train"})
        if extra:
            raise ValueError(f"unknown config sections {extra}; expected data, model, train")
        return cls(**parts)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from err
