"""Typed configuration, one dataclass per concern, saved as JSON beside every output.

Each field carries its help text (and choices) in its metadata, so command-line flags and their
`--help` defaults are derived from here (`app.cli.add_config_flags`) and never restated.
Fields marked `execution` say how a run executes, not what it computes (strategy, epochs to go
on to, time budget): they may change when a run is resumed, so they are not part of a run's
fingerprint (`RunConfig.fingerprint`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from app.errors import InputError
from app.fileio import atomic_write_json

MODELS = ("contextual", "tags", "image")
POOLINGS = ("max", "avg")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker")
LOSS_ON = ("all", "verified")
TAG_NORMALIZATIONS = ("none", "snowball")
TRAIN_SPLITS = ("train", "yfcc")
TEXT_INPUTS = ("tags", "text", "both")
TEXT_BRANCHES = ("separate", "shared")
WORD_VECTORS = ("scratch", "frozen", "fine-tuned")
INDEX_KINDS = ("auto", "exact", "hnsw")
ENCODER_HELP = ("the text encoder (app/text/encoders): use (Universal Sentence Encoder Multilingual v3, bundled, 16 "
                "languages), savedmodel:PATH (your own TensorFlow SavedModel, e.g. TF-Hub's USE) or keras:PATH (a "
                ".keras model); either maps strings to vectors")
NORMALIZATION_HELP = ("tag normalisation: none, or snowball (each tag stemmed with the NLTK Snowball stemmer of its "
                      "photo's language; see app/text/stemming.py)")


def option(default: Any, help: str, choices: tuple | None = None, execution: bool = False,
           needs: str | None = None) -> Any:
    """A dataclass field with its command-line help, allowed values and kind.

    Args:
        default: the default value.
        help: the flag's help text.
        choices: the allowed values.
        execution: how a run executes, not what it computes (left out of run fingerprints).
        needs: only matters for models that use `tags`, the `image`, or both (`contextual`), `text`
            (free text as words), or `vectors` (encoder vectors: `word_vectors` other than scratch); a field
            left at its default otherwise, so older runs keep their fingerprints; or `set`: only when it is
            not at its default (for the same reason).
    """
    return field(default=default, metadata={"help": help, "choices": choices, "execution": execution, "needs": needs})


def same_as(kind: type, name: str, help: str) -> Any:
    """A field with the default, choices and kind of `kind`'s field `name` (stated once), and its own help."""
    source = kind.__dataclass_fields__[name]
    return option(source.default, help, source.metadata["choices"], source.metadata["execution"])


def _check_choices(config) -> None:
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        value = getattr(config, f.name)
        if choices and value not in choices:
            raise InputError(f"{f.name} must be one of {', '.join(map(repr, choices))}. Received: {f.name}={value!r}")


def check_encoder_spec(spec: str) -> None:
    """Raises InputError unless `spec` names a text encoder: `use`, `savedmodel:PATH` or `keras:PATH`."""
    kind, sep, path = spec.partition(":")
    if not (spec == "use" or (sep and path and kind in ("savedmodel", "keras"))):
        raise InputError(f"text encoder must be use, savedmodel:PATH or keras:PATH. Received: {spec!r}")


