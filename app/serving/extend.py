"""Unseen words at serving time: a trained run's vocabulary extended with any word list.

    words ─ cleaned as the vocabulary cleans tags ─ text encoder ─ place_words ─▶ new embedding rows
    the run's model and preprocessor, rebuilt with the longer vocabularies (every other weight copied)

Each new word is placed in the trained embedding by its encoder vector (`app.model.word_vectors`), in
every vocabulary the model embeds (tags, and caption words where separate), so a served model reads a
tag it never saw in training, in any of the encoder's languages. A run whose embedding started from
encoder vectors places words only with that same encoder (its `text_encoder.json`); a run learned from
scratch takes any encoder (default: the bundled one). Words already in a vocabulary are kept as they
are; a word the encoder cannot take is a counted skip.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from app.errors import InputError
from app.model.classifier import attach_backbone, build_head
from app.model.preprocess import TagLookup
from app.model.preprocessor import ContextualPreprocessor
from app.model.word_vectors import NEIGHBOURS, embedded_vocabularies, place_words, vocabulary_rows
from app.runs.trained import TrainedRun
from app.text.encoders import TextEncoder, VectorCache, encode_words, encoder_from_spec, text_problem
from app.text.tags import Vocabulary, clean_tags

BACKBONE = "image_backbone"


@dataclass
class Extension:
    """A run with its vocabulary extended, and what was done.

    Attributes:
        run: the run with the extended model and preprocessor (its folder is untouched).
        added: `{embedding prefix: [words added]}`.
        known: how many words each vocabulary already had.
        skipped: `{word: reason}` for the words not added (see `app.text.encoders.text_problem`;
            `digits_only` for a word the tag cleaning drops).
        encoder: the encoder's key (name, version, dim).
        neighbours: the vocabulary words each new row was drawn from.
    """

    run: TrainedRun
    added: dict = field(default_factory=dict)
    known: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    encoder: dict = field(default_factory=dict)
    neighbours: int = NEIGHBOURS

    def record(self) -> dict:
        """What the extension is made of (written beside an export)."""
        return {"added": self.added, "already_in_vocabulary": self.known, "skipped": self.skipped,
                "encoder": self.encoder, "neighbours": self.neighbours}


def read_word_list(path: str | Path) -> list[str]:
    """One word per line (UTF-8; blank lines are read as empty words and skipped when extending).

    Raises:
        InputError: naming the file and line of text that is not UTF-8.
    """
    words = []
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                words.append(raw.decode("utf-8").rstrip("\r\n"))
            except UnicodeDecodeError as err:
                raise InputError(f"{path}:{line_no}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return words


def run_encoder(run: TrainedRun, spec: Optional[str] = None) -> TextEncoder:
    """The encoder that places new words in `run`: the run's own for an embedding started from encoder
    vectors (refusing another `spec`, or a changed version), else `spec` (default: the bundled one).

    Raises:
        InputError: the encoder is not the one the run's vectors came from.
    """
    model = run.config.model
    if not model.uses_vectors:
        return encoder_from_spec(spec or "use")
    if spec and spec != model.text_encoder:
        raise InputError(f"{run.run.path}: its embedding started from {model.text_encoder!r} vectors; new words must "
                         f"be placed by the same encoder. Received: {spec!r}")
    encoder = encoder_from_spec(model.text_encoder)
    recorded = run.run.load_text_encoder()
    if recorded != encoder.key:
        raise InputError(f"{run.run.path}: its vectors came from {recorded}, the encoder now is {encoder.key} (another "
                         f"version puts words in another space): install the run's version or retrain")
    return encoder


def extend_run(run: TrainedRun, words: Sequence[str], encoder_spec: Optional[str] = None,
               neighbours: int = NEIGHBOURS, cache: Optional[VectorCache] = None) -> Extension:
    """`run` with `words` added to each vocabulary its model embeds, placed by their encoder vectors.

    Raises:
        InputError: the model has no tag or word embedding, or see `run_encoder`.
    """
    if not run.preprocessor.uses_tags:
        raise InputError(f"{run.run.path}: an {run.config.model.model}-only model reads no tags to extend")
    encoder = run_encoder(run, encoder_spec)
    vocabularies = embedded_vocabularies(run.preprocessor)
    candidates, skipped = _clean_words(words, any(v.lowercase for v in vocabularies.values()))
    known = {prefix: set(vocab.tokens) for prefix, vocab in vocabularies.items()}
    new_words = [w for w in candidates if not all(w in tokens for tokens in known.values())]
    encoded = encode_words(encoder, new_words, progress=False)
    skipped.update(encoded.skipped)
    usable = {w: v for w, v in zip(new_words, encoded.vectors) if w not in encoded.skipped}
    head = _head(run)
    tables, vocabs, extension = {}, {}, Extension(run, skipped=skipped, encoder=encoder.key, neighbours=neighbours)
    for prefix, vocab in vocabularies.items():
        added = [w for w in usable if w not in known[prefix]]
        trained = head.get_layer(f"{prefix}_embedding").get_weights()[0]
        rows = (place_words(np.stack([usable[w] for w in added]), vocabulary_rows(encoder, vocab, cache, False),
                            trained, run.config.model.uses_vectors, neighbours) if added else trained[:0])
        tables[prefix], vocabs[prefix] = np.concatenate([trained, rows]), _extended(vocab, added)
        extension.added[prefix] = added
        extension.known[prefix] = sum(w in known[prefix] for w in candidates)
    extension.run = _rebuilt(run, head, vocabs, tables)
    return extension


def _clean_words(words: Sequence[str], lowercase: bool) -> tuple[list, dict]:
    """Words as the tag cleaning leaves them (unique, in order), and `{word: reason}` for the others."""
    kept, skipped = [], {}
    for word in words:
        reason = text_problem(word)
        cleaned = clean_tags([word], lowercase) if reason is None else []
        if reason is None and not cleaned:
            reason = "digits_only"
        if reason:
            skipped[word] = reason
        elif cleaned[0] not in kept:
            kept.append(cleaned[0])
    return kept, skipped


def _extended(vocab: Vocabulary, added: list) -> Vocabulary:
    """The vocabulary with `added` after its tokens (count 0); forms that read an added word as
    out-of-vocabulary now read it as itself."""
    new = set(added)
    forms = {key: (key[1] if form == "" and key[1] in new else form) for key, form in vocab.forms.items()}
    return dataclasses.replace(vocab, tokens=vocab.tokens + added, counts=vocab.counts + [0] * len(added), forms=forms)


def _head(run: TrainedRun):
    """The run's head model (nested in the pixels-in model of an image model)."""
    name = f"{run.config.model.model}_head"
    return run.model if run.model.name == name else run.model.get_layer(name)


