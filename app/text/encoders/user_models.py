"""A user's own text model behind the `TextEncoder` interface: a TensorFlow SavedModel folder (such
as the TF-Hub or Kaggle Universal Sentence Encoder: `savedmodel:PATH`) or a Keras model file
(`keras:PATH`, e.g. a keras-hub preprocessor and backbone wrapped into one model that maps raw
strings to vectors).

Either must map a 1-D string tensor `[n]` to vectors `[n, dim]`. The version is a hash of the
model's files, so a vector cache from another model (or a changed one) is refused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from app.errors import InputError
from app.text.encoders.base import TextEncoder

PROBE = "dog"


def files_hash(path: Path) -> str:
    """sha256 over a file, or over a folder's files (relative names and contents, in name order)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode("utf-8") + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def check_model_path(kind: str, path: str | Path) -> Path:
    """The resolved path of a user's model (`kind` savedmodel or keras).

    Raises:
        InputError: `kind:PATH: no such folder` (or file).
    """
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise InputError(f"{kind}:{path}: no such {'folder' if kind == 'savedmodel' else 'file'}")
    return resolved


class _UserModel(TextEncoder):
    """Shared by the adapters: the version from the files, the dimension from one probe text."""

    kind = ""

    def __init__(self, path: str | Path):
        self.path = check_model_path(self.kind, path)
        self.name = f"{self.kind}:{self.path}"
        self.version = f"sha256:{files_hash(self.path)}"
        self._call = self._load()
        self.dim = int(np.asarray(self._encode_batch([PROBE])).shape[-1])

    def _load(self):
        raise NotImplementedError

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        import tensorflow as tf

        out = self._call(tf.constant(texts, tf.string))
        if isinstance(out, dict):  # a signature: its one output (or `outputs`/`default`, as TF-Hub names it)
            out = out.get("outputs", out.get("default", next(iter(out.values())) if len(out) == 1 else None))
            if out is None:
                raise InputError(f"{self.name}: the model has several outputs; expected one vector per text")
        vectors = np.asarray(out)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise InputError(f"{self.name}: gave an output of shape {vectors.shape} for {len(texts)} texts; "
                             f"expected [texts, dim]")
        return vectors


class SavedModelEncoder(_UserModel):
    """A TensorFlow SavedModel folder, called as `model(strings)` (a TF-Hub module) or through its
    `serving_default` signature. A model that needs `tensorflow_text` ops (the multilingual USE from
    TF-Hub) loads once that package is installed and imported."""

    kind = "savedmodel"

    def _load(self):
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(self.path))
        except (OSError, ValueError, tf.errors.OpError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(f"{self.name}: not a loadable SavedModel: {first}") from None
        if callable(loaded):
            return loaded
        signatures = getattr(loaded, "signatures", {})
        if "serving_default" not in signatures:
            raise InputError(f"{self.name}: neither callable nor with a serving_default signature")
        signature = signatures["serving_default"]
        names = list(signature.structured_input_signature[1])
        if len(names) != 1:
            raise InputError(f"{self.name}: its serving_default signature takes {names}; expected one string input")
        return lambda strings: signature(**{names[0]: strings})


class KerasEncoder(_UserModel):
    """A Keras model file (`.keras`) that maps raw strings to vectors."""

    kind = "keras"

    def _load(self):
        import keras

        try:
            return keras.saving.load_model(self.path)
        except (OSError, ValueError, TypeError) as err:
            raise InputError(f"{self.name}: not a loadable Keras model: {str(err).splitlines()[0]}") from None
