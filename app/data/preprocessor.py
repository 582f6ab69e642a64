"""The model's input contract: which inputs a model takes, their names, dtypes and shapes, and how
a photo's raw parts become them (like keras-hub's `Preprocessor` for a Task).

    raw photo                                 model inputs
    tags      string, ragged [b, None] ─ TagLookup ─────────▶ tag_ids        int32   [b, tag limit]
    language  string [b] (normalised vocabularies) ┘
    image     string [b] (JPEG/PNG bytes) ─ decode_images ───▶ image          uint8   [b, size, size, 3]
                                                   └─ decoded? ▶ image_present float32 [b, 1]
    frozen-backbone feature rows ────────────────────────────▶ image_features float32 [b, FEATURE_DIM]

The tf.data parser (`app.data.pipeline`), the serving signatures (`app.serving.signatures`), the
model builder (`app.model.classifier.build_head`: its `keras.Input`s come from `model_inputs`),
evaluation, predict and the teacher all go through one `ContextualPreprocessor`, saved in the run
folder (`preprocessor.json` + `vocab.tsv`) and loaded back from it. Adding an input means editing
this module, the record schema (`app.data.records`) and the model builder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tensorflow as tf

from app.config import ModelConfig, read_json
from app.data.dataset import VOCAB
from app.data.preprocess import NO_IMAGE, TagLookup, decode_images
from app.data.tags import Vocabulary
from app.errors import InputError
from app.fileio import atomic_write_json

FEATURE_DIM = 2048  # ResNet50's pooled features: the head's `image_features` input
PREPROCESSOR = "preprocessor.json"
WITHHOLDABLE = ("image", "tags")
SERVING_TAGS = tf.TensorSpec([None, None], tf.string, name="tags")  # padded with ""
SERVING_YFCC_TAGS = tf.TensorSpec([None], tf.string, name="tags")  # one YFCC100M tag field per photo


@dataclass(frozen=True)
class InputSpec:
    """One model input: its shape without the batch dimension, and its dtype."""

    shape: tuple
    dtype: str


class ContextualPreprocessor(tf.Module):
    """Raw photos (tags, language, image bytes) -> the model's inputs, inside the graph (a
    `tf.Module`, so a SavedModel that serves through it keeps its lookup tables).

    Args:
        tags: the tag lookup (its vocabulary); None for a model without tags.
        image_size: the side of the square decoded images; None for a model without an image.
        image_presence: the model takes `image_present` (1 where the image was decoded).
    """

    def __init__(self, tags: Optional[TagLookup], image_size: Optional[int], image_presence: bool = False):
        super().__init__(name="preprocessor")
        if image_presence and image_size is None:
            raise ValueError("image_presence needs an image input (image_size)")
        self.tags, self.image_size, self.image_presence = tags, image_size, image_presence

    @classmethod
    def for_model(cls, config: ModelConfig, tags: TagLookup | Vocabulary | None) -> "ContextualPreprocessor":
        """The inputs a model of `config` takes; `tags` is only used (and then needed) with tags."""
        if config.uses_tags and tags is None:
            raise ValueError(f"a {config.model!r} model needs a tag vocabulary")
        if isinstance(tags, Vocabulary):
            tags = TagLookup(tags)
        return cls(tags if config.uses_tags else None, config.image_size if config.uses_image else None,
                   config.uses_image and config.image_presence)

    @property
    def uses_tags(self) -> bool:
        return self.tags is not None

    @property
    def uses_image(self) -> bool:
        return self.image_size is not None

    @property
    def needs_language(self) -> bool:
        """Raw photos must come with their tag language (a vocabulary normalised per language)."""
        return self.uses_tags and self.tags.needs_language

    # === Specs ===
    def model_inputs(self, features: bool = False) -> dict[str, InputSpec]:
        """The model's inputs by name; with `features`, the head's (image features, not pixels)."""
        specs = {}
        if self.uses_tags:
            specs["tag_ids"] = InputSpec((self.tags.limit,), "int32")
        if self.uses_image and features:
            specs["image_features"] = InputSpec((FEATURE_DIM,), "float32")
        elif self.uses_image:
            specs["image"] = InputSpec((self.image_size, self.image_size, 3), "uint8")
        if self.image_presence:
            specs["image_present"] = InputSpec((1,), "float32")
        return specs

    def record_keys(self, features: bool = False) -> list[str]:
        """The record fields (`app.data.records`) the inputs are made from."""
        keys = ["tags", "language"] if self.uses_tags else []
        return keys + (["image"] if self.uses_image and not features else [])

    def serving_inputs(self, tags: tf.TensorSpec) -> list[tf.TensorSpec]:
        """A serving signature's inputs: `tags` (as given), `image_bytes`, and `language` if needed."""
        specs = [tags, tf.TensorSpec([None], tf.string, name="image_bytes")]
        return specs + ([tf.TensorSpec([None], tf.string, name="language")] if self.needs_language else [])

    # === Preprocessing ===
    def __call__(self, raw: dict, cleaned: bool = False,
                 feature_rows: Optional[tf.Tensor] = None) -> tuple[dict, Optional[tf.Tensor]]:
        """Maps a batch of raw photos to the model's inputs.

        Args:
            raw: `tags` (ragged strings), `language` (`[b]`, where `needs_language`) and `image`
                (`[b]` encoded bytes, "" for none), as records (`record_keys`) or a request hold them.
            cleaned: the tags were already cleaned (records); serving cleans them here.
            feature_rows: `[b, FEATURE_DIM + 1]` frozen-backbone features then the image presence,
                in place of decoding `image` (the head's inputs, see `model_inputs(features=True)`).

        Returns:
            `(inputs, image_error)`: `image_error[i]` is "" where photo `i`'s image was decoded (or
            given, for a model without an image), else why not; None when `raw` has no image.
        """
        inputs, image_error = {}, None
        if self.uses_tags:
            inputs["tag_ids"] = self.tags(raw["tags"], cleaned=cleaned, languages=raw.get("language"))
        if feature_rows is not None:
            inputs["image_features"], present = feature_rows[:, :FEATURE_DIM], feature_rows[:, FEATURE_DIM:]
        elif self.uses_image:
            inputs["image"], image_error = decode_images(raw["image"], self.image_size)
            present = tf.cast(tf.equal(image_error, ""), tf.float32)[:, None]
        elif "image" in raw:
            image_error = tf.where(tf.strings.length(raw["image"]) > 0, "", NO_IMAGE)
        if self.image_presence:
            inputs["image_present"] = present
        return inputs, image_error

    def check_withhold(self, withheld: tuple, features: bool = False) -> None:
        """Refuses what `withhold` cannot withhold: only `image` (decoded here) and `tags`."""
        unknown = sorted(set(withheld) - set(WITHHOLDABLE))
        if unknown or ("image" in withheld and "image" not in self.record_keys(features)):
            raise ValueError(f"withhold takes 'image' (with decoded images, not features) and/or 'tags'. Received: "
                             f"withhold={withheld}, image_size={self.image_size}")

    @staticmethod
    def withhold(raw: dict, withheld: tuple) -> dict:
        """`raw` as if its photos came without `withheld` (`image` bytes and/or `tags`), as serving would."""
        raw = dict(raw)
        if "tags" in withheld and "tags" in raw:
            raw["tags"] = raw["tags"][:, :0]
        if "image" in withheld and "image" in raw:
            raw["image"] = tf.fill(tf.shape(raw["image"]), "")
        return raw

    # === Saving ===
    def get_config(self) -> dict:
        return {"inputs": list(self.model_inputs()), "image_size": self.image_size,
                "image_presence": self.image_presence, "vocabulary": VOCAB if self.uses_tags else None}

    def save(self, folder: str | Path) -> None:
        """Writes `preprocessor.json` (and the vocabulary, `vocab.tsv`, with tags) into `folder`."""
        if self.uses_tags:
            self.tags.vocab.save(Path(folder) / VOCAB)
        atomic_write_json(Path(folder) / PREPROCESSOR, self.get_config())

    @classmethod
    def load(cls, folder: str | Path) -> "ContextualPreprocessor":
        """Loads what `save` wrote; a file whose inputs are not those it describes is refused."""
        path = Path(folder) / PREPROCESSOR
        config = read_json(path)
        vocab = Vocabulary.load(Path(folder) / config["vocabulary"]) if config["vocabulary"] else None
        loaded = cls(TagLookup(vocab) if vocab else None, config["image_size"], config["image_presence"])
        if list(loaded.model_inputs()) != config["inputs"]:
            raise InputError(f"{path}: lists the inputs {config['inputs']}, but describes "
                             f"{list(loaded.model_inputs())}")
        return loaded
