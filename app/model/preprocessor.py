"""The model's input contract: which inputs a model takes, their names, dtypes and shapes, and how
a photo's raw parts become them (like keras-hub's `Preprocessor` for a Task).

    raw photo                                 model inputs
    tags      string, ragged [b, None] ─ TagLookup ─────────▶ tag_ids        int32   [b, tag limit]
    language  string [b] (normalised vocabularies) ┤
    text      string [b] ─ tokenize_text ─ TagLookup ───────▶ text_ids       int32   [b, text limit]
    image     string [b] (JPEG/PNG bytes) ─ decode_images ───▶ image          uint8   [b, size, size, 3]
                                                   └─ decoded? ▶ image_present float32 [b, 1]
    frozen-backbone feature rows ────────────────────────────▶ image_features float32 [b, FEATURE_DIM]

The tf.data parser (`app.records.pipeline`), the serving signatures (`app.serving.signatures`), the
model builder (`app.model.classifier.build_head`: its `keras.Input`s come from `model_inputs`),
evaluation, predict and the teacher all go through one `ContextualPreprocessor`, saved in the run
folder (`preprocessor.json` + `vocab.tsv`, and `text_vocab.tsv` for a separate word vocabulary)
and loaded back from it.

Free text (a caption) is tokenised in the graph (`tokenize_text`: lower case, punctuation and
symbols stripped, split on white space) and its words go through a `TagLookup` like tags (cleaned,
deduplicated, cut to the text limit, normalised per language with `--tag-normalization snowball`).
With `text_branch` `shared`, tags and words share one vocabulary (built from both, on the train
split) and the model's one embedding and pooling; with `separate`, words have their own vocabulary
and branch. Adding an input means editing
this module, the record schema (`app.records.schema`) and the model builder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import tensorflow as tf

from app.config import DataConfig, ModelConfig, read_json
from app.records.dataset import VOCAB, DatasetInfo
from app.model import preprocess
from app.model.preprocess import NO_IMAGE, TagLookup, clean_tags, decode_images
from app.records.schema import iter_language_tags, parse_batch
from app.text.stemming import build_normalized_vocabulary
from app.text.tags import Vocabulary
from app.errors import InputError
from app.fileio import atomic_write_json

FEATURE_DIM = 2048  # ResNet50's pooled features: the head's `image_features` input
PREPROCESSOR = "preprocessor.json"
TEXT_VOCAB = "text_vocab.tsv"  # a separate word vocabulary (a shared one is `vocab.tsv`)
WITHHOLDABLE = ("image", "tags")
SERVING_TAGS = tf.TensorSpec([None, None], tf.string, name="tags")  # padded with ""
SERVING_YFCC_TAGS = tf.TensorSpec([None], tf.string, name="tags")  # one YFCC100M tag field per photo
SERVING_TEXT = tf.TensorSpec([None], tf.string, name="text")  # one free text (caption) per photo, "" for none


@dataclass(frozen=True)
class InputSpec:
    """One model input: its shape without the batch dimension, and its dtype."""

    shape: tuple
    dtype: str


class ContextualPreprocessor(tf.Module):
    """Raw photos (tags, text, language, image bytes) -> the model's inputs, inside the graph (a
    `tf.Module`, so a SavedModel that serves through it keeps its lookup tables).

    Args:
        tags: the tag lookup (its vocabulary); None for a model without tags.
        image_size: the side of the square decoded images; None for a model without an image.
        image_presence: the model takes `image_present` (1 where the image was decoded).
        text: the word lookup of free text (its vocabulary and text limit); None for a model
            without text.
        text_branch: `shared` (the words' vocabulary is the tags', and the model pools both in one
            branch) or `separate`.
    """

    feature_dim = FEATURE_DIM  # a feature row's features, before the image presence (`app.records.pipeline`)

    def __init__(self, tags: Optional[TagLookup], image_size: Optional[int], image_presence: bool = False,
                 text: Optional[TagLookup] = None, text_branch: str = "shared"):
        super().__init__(name="preprocessor")
        if image_presence and image_size is None:
            raise ValueError("image_presence needs an image input (image_size)")
        if text is not None and tags is not None and text_branch == "shared" and text.vocab.tokens != tags.vocab.tokens:
            raise ValueError("a shared text branch needs one vocabulary for tags and words")
        self.tags, self.image_size, self.image_presence = tags, image_size, image_presence
        self.text, self.text_branch = text, text_branch
        self._fingerprint: Optional[str] = None

    @classmethod
    def for_model(cls, config: ModelConfig, tags: TagLookup | Vocabulary | None,
                  text: TagLookup | Vocabulary | None = None) -> "ContextualPreprocessor":
        """The inputs a model of `config` takes; `tags` (`text`) is only used, and then needed, by a
        model that reads tags (free text)."""
        needed = {"tag": (config.reads_tags, tags), "word": (config.reads_text, text)}
        for kind, (reads, vocab) in needed.items():
            if reads and vocab is None:
                raise ValueError(f"a {config.model!r} model with text_input={config.text_input!r} needs a {kind} "
                                 f"vocabulary")
        tags, text = (TagLookup(v) if isinstance(v, Vocabulary) else v for v in (tags, text))
        return cls(tags if config.reads_tags else None, config.image_size if config.uses_image else None,
                   config.uses_image and config.image_presence, text if config.reads_text else None,
                   config.text_branch)

    @classmethod
    def for_run(cls, model: ModelConfig, data: DataConfig, info: DatasetInfo,
                tags: Optional[TagLookup] = None) -> "ContextualPreprocessor":
        """The inputs of a run of `model` on `info`: the tag vocabulary is `tags` or the dataset's of
        `data`'s settings, a word vocabulary is built from the train split's text (streamed; words cut
        to the text limit, kept from `text_threshold` counts), and a shared one from its tags and
        text together (each cut to its limit, kept from `tag_threshold` counts)."""
        if not model.reads_text:
            return cls.for_model(model, tags or (TagLookup(info.vocabulary(data.tag_limit, data.tag_threshold,
                                                                           data.tag_normalization))
                                                 if model.reads_tags else None))
        files = info.shard_files("train")
        photos = ((language, words[:data.text_limit]) for language, words in iter_language_words(files))
        if model.reads_tags and model.text_branch == "shared":
            tagged = ((language, tags[:data.tag_limit]) for language, tags in iter_language_tags(files))
            vocab = build_normalized_vocabulary(itertools.chain(tagged, photos), max(data.tag_limit, data.text_limit),
                                                data.tag_threshold, info.vocab.lowercase,
                                                data.tag_normalization)
            return cls.for_model(model, dataclasses.replace(vocab, limit=data.tag_limit),
                                 dataclasses.replace(vocab, limit=data.text_limit))
        words = build_normalized_vocabulary(photos, data.text_limit, data.text_threshold, True, data.tag_normalization)
        tags = tags or (TagLookup(info.vocabulary(data.tag_limit, data.tag_threshold, data.tag_normalization))
                        if model.reads_tags else None)
        return cls.for_model(model, tags, words)

    @property
    def uses_tags(self) -> bool:
        """The model has a text side: tags and/or free text (what `withhold` "tags" takes away)."""
        return self.tags is not None or self.text is not None

    @property
    def uses_text(self) -> bool:
        return self.text is not None

    @property
    def uses_image(self) -> bool:
        return self.image_size is not None

    @property
    def needs_language(self) -> bool:
        """Raw photos must come with their language (a vocabulary normalised per language)."""
        return any(lookup is not None and lookup.needs_language for lookup in (self.tags, self.text))

    @property
    def shared_text(self) -> bool:
        """Tags and words go through one embedding and pooling."""
        return self.text is not None and (self.tags is None or self.text_branch == "shared")

    # === Specs ===
    def model_inputs(self, features: bool = False) -> dict[str, InputSpec]:
        """The model's inputs by name; with `features`, the head's (image features, not pixels)."""
        specs = {}
        if self.tags is not None:
            specs["tag_ids"] = InputSpec((self.tags.limit,), "int32")
        if self.uses_text:
            specs["text_ids"] = InputSpec((self.text.limit,), "int32")
        if self.uses_image and features:
            specs["image_features"] = InputSpec((FEATURE_DIM,), "float32")
        elif self.uses_image:
            specs["image"] = InputSpec((self.image_size, self.image_size, 3), "uint8")
        if self.image_presence:
            specs["image_present"] = InputSpec((1,), "float32")
        return specs

    def record_keys(self, features: bool = False) -> list[str]:
        """The record fields (`app.records.schema`) the inputs are made from."""
        keys = ["tags"] if self.tags is not None else []
        keys += ["text"] if self.uses_text else []
        keys += ["language"] if self.uses_tags else []
        return keys + (["image"] if self.uses_image and not features else [])

    def serving_inputs(self, tags: tf.TensorSpec) -> list[tf.TensorSpec]:
        """A serving signature's inputs: `tags` (as given), `image_bytes`, `text` if the model reads
        free text, and `language` if needed."""
        specs = [tags, tf.TensorSpec([None], tf.string, name="image_bytes")]
        specs += [SERVING_TEXT] if self.uses_text else []
        return specs + ([tf.TensorSpec([None], tf.string, name="language")] if self.needs_language else [])

    # === Preprocessing ===
    def __call__(self, raw: dict, cleaned: bool = False,
                 feature_rows: Optional[tf.Tensor] = None) -> tuple[dict, Optional[tf.Tensor]]:
        """Maps a batch of raw photos to the model's inputs.

        Args:
            raw: `tags` (ragged strings), `text` (`[b]` free text, where `uses_text`), `language`
                (`[b]`, where `needs_language`) and `image` (`[b]` encoded bytes, "" for none), as
                records (`record_keys`) or a request hold them.
            cleaned: the tags were already cleaned (records); serving cleans them here. Text is
                always tokenised here.
            feature_rows: `[b, FEATURE_DIM + 1]` frozen-backbone features then the image presence,
                in place of decoding `image` (the head's inputs, see `model_inputs(features=True)`).

        Returns:
            `(inputs, image_error)`: `image_error[i]` is "" where photo `i`'s image was decoded (or
            given, for a model without an image), else why not; None when `raw` has no image.
        """
        inputs, image_error = {}, None
        if self.tags is not None:
            inputs["tag_ids"] = self.tags(raw["tags"], cleaned=cleaned, languages=raw.get("language"))
        if self.uses_text:
            inputs["text_ids"] = self.text(tokenize_text(raw["text"]), languages=raw.get("language"))
        if feature_rows is not None:
            inputs.update(self.feature_inputs(feature_rows))
        elif self.uses_image:
            inputs["image"], image_error = decode_images(raw["image"], self.image_size)
            if self.image_presence:
                inputs["image_present"] = tf.cast(tf.equal(image_error, ""), tf.float32)[:, None]
        elif "image" in raw:
            image_error = tf.where(tf.strings.length(raw["image"]) > 0, "", NO_IMAGE)
        return inputs, image_error

    def feature_inputs(self, feature_rows: tf.Tensor) -> dict:
        """The inputs that `[b, FEATURE_DIM + 1]` frozen-backbone feature rows give: `image_features`,
        and `image_present` (the rows' last column) where the model takes it."""
        inputs = {"image_features": feature_rows[:, :FEATURE_DIM]}
        if self.image_presence:
            inputs["image_present"] = feature_rows[:, FEATURE_DIM:]
        return inputs

    def check_withhold(self, withheld: tuple, features: bool = False) -> None:
        """Refuses what `withhold` cannot withhold: only `image` (decoded here) and `tags` (the text
        side: tags and free text)."""
        unknown = sorted(set(withheld) - set(WITHHOLDABLE))
        if unknown or ("image" in withheld and "image" not in self.record_keys(features)):
            raise ValueError(f"withhold takes 'image' (with decoded images, not features) and/or 'tags'. Received: "
                             f"withhold={withheld}, image_size={self.image_size}")

    @staticmethod
    def withhold(raw: dict, withheld: tuple) -> dict:
        """`raw` as if its photos came without `withheld` (`image` bytes and/or `tags`: tags and
        free text), as serving would."""
        raw = dict(raw)
        if "tags" in withheld and "tags" in raw:
            raw["tags"] = raw["tags"][:, :0]
        if "tags" in withheld and "text" in raw:
            raw["text"] = tf.fill(tf.shape(raw["text"]), "")
        if "image" in withheld and "image" in raw:
            raw["image"] = tf.fill(tf.shape(raw["image"]), "")
        return raw

    # === Saving ===
    def fingerprint(self) -> str:
        """A hash of all that decides the inputs made from a record: the configuration, the
        vocabularies and the graph code (this module and `app.model.preprocess`). It keys the
        caches of parsed records (`app.records.parsed_cache`)."""
        if self._fingerprint is None:
            digest = hashlib.sha256(json.dumps(self.get_config(), sort_keys=True).encode())
            for lookup in (self.tags, self.text):
                digest.update(b"\0" + (lookup.vocab.to_text().encode("utf-8") if lookup is not None else b""))
            for module in (__file__, preprocess.__file__):
                digest.update(Path(module).read_bytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def get_config(self) -> dict:
        config = {"inputs": list(self.model_inputs()), "image_size": self.image_size,
                  "image_presence": self.image_presence, "vocabulary": VOCAB if self.tags is not None else None}
        if self.uses_text:  # absent before text was an input: such files load as models without text
            config["text"] = {"vocabulary": VOCAB if self.shared_text else TEXT_VOCAB, "limit": self.text.limit,
                              "branch": self.text_branch}
        return config

    def save(self, folder: str | Path) -> list[str]:
        """Writes `preprocessor.json` (and the vocabularies, `vocab.tsv` with tags or a shared text
        branch, `text_vocab.tsv` for a separate one) into `folder`; returns the names written."""
        config, written = self.get_config(), [PREPROCESSOR]
        if self.tags is not None or self.shared_text:
            (self.tags or self.text).vocab.save(Path(folder) / VOCAB)
            written.append(VOCAB)
        if self.uses_text and not self.shared_text:
            self.text.vocab.save(Path(folder) / TEXT_VOCAB)
            written.append(TEXT_VOCAB)
        atomic_write_json(Path(folder) / PREPROCESSOR, config)
        return written

    @classmethod
    def load(cls, folder: str | Path) -> "ContextualPreprocessor":
        """Loads what `save` wrote; a file whose inputs are not those it describes is refused."""
        path = Path(folder) / PREPROCESSOR
        config = read_json(path)
        vocab = Vocabulary.load(Path(folder) / config["vocabulary"]) if config["vocabulary"] else None
        text, branch = None, "shared"
        if config.get("text"):
            branch = config["text"]["branch"]
            words = vocab if config["text"]["vocabulary"] == VOCAB and vocab else Vocabulary.load(
                Path(folder) / config["text"]["vocabulary"])
            text = TagLookup(dataclasses.replace(words, limit=config["text"]["limit"]))
        loaded = cls(TagLookup(vocab) if vocab else None, config["image_size"], config["image_presence"], text, branch)
        if list(loaded.model_inputs()) != config["inputs"]:
            raise InputError(f"{path}: lists the inputs {config['inputs']}, but describes "
                             f"{list(loaded.model_inputs())}")
        return loaded


def tokenize_text(text: tf.Tensor) -> tf.RaggedTensor:
    """`[b]` free text -> ragged `[b, None]` words: lower-cased, punctuation and symbols replaced by
    spaces, split on white space (`TagLookup` then drops digit-only words and repeats)."""
    lowered = tf.strings.lower(text, encoding="utf-8")
    return tf.strings.split(tf.strings.regex_replace(lowered, r"[\p{P}\p{S}\s]+", " "))


def iter_language_words(files: list) -> Iterator[tuple[str, list]]:
    """Streams each photo's `(language, cleaned words of its text)` from shards, in shard order,
    tokenised by the graph code that makes the model's inputs (for word vocabularies)."""
    ds = tf.data.TFRecordDataset(files).batch(4096)
    for batch in ds.map(lambda s: parse_batch(s, ["language", "text"])):
        words = clean_tags(tokenize_text(batch["text"]), lowercase=True)
        for language, row in zip(batch["language"].numpy(), words.to_list()):
            yield language.decode(), [w.decode("utf-8") for w in row]
