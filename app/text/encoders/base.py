"""The text encoder interface: texts in, L2-normalised float32 vectors out, batched.

Every encoder (the bundled Universal Sentence Encoder, a user's SavedModel or Keras model) is a
`TextEncoder`: `name`, `version` and `dim` say what it is (a vector cache is keyed by them), and
`encode(texts)` returns `[n, dim]` unit vectors. A text the encoder cannot take (empty, only
invisible characters, over `MAX_TEXT_CHARS`, not encodable as UTF-8) is refused before it reaches
the encoder: `encode` raises a one-line `InputError`, and `app.text.encoders.vectors.encode_words`
counts it as a skip with its reason. An encoder's output that is not finite or is all zeros is
refused the same way, so no text ever gets a silently wrong vector.
"""

from __future__ import annotations

import unicodedata
from typing import Iterator, Optional, Sequence

import numpy as np

from app.errors import InputError

# Longer texts are refused: a tag, class name or query is far shorter, and a 10 kB "word" costs
# seconds of encoding for a meaningless vector.
MAX_TEXT_CHARS = 1000
BATCH_SIZE = 256
# Unicode categories that draw nothing: separators (Z*) and control, format (zero-width), surrogate,
# private-use and unassigned characters (C*).
_INVISIBLE = ("Z", "C")


def text_problem(text: object) -> Optional[str]:
    """Why an encoder cannot take `text` (a short reason token), or None when it can.

    Reasons: `not_a_string`, `empty`, `invisible_only` (only white space, zero-width or other
    format and control characters), `too_long` (over `MAX_TEXT_CHARS`), `not_utf8` (a lone surrogate).
    """
    if not isinstance(text, str):
        return "not_a_string"
    if not text.strip():
        return "empty"
    if len(text) > MAX_TEXT_CHARS:
        return "too_long"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "not_utf8"
    if all(unicodedata.category(c)[0] in _INVISIBLE for c in text):
        return "invisible_only"
    return None


def describe_text(text: object) -> str:
    """A short printable form of a text for messages (long ones cut)."""
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."


class TextEncoder:
    """Maps texts to L2-normalised float32 vectors. Subclasses set `name`, `version` and `dim` and
    implement `_encode_batch`.

    Attributes:
        name: what the encoder is (e.g. `use-multilingual-v3`, `savedmodel:/path`).
        version: what exactly it computes (a package version, or a hash of the model's files): a
            vector cache made with another version is refused.
        dim: the vectors' size.
        batch_size: texts per call of the underlying model.
        scripts: the Unicode scripts of the languages it was trained on, as the first word of a
            letter's Unicode name (`LATIN`, `CJK`, ...); None where they are not known (a user's model).
    """

    name: str = ""
    version: str = ""
    dim: int = 0
    batch_size: int = BATCH_SIZE
    scripts: Optional[frozenset] = None

    @property
    def key(self) -> dict:
        """What a vector made by this encoder depends on (recorded in caches and run folders)."""
        return {"encoder": self.name, "version": self.version, "dim": self.dim}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """`[n, dim]` float32 unit vectors of `texts`, encoded `batch_size` at a time.

        Raises:
            InputError: a text the encoder cannot take (see `text_problem`), or an encoder output that
                is not a finite non-zero vector, naming its position and the reason.
        """
        texts = list(texts)
        for i, text in enumerate(texts):
            reason = text_problem(text)
            if reason:
                raise InputError(f"{self.name}: text {i} {describe_text(text)} cannot be encoded: {reason}")
        vectors, bad = self.encode_unchecked(texts)
        if bad:
            i = bad[0]
            raise InputError(f"{self.name}: text {i} {describe_text(texts[i])} gave no usable vector "
                             f"(not finite or all zeros)")
        return vectors

    def unknown_scripts(self, text: str) -> list[str]:
        """The scripts of `text`'s letters that the encoder was not trained on (none where `scripts` is
        not known), sorted: such a text still gets a vector, but one that may mean nothing."""
        if self.scripts is None:
            return []
        named = {unicodedata.name(c, "UNKNOWN").split()[0] for c in text if c.isalpha()}
        return sorted(named - self.scripts)

    def encode_unchecked(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Encodes texts already screened by `text_problem`, in batches.

        Returns:
            `(vectors, bad)`: unit vectors `[n, dim]`, and the positions whose output was not finite
            or all zeros (their rows are zeros).
        """
        out = np.zeros((len(texts), self.dim), np.float32)
        for start, batch in _batches(texts, self.batch_size):
            out[start:start + len(batch)] = self._checked_batch(batch)
        norms = np.linalg.norm(out, axis=1)
        bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
        out[bad] = 0.0
        good = np.setdiff1d(np.arange(len(texts)), bad)
        out[good] /= norms[good, None]
        return out, bad.tolist()

    def _checked_batch(self, batch: list[str]) -> np.ndarray:
        vectors = np.asarray(self._encode_batch(batch), dtype=np.float32)
        if vectors.shape != (len(batch), self.dim):
            raise InputError(f"{self.name}: gave vectors of shape {vectors.shape} for {len(batch)} texts; "
                             f"expected ({len(batch)}, {self.dim})")
        return vectors

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """`[len(texts), dim]` vectors, any scale (normalised by the caller)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r}, dim={self.dim})"


def _batches(items: list, size: int) -> Iterator[tuple[int, list]]:
    for start in range(0, len(items), size):
        yield start, items[start:start + size]
