"""Open-vocabulary prediction: class names never trained on, and tags suggested from any word list.

Both read a photo's vector from the `embed` signature (a run with an embedding head, in process or
exported): it is compared by cosine with the text encoder's vectors of the words. Class scores are
calibrated as the head was on validation (`sigmoid(scale * cosine + bias)`), so a class the model
never saw gets a probability on the same scale as the trained ones' cosines; suggested tags keep
their cosine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from app.badrows import BadRows
from app.errors import InputError
from app.model.zero_shot import Calibration, class_phrases, cosine_scores, top_words
from app.runs.embedding_head import record_encoder
from app.sources.classes import read_class_list
from app.text.encoders import MAX_TEXT_CHARS, encode_words


def read_word_list(path: Path, bad: BadRows) -> list[str]:
    """A UTF-8 word list, one word (or phrase) a line; blank and repeated lines are counted skips.

    Raises:
        InputError: not UTF-8 (`file:line`), a word over `MAX_TEXT_CHARS`, or no word at all.
    """
    words, seen = [], set()
    for line_no, raw in enumerate(Path(path).read_bytes().removeprefix(b"\xef\xbb\xbf").splitlines(), start=1):
        try:
            word = raw.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            raise InputError(f"{path}:{line_no}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        if not word:
            bad.skip_many("blank_line", str(path), [line_no], [raw.decode("utf-8")])
        elif word in seen:
            bad.skip_many("repeated_word", str(path), [line_no], [word])
        elif len(word) > MAX_TEXT_CHARS:
            raise InputError(f"{path}:{line_no}: a word of {len(word):,} characters (at most {MAX_TEXT_CHARS:,})")
        else:
            seen.add(word)
            words.append(word)
    if not words:
        raise InputError(f"{path}: no words (every line is blank)")
    return words


class OpenVocabulary:
    """`zero_shot` (every class of a class list, scored) and/or `suggested_tags` (the k words nearest each
    photo, its own tags left out) from photo vectors.

    Args:
        record: the embedding head's record (`embedding.json`: encoder, calibration).
        classes: a class file (`name[,id]` a line, any of the encoder's languages; repeated names refused), or None.
        words: the candidate words for suggestion, or None; `suggest`: how many per photo.

    Raises:
        InputError: the encoder installed is not the one the head was trained with, or a class name it
            cannot take.
    """

    def __init__(self, record: dict, classes: Optional[Path] = None, words: Optional[list] = None, suggest: int = 0):
        encoder = record_encoder(record)
        try:
            self.calibration = Calibration(**record["calibration"])
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"the embedding head's record (embedding.json) has no usable calibration ({err}): export "
                             f"the run again, or train its head again") from None
        self.classes = read_class_list(classes) if classes else None
        self.class_vectors = encoder.encode(class_phrases(self.classes.pairs())) if classes else None
        self.words, self.suggest = words, suggest
        self.word_vectors, self.skipped = None, {}
        if words:
            encoded = encode_words(encoder, words, progress=False)
            self.skipped = encoded.skipped  # {word: reason}: reported by the caller
            keep = encoded.encoded
            self.words, self.word_vectors = [w for w, k in zip(words, keep) if k], encoded.vectors[keep]

    def outputs(self, embeddings: np.ndarray, tags: list) -> dict:
        """`zero_shot` and/or `suggested_tags`: one list per photo (`tags`: each photo's own, not suggested)."""
        out = {}
        if self.classes is not None:
            scores = self.calibration(cosine_scores(embeddings, self.class_vectors))
            order = np.argsort(-scores, axis=1, kind="stable")
            out["zero_shot"] = [[{"class_id": self.classes.ids[j], "name": self.classes.names[j],
                                  "score": round(float(row[j]), 6)} for j in cols] for row, cols in zip(scores, order)]
        if self.words:
            own = [{t.strip().lower() for t in row} for row in tags]
            exclude = [[w for w in self.words if w.lower() in mine] for mine in own]
            out["suggested_tags"] = [[{"tag": w, "cosine": round(c, 6)} for w, c in row] for row in
                                     top_words(cosine_scores(embeddings, self.word_vectors), self.words,
                                               self.suggest, exclude)]
        return out