def _rebuilt(run: TrainedRun, head, vocabs: dict, tables: dict) -> TrainedRun:
    """A copy of `run` whose preprocessor and model take the extended vocabularies."""
    old = run.preprocessor
    tag_vocab = vocabs.get("tag")
    text_vocab = vocabs.get("text") or (tag_vocab if old.shared_text else None)
    tags = TagLookup(tag_vocab) if old.tags is not None else None
    text = TagLookup(dataclasses.replace(text_vocab, limit=old.text.limit)) if old.uses_text else None
    preprocessor = ContextualPreprocessor(tags, old.image_size, old.image_presence, text, old.text_branch)
    new_head = build_head(run.config.model, len(run.classes), preprocessor, seed=run.config.train.seed,
                          word_vectors=tables)
    for layer in new_head.layers:
        if layer.weights and layer.name not in {f"{p}_embedding" for p in tables}:
            # A table with a row per word (the wide tag path) gets zero rows for the added words: a
            # word added after training carries no learned evidence of its own there.
            layer.set_weights([np.concatenate([old, np.zeros((new.shape[0] - old.shape[0], *old.shape[1:]), old.dtype)])
                               if old.shape != new.shape else old
                               for old, new in zip(head.get_layer(layer.name).get_weights(), layer.get_weights())])
    backbone = run.model.get_layer(BACKBONE) if head is not run.model else None
    extended = copy.copy(run)
    extended.preprocessor, extended.model = preprocessor, attach_backbone(new_head, backbone)
    return extended
