"""A vocabulary's encoder vectors: encoded once, batched, with counted skips, cached by content hash.

    words ─ text_problem ─▶ skipped {word: reason}
          └─ encoder.encode_unchecked (batches, progress bar) ─▶ WordVectors (rows of skipped words are zeros)

`WordVectors.save` writes one `.npz` file atomically, with the key it was made from (encoder name,
version, dim, and the sha256 of the word list); `WordVectors.load` refuses a file whose key is not
the one asked for, so vectors of another encoder version or vocabulary are never reused.
`VectorCache` keeps such files in a folder, named by the key's hash. No encoder call happens in a
training step: training reads the vectors once, before the model is built.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from app.errors import InputError
from app.fileio import atomic_write_bytes
from app.text.encoders.base import TextEncoder, text_problem

log = logging.getLogger("app.text")
PROGRESS_FROM = 2000  # words: a longer list shows a progress bar
CACHE_ENV = "CIC_VECTOR_CACHE"  # the default cache folder (else ~/.cache/contextual-image-classifier/vectors)


def words_hash(words: Sequence[str]) -> str:
    """sha256 of a word list (order matters: row i is word i)."""
    digest = hashlib.sha256()
    for word in words:
        digest.update(word.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


def vectors_key(encoder: TextEncoder, words: Sequence[str]) -> dict:
    """What a vocabulary's vectors depend on."""
    return {**encoder.key, "words_sha256": words_hash(words), "words": len(words)}


@dataclass
class WordVectors:
    """Encoder vectors of a word list.

    Args:
        words: the words, in row order.
        vectors: `[len(words), dim]` float32 unit vectors; zeros for a skipped word.
        skipped: `{word: reason}` for each word that got no vector (see `text_problem`, and
            `no_vector` for an encoder output that was not finite or all zeros).
        key: `vectors_key` of the encoder and words.
    """

    words: list
    vectors: np.ndarray
    skipped: dict = field(default_factory=dict)
    key: dict = field(default_factory=dict)

    @property
    def encoded(self) -> np.ndarray:
        """`[len(words)]` bool: the word has a vector."""
        return np.array([w not in self.skipped for w in self.words], dtype=bool)

    def skip_counts(self) -> dict:
        """`{reason: count}` of the skipped words."""
        return dict(collections.Counter(self.skipped.values()))

    def save(self, path: str | Path) -> None:
        """Writes the vectors and their key into one `.npz` file, atomically."""
        meta = {"key": self.key, "skipped": self.skipped}
        buffer = io.BytesIO()
        np.savez(buffer, vectors=self.vectors, meta=np.array(json.dumps(meta, ensure_ascii=False)))
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path, key: dict, words: Sequence[str]) -> "WordVectors":
        """Reads what `save` wrote, for exactly `key` (`vectors_key`) and `words`.

        Raises:
            InputError: the file is unreadable, or was made by another encoder, version or vocabulary.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                vectors, meta = data["vectors"], json.loads(str(data["meta"]))
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"{path}: not a word-vector file ({type(err).__name__}: {err})") from None
        stored = meta.get("key", {})
        if stored != key:
            differ = sorted(k for k in set(stored) | set(key) if stored.get(k) != key.get(k))
            raise InputError(f"{path}: refused: made for another {', '.join(differ)} (file: "
                             f"{_show(stored, differ)}; needed: {_show(key, differ)}); delete it to re-encode")
        if vectors.shape != (len(words), key["dim"]):
            raise InputError(f"{path}: refused: vectors of shape {vectors.shape}, expected ({len(words)}, {key['dim']})")
        return cls(list(words), vectors.astype(np.float32), meta.get("skipped", {}), stored)


def _show(key: dict, names: list) -> str:
    return ", ".join(f"{k}={str(key.get(k))[:16]}" for k in names)


def encode_words(encoder: TextEncoder, words: Sequence[str], progress: bool = True) -> WordVectors:
    """Encodes a vocabulary once, in batches; a word the encoder cannot take is skipped and counted.

    Args:
        encoder: the encoder.
        words: the words (each its own text: a tag, a caption word, a class name).
        progress: show a progress bar for lists of `PROGRESS_FROM` words or more.
    """
    words = list(words)
    skipped = {w: reason for w in words if (reason := text_problem(w))}
    good = [w for w in words if w not in skipped]
    vectors = np.zeros((len(words), encoder.dim), np.float32)
    rows = _encode_with_progress(encoder, good, progress and len(good) >= PROGRESS_FROM)
    index = {w: i for i, w in enumerate(good)}
    for row, word in enumerate(words):
        if word in index:
            vectors[row] = rows[index[word]]
    for word, row in zip(good, rows):
        if not row.any():
            skipped[word] = "no_vector"
    result = WordVectors(words, vectors, skipped, vectors_key(encoder, words))
    if skipped:
        log.warning("%s: %d of %d words got no vector (%s); they start from scratch", encoder.name, len(skipped),
                    len(words), ", ".join(f"{r}: {n}" for r, n in sorted(result.skip_counts().items())))
    return result


def _encode_with_progress(encoder: TextEncoder, texts: list, progress: bool) -> np.ndarray:
    """The texts' unit vectors (zeros where the encoder gave none), with a progress bar if asked."""
    if not progress:
        return encoder.encode_unchecked(texts)[0]
    from tqdm import tqdm

    size = encoder.batch_size
    parts = [encoder.encode_unchecked(texts[start:start + size])[0]
             for start in tqdm(range(0, len(texts), size), desc=f"encoding {len(texts)} words", unit="batch")]
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), np.float32)


class VectorCache:
    """Word vectors on disk, one file per key (`vectors_key`: encoder name, version, dim, word list).

    Args:
        folder: the cache folder (default: `$CIC_VECTOR_CACHE`, else
            `~/.cache/contextual-image-classifier/vectors`).
    """

    def __init__(self, folder: Optional[str | Path] = None):
        default = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "contextual-image-classifier" / "vectors")
        self.folder = Path(folder) if folder else default

    def path(self, key: dict) -> Path:
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:24]
        return self.folder / f"{name}.npz"

    def vectors(self, encoder: TextEncoder, words: Sequence[str], progress: bool = True) -> WordVectors:
        """The words' vectors: from the cache when it holds them for this encoder version, else
        encoded and written to it."""
        words = list(words)
        key = vectors_key(encoder, words)
        path = self.path(key)
        if path.exists():
            return WordVectors.load(path, key, words)
        result = encode_words(encoder, words, progress)
        result.save(path)
        return result