def _check_at_least(config, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and not (math.isfinite(value) and value >= minimum):  # NaN and inf too
            raise InputError(f"{name} must be a finite number >= {minimum}. Received: {name}={value!r}")


@dataclass
class DataConfig:
    """How a run reads a prepared dataset: which tags become model inputs."""

    tag_limit: int = option(20, "keep each photo's first N tags (the study's best: 20)", needs="tags")
    tag_threshold: int = option(10, "vocabulary: tags seen at least T times among the train split's first N tags",
                                needs="tags")
    tag_normalization: str = option("none", NORMALIZATION_HELP, TAG_NORMALIZATIONS, needs="tags")
    text_limit: int = option(32, "keep each caption's first N words (models with --text-input text or both)",
                             needs="text")
    text_threshold: int = option(10, "word vocabulary: words seen at least T times among the train split's captions' "
                                     "first N words", needs="text")
    train_split: str = option("train", "the split to train on: train (Open Images), or yfcc (YFCC100M photos outside "
                                       "Open Images, labelled by their autotags: weak pre-training); the vocabulary "
                                       "is the train split's either way", TRAIN_SPLITS)
    unseen_classes: str = option("", "generalized zero-shot: a class file (a name or name,id a line) whose classes are "
                                     "left out of training: their labels are neither positive nor negative, the tags "
                                     "naming them are dropped, and validation and test mAP are over the other classes "
                                     "(docs/open-vocabulary.md)", needs="set")

    def __post_init__(self):
        _check_choices(self)
        _check_at_least(self, 1, "tag_limit", "tag_threshold", "text_limit", "text_threshold")


@dataclass
class PrepareConfig:
    """How sources become a dataset folder (`app/prepare.py`)."""

    tag_limit: int = same_as(DataConfig, "tag_limit",
                             "the vocabulary saved with the dataset counts each train photo's first TAG_LIMIT tags (a run "
                             "builds its own vocabulary from train.py's --tag-limit and --tag-threshold, and reuses "
                             "this one when they are the same)")
    tag_threshold: int = same_as(DataConfig, "tag_threshold",
                                 "a tag enters that vocabulary when it is among the first TAG_LIMIT tags of at least "
                                 "TAG_THRESHOLD train photos; rarer tags are unknown to a model. A small collection "
                                 "needs a small threshold (a "
                                 "few dozen photos keep almost no tag at 10; try 1 or 2, here and in train.py)")
    lowercase: bool = option(False, "fold tags to lower case (YFCC100M tags already are)")
    tag_normalization: str = same_as(DataConfig, "tag_normalization",
                                     NORMALIZATION_HELP + " of the vocabulary saved with the dataset")
    records_per_shard: int = option(1024, "records per TFRecord shard")
    min_shards: int = option(2, "at least this many shards per split, so that workers can split them")
    expand_machine_labels: bool = option(True, "training targets: copy each machine label's confidence to the "
                                               "class's ancestors, keeping the maximum (as the study did)")
    yfcc_split_size: int = option(1_000_000, "at most this many YFCC100M photos outside Open Images in the weakly "
                                             "labelled 'yfcc' split: those with the smallest hash of the photo id; "
                                             "0 leaves it empty")
    bucket_photos: int = option(10_000, "photos per on-disk bucket of the join: memory per bucket against the "
                                        "number of temporary files (the output does not depend on it)")

    def __post_init__(self):
        _check_choices(self)
        _check_at_least(self, 1, "tag_limit", "tag_threshold", "records_per_shard", "min_shards", "bucket_photos")
        _check_at_least(self, 0, "yfcc_split_size")


@dataclass
class ModelConfig:
    """The classifier's shape (see `app.model.classifier.build_head`)."""

    model: str = option("contextual", "contextual (image + tags), tags or image", MODELS)
    text_input: str = option("tags", "the text the model reads beside (or, for a tags model, instead of) the image: "
                                     "the photo's tags, its free text (a caption: tokenised into words in the graph), "
                                     "or both", TEXT_INPUTS, needs="text")
    text_branch: str = option("separate", "with --text-input both: tags and caption words each go through their own "
                                          "vocabulary, embedding and masked pooling (separate: validation's choice on the "
                                          "demo, tuning/results/README.md), or all through one (shared)",
                              TEXT_BRANCHES, needs="text")
    embedding_dim: int = option(128, "tag embedding size (with encoder vectors: the width they are projected to)",
                                needs="tags")
    word_vectors: str = option("frozen", "the tag (and caption word) embedding's starting vectors: frozen (each "
                                         "word's text-encoder vector, kept; a learned projection to --embedding-dim; "
                                         "validation's choice on MIRFLICKR-25K and the demo), fine-tuned (the "
                                         "encoder's, then trained) or scratch (learned from random); a vocabulary is "
                                         "encoded once and cached", WORD_VECTORS, needs="vectors")
    text_encoder: str = option("use", ENCODER_HELP, needs="vectors")
    pooling: str = option("max", "masked pooling over a photo's tags", POOLINGS, needs="tags")
    hidden_layers: int = option(1, "number of Dropout -> Dense(relu) blocks")
    hidden_units: int = option(128, "width of the hidden blocks")
    dropout: float = option(0.1, "dropout rate before each Dense")
    l2: float = option(1e-5, "L2 factor on the Dense kernels")
    tag_dropout: float = option(0.5, "contextual model: drop all of a photo's tags with this probability in training",
                                needs="contextual")
    branch_scores: bool = option(False, "each branch (tags, caption words, image) also scores the classes on its "
                                        "own, linearly, and its scores are added to the fused head's before the "
                                        "sigmoid (a late fusion learned with the model); with one branch it does "
                                        "nothing")
    wide_tags: bool = option(False, "a linear path from each tag straight to the class scores (a learned tag x "
                                    "class table averaged over a photo's tags, added to the head's scores)",
                             needs="tags")
    image_size: int = option(64, "square image side in pixels", needs="image")
    image_weights: str = option("none", "ResNet50 weights: none, imagenet (Keras cache only) or a file path",
                                needs="image")
    train_backbone: bool = option(False, "fine-tune ResNet50 (otherwise it is frozen and its features are computed once)",
                                  needs="image")
    image_presence: bool = option(False, "an image_present input (serving sets it from image_ok): a photo without a "
                                         "usable image gets a learned missing-image embedding, not a black image's "
                                         "features", needs="image")
    image_dropout: float = option(0.0, "contextual model with --image-presence: in training, remove the image of "
                                       "this share of the photos that keep their tags", needs="contextual")

    def __post_init__(self):
        _check_choices(self)
        _check_at_least(self, 1, "embedding_dim", "hidden_units", "image_size")
        _check_at_least(self, 0, "hidden_layers", "l2")
        if not all(0.0 <= rate < 1.0 for rate in (self.dropout, self.tag_dropout, self.image_dropout)):
            raise InputError(f"dropout rates must be in [0, 1). Received: dropout={self.dropout}, "
                             f"tag_dropout={self.tag_dropout}, image_dropout={self.image_dropout}")
        check_encoder_spec(self.text_encoder)
        if self.image_dropout > 0 and not self.image_presence:
            raise InputError(f"image_dropout needs image_presence (a removed image must be marked absent). Received: "
                             f"image_dropout={self.image_dropout}, image_presence={self.image_presence}")

    @property
    def uses_tags(self) -> bool:
        return self.model in ("contextual", "tags")

    @property
    def uses_image(self) -> bool:
        return self.model in ("contextual", "image")

    @property
    def uses_vectors(self) -> bool:
        """The tag (word) embedding starts from the text encoder's vectors."""
        return self.uses_tags and self.word_vectors != "scratch"

    @property
    def reads_tags(self) -> bool:
        """The model reads the photos' tags (`uses_tags` means it has a text side: tags and/or words)."""
        return self.uses_tags and self.text_input in ("tags", "both")

    @property
    def reads_text(self) -> bool:
        """The model reads the photos' free text (captions), as words."""
        return self.uses_tags and self.text_input in ("text", "both")


@dataclass
class TrainConfig:
    """How a model is trained. The best epoch is the one with the highest validation mAP."""

    epochs: int = option(120, "maximum epochs (a finished run re-run with more goes on)", execution=True)
    time_budget_hours: Optional[float] = option(None, "stop starting epochs after this many hours", execution=True)
    early_stopping_patience: int = option(15, "stop when validation mAP has not improved for N epochs (the best "
                                              "epoch's model is kept either way); 0: train every epoch",
                                          execution=True)
    batch_size: int = option(128, "global batch size, split over replicas")
    learning_rate: float = option(5e-3, "Adam learning rate")
    strategy: str = option("default", "tf.distribute strategy", STRATEGIES, execution=True)
    cpu_devices: int = option(2, "logical CPUs for --strategy mirrored without GPUs", execution=True)
    seed: int = option(0, "seed of weights, shuffling and dropout")
    loss_on: str = option("all", "train on all targets (verified + machine) or verified labels only", LOSS_ON)
    mixed_precision: bool = option(False, "float16 compute (on GPUs)")
    shuffle_buffer: int = option(10000, "tf.data shuffle buffer size")
    worker_timeout: float = option(300.0, "multi_worker: seconds to wait for every peer to start", execution=True)
    pretrained: Optional[str] = option(None, "a finished run folder (e.g. trained with --train-split yfcc) whose tag "
                                             "embedding initialises this model's; between two tags-only models of one "
                                             "shape, the whole model", needs="tags")
    freeze_embedding: bool = option(False, "with --pretrained: keep the pre-trained tag embedding frozen (otherwise "
                                           "everything is fine-tuned)", needs="tags")

    def __post_init__(self):
        _check_choices(self)
        _check_at_least(self, 1, "epochs", "batch_size", "cpu_devices", "shuffle_buffer")
        _check_at_least(self, 0, "time_budget_hours", "worker_timeout", "early_stopping_patience")
        if self.freeze_embedding and not self.pretrained:
            raise InputError("freeze_embedding (--freeze-embedding) needs pretrained (--pretrained RUN_DIR): a "
                             f"pre-trained embedding to keep. Received: pretrained={self.pretrained!r}")


@dataclass
class PseudoLabelConfig:
    """How a teacher run labels the `yfcc` split for a student (`app/pseudo_label.py`)."""

    top_k: int = option(1000, "keep, for each class, the K yfcc photos the teacher scores highest (Yalniz et al.); "
                              "a photo in any class's top K is kept; 0: keep by --min-score instead")
    min_score: float = option(0.5, "with --top-k 0: keep the photos whose highest score reaches this")
    target_floor: float = option(0.001, "soft targets under this are stored as 0 (records keep the rest)")
    batch_size: int = option(256, "photos per teacher batch")

    def __post_init__(self):
        _check_at_least(self, 0, "top_k", "min_score", "target_floor")
        _check_at_least(self, 1, "batch_size")
        if not (self.min_score <= 1 and self.target_floor < 1):
            raise InputError(f"min_score and target_floor are scores in [0, 1). Received: min_score={self.min_score}, "
                             f"target_floor={self.target_floor}")


@dataclass
class EmbeddingConfig:
    """How a run's embedding head is trained (`train.py --embedding-head`, app/training/embedding_head.py)."""

    head_epochs: int = option(10, "embedding head: epochs (the best by validation mAP of the seen classes is kept)")
    head_learning_rate: float = option(1e-3, "embedding head: Adam learning rate")
    head_batch_size: int = option(128, "embedding head: batch size")
    tag_weight: float = option(1.0, "embedding head: weight of the tag loss (a photo's own tags ranked above tags "
                                    "drawn by frequency, as in Ni et al.'s attalos) beside the class-name loss; 0: "
                                    "class names only")
    positive_tags: int = option(5, "embedding head: positive tags sampled per photo for the tag loss")
    negative_tags: int = option(10, "embedding head: negative tags sampled per photo (by tag frequency)")

    def __post_init__(self):
        _check_at_least(self, 1, "head_epochs", "head_batch_size", "positive_tags", "negative_tags")
        _check_at_least(self, 0, "tag_weight")
        if not (math.isfinite(self.head_learning_rate) and self.head_learning_rate > 0):
            raise InputError(f"head_learning_rate must be a finite number > 0. Received: "
                             f"head_learning_rate={self.head_learning_rate!r}")


@dataclass
class SearchConfig:
    """How `app/search.py index` builds a nearest-neighbour index of photos (`app/retrieval/`)."""

    index_kind: str = option("auto", "exact (every photo compared: exact answers), hnsw (a graph: approximate, fast "
                                     "at millions) or auto: exact up to --exact-limit photos, else hnsw; an index "
                                     "keeps its kind when photos are added", INDEX_KINDS)
    exact_limit: int = option(100_000, "auto: an exact index up to this many photos in the split")
    ef_search: int = option(96, "hnsw: candidates kept while searching (recall against time)")
    batch_size: int = option(512, "photos read and encoded at a time")
    tag_cache: int = option(50_000, "tag vectors kept in memory (least recently used dropped first), whatever the "
                                    "number of photos")

    def __post_init__(self):
        _check_choices(self)
        _check_at_least(self, 1, "exact_limit", "ef_search", "batch_size", "tag_cache")


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass
class RunConfig:
    """Everything needed to reproduce a training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> dict:
        """The fields that decide what a run computes: not the execution ones, nor those its model
        kind does not use (an image-only run has no tag limit)."""
        m = self.model
        used = {None: True, "tags": m.uses_tags, "image": m.uses_image, "contextual": m.model == "contextual",
                "text": m.reads_text, "vectors": m.uses_vectors}

        def counts(section, f) -> bool:
            needs = f.metadata.get("needs")
            return getattr(section, f.name) != f.default if needs == "set" else used[needs]

        return {name: {f.name: getattr(getattr(self, name), f.name) for f in dataclasses.fields(kind)
                       if not f.metadata.get("execution") and counts(getattr(self, name), f)}
                for name, kind in SECTIONS.items()}

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "RunConfig":
        """Builds a config; unknown keys and values of the wrong type are errors naming the key.

        Args:
            raw: `{"data": {...}, "model": {...}, "train": {...}}`; missing keys take defaults.
            source: what to call the input in error messages (e.g. a file name).
        """
        if not isinstance(raw, dict):
            raise InputError(f"{source}: expected a JSON object with data, model and train sections")
        extra = sorted(set(raw) - set(SECTIONS))
        if extra:
            raise InputError(f"{source}: unknown config sections {extra}; expected {', '.join(SECTIONS)}")
        return cls(**{name: build_section(kind, raw.get(name, {}), f"{source}: {name}") for name, kind in SECTIONS.items()})

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(read_json(path), str(path))


def build_config(config_file: Optional[str | Path], overrides: dict) -> RunConfig:
    """The config file (if any; else the defaults), with `overrides` (`{section: {field: value}}`) on top.

    Raises:
        InputError: naming the file (or `flags`) and the key.
    """
    raw = RunConfig.load(config_file).to_dict() if config_file else RunConfig().to_dict()
    for section, fields in overrides.items():
        raw[section].update(fields)
    return RunConfig.from_dict(raw, str(config_file or "flags"))


def build_section(kind: type, section: Any, where: str):
    """Builds one config dataclass from a dict, checking keys and value types.

    Raises:
        ValueError: naming the key, e.g. `config.json: train.epochs must be int. Received: '2'`.
    """
    if not isinstance(section, dict):
        raise InputError(f"{where} must be a JSON object. Received: {section!r}")
    hints = typing.get_type_hints(kind)
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise InputError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    for key, value in section.items():
        if not _has_type(value, hints[key]):
            raise InputError(f"{where}.{key} must be {_type_name(hints[key])}. Received: {value!r}")
    try:
        return kind(**section)
    except ValueError as err:
        raise InputError(f"{where}: {err}") from None


def _has_type(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) is typing.Union:
        return any(_has_type(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Union:
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    return "null" if hint is type(None) else hint.__name__


def read_json(path: str | Path) -> Any:
    """Reads a JSON file; a syntax error names the file and line."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
