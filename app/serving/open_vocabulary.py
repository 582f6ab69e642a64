"""Open-vocabulary prediction: class names never trained on, and tags suggested from any word list.

Both use the `embed` signature (a run with an embedding head, in process or exported): a photo's
vector is compared by cosine with the text encoder's vectors of the words, and class scores are
calibrated as the head was on validation (`sigmoid(scale * cosine + bias)`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from app.badrows import BadRows
from app.errors import InputError
from app.model.zero_shot import Calibration, cosine_scores, top_words
from app.sources.classes import read_class_list

MAX_WORD_CHARS = 200


def load_embedder(path: Path) -> tuple[Callable[[list, list, list | None], np.ndarray], dict]:
    """A callable `(tags lists, image bytes list[, texts]) -> [photos, dim]` embeddings, and the head's record.

    Args:
        path: a run folder (its newest export, or the run in process) or a SavedModel version folder.

    Raises:
        InputError: the model has no embedding head (no `embed` signature).
    """
    import tensorflow as tf

    from app.runs.rundir import RunDir
    from app.serving.signatures import EMBEDDING_ASSET, ServingModule, latest_export

    export = path if (path / "saved_model.pb").exists() else latest_export(RunDir(path))
    if export is not None and (export / EMBEDDING_ASSET).is_file():
        module = tf.saved_model.load(str(export))
        signature = module.signatures["embed"]
        record = json.loads((export / EMBEDDING_ASSET).read_text(encoding="utf-8"))
    elif export is not None and (export / "saved_model.pb").exists() and export == path:
        raise InputError(f"{path}: this export has no embed signature: train the run's embedding head "
                         f"(train.py --embedding-head) and export it again")
    else:
        from app.runs.trained import TrainedRun

        module = ServingModule(TrainedRun(path))
        if module.embed is None:
            raise InputError(f"{path}: no embedding head (train one with: python app/train.py --embedding-head ...)")
        signature, record = module.embed.get_concrete_function(), module.record
    inputs = signature.structured_input_signature[1]

    def embed(tags: list, images: list, texts: list | None = None, module=module) -> np.ndarray:
        from app.serving.predictor import tag_languages

        width = max([len(t) for t in tags] + [1])
        extra = {"language": tf.constant(tag_languages(tags))} if "language" in inputs else {}
        if "text" in inputs:
            extra["text"] = tf.constant(texts or [""] * len(tags), tf.string)
        out = signature(tags=tf.constant([t + [""] * (width - len(t)) for t in tags], tf.string),
                        image_bytes=tf.constant(images, tf.string), **extra)
        return out["embedding"].numpy()

    return embed, record


def read_word_list(path: Path, bad: BadRows) -> list:
    """A UTF-8 word list, one word (or phrase) a line; blank and repeated lines are counted skips.

    Raises:
        InputError: not UTF-8, a word over `MAX_WORD_CHARS`, or no word at all.
    """
    words, seen = [], {}
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    for line_no, line in enumerate(text.splitlines(), start=1):
        word = line.strip()
        if not word:
            bad.skip_many("blank_line", str(path), [line_no], [line])
        elif word in seen:
            bad.skip_many("repeated_word", str(path), [line_no], [word])
        elif len(word) > MAX_WORD_CHARS:
            raise InputError(f"{path}:{line_no}: a word of {len(word):,} characters (at most {MAX_WORD_CHARS})")
        else:
            seen[word] = line_no
            words.append(word)
    if not words:
        raise InputError(f"{path}: no words (every line blank)")
    return words


class OpenVocabulary:
    """Adds `zero_shot` (every class of a class list, scored) and/or `suggested_tags` (the k words nearest
    each photo) to a predictor's outputs.

    Args:
        embed: from `load_embedder`.
        record: the head's record (encoder, calibration).
        encoder: the text encoder (the one the head was trained with).
        classes: a class file (`name[,id]`, any language; duplicate names refused), or None.
        words: the candidate tags for suggestion, or None; `suggest` how many per photo.
    """

    def __init__(self, embed: Callable, record: dict, encoder, classes: Path | None = None,
                 words: list | None = None, suggest: int = 0):
        encoder_id = f"{encoder.name}@{encoder.version}"
        if record["encoder"] != encoder_id:
            raise InputError(f"the embedding head was trained with the text encoder {record['encoder']}, "
                             f"this one is {encoder_id}: retrain the head")
        self.embed, self.calibration = embed, Calibration(**record["calibration"])
        self.classes = read_class_list(classes) if classes else None
        self.class_vectors = encoder.encode([n.replace("_", " ") for n in self.classes.names]) if classes else None
        self.words, self.suggest = words, suggest
        self.word_vectors = encoder.encode(words) if words else None

    def __call__(self, predict: Callable) -> Callable:
        """`predict` with the open-vocabulary outputs added."""

        def with_open_vocabulary(tags: list, images: list, texts: list | None = None) -> dict:
            outputs = predict(tags, images, texts)
            outputs.update(self.outputs(self.embed(tags, images, texts)))
            return outputs

        return with_open_vocabulary

    def outputs(self, embeddings: np.ndarray) -> dict:
        """`zero_shot` and `suggested_tags` lists, one entry per photo."""
        out = {}
        if self.classes is not None:
            scores = self.calibration(cosine_scores(embeddings, self.class_vectors))
            order = np.argsort(-scores, axis=1, kind="stable")
            out["zero_shot"] = [[{"id": self.classes.ids[j], "name": self.classes.names[j],
                                  "score": round(float(row[j]), 6)} for j in cols] for row, cols in zip(scores, order)]
        if self.words:
            out["suggested_tags"] = [[{"tag": w, "cosine": round(c, 6)} for w, c in row]
                                     for row in top_words(cosine_scores(embeddings, self.word_vectors), self.words,
                                                          self.suggest)]
        return out
