"""The text encoder: one owner for turning words, tags, captions, class names and queries into vectors.

    encoder = encoder_from_spec("use")               # or "savedmodel:PATH", "keras:PATH"
    encoder.encode(["dog", "hund"])                  # [2, 512] float32, unit rows; bad text: InputError
    VectorCache().vectors(encoder, vocabulary)       # WordVectors: encoded once, cached, bad words skipped

`TextEncoder` (`base.py`) is the interface; `use.py` the bundled multilingual encoder (the default);
`user_models.py` a user's SavedModel or Keras model; `vectors.py` vocabularies' vectors and their cache.
"""

from __future__ import annotations

from app.config import ENCODER_HELP, check_encoder_spec
from app.text.encoders.base import MAX_TEXT_CHARS, TextEncoder, text_problem
from app.text.encoders.vectors import VectorCache, WordVectors, encode_words, vectors_key

DEFAULT_ENCODER = "use"

__all__ = ["DEFAULT_ENCODER", "ENCODER_HELP", "MAX_TEXT_CHARS", "TextEncoder", "VectorCache", "WordVectors",
           "check_encoder_available", "encode_words", "encoder_from_spec", "text_problem", "vectors_key"]


def check_encoder_available(spec: str) -> None:
    """Refuses a spec whose model is not there (checked before a run writes anything; nothing is loaded).

    Raises:
        InputError: a bad spec, or `kind:PATH: no such folder` (or file).
    """
    check_encoder_spec(spec)
    kind, _, path = spec.partition(":")
    if kind != "use":
        from app.text.encoders.user_models import check_model_path

        check_model_path(kind, path)


def encoder_from_spec(spec: str = DEFAULT_ENCODER) -> TextEncoder:
    """The encoder a spec names (`app.config.check_encoder_spec`); user models are loaded now."""
    check_encoder_spec(spec)
    kind, _, path = spec.partition(":")
    if kind == "use":
        from app.text.encoders.use import UniversalSentenceEncoder

        return UniversalSentenceEncoder()
    from app.text.encoders.user_models import KerasEncoder, SavedModelEncoder

    return (SavedModelEncoder if kind == "savedmodel" else KerasEncoder)(path)
