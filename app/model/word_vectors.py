"""Text-encoder vectors in the model: the embedding's starting rows, and new words placed in a trained one.

    vocabulary tokens ─ VectorCache (encoded once, by content hash) ─▶ rows [vocab size, encoder dim]
        (id 0 padding, id 1 out-of-vocabulary and words the encoder could not take: zeros)

Starting rows (`starting_vectors`): with `word_vectors` frozen or fine-tuned, the tag (and caption
word) embedding starts from these rows (`app.model.classifier.build_head` projects them to
`embedding_dim`); they are computed before the model is built, never in a training step.

Placing new words (`place_words`, after Ni et al.'s snapping of out-of-vocabulary words into the
trained space, Lab41 attalos): a new word's row is its encoder vector plus the drift training gave its
nearest vocabulary words (frozen: no drift, so exactly its encoder vector; fine-tuned: the drift of
its neighbours), or, for an embedding learned from scratch (no encoder rows), the weighted mean of its
nearest vocabulary words' trained rows (with one neighbour: the nearest word's row, a snap).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from app.config import ModelConfig
from app.errors import InputError
from app.text.encoders import TextEncoder, VectorCache, encoder_from_spec
from app.text.tags import Vocabulary

NEIGHBOURS = 1  # words a new word's row is drawn from (see place_words)


def vocabulary_rows(encoder: TextEncoder, vocab: Vocabulary, cache: Optional[VectorCache] = None,
                    progress: bool = True) -> np.ndarray:
    """`[vocab.size, encoder.dim]` rows in id order: zeros for padding, out-of-vocabulary and skipped words."""
    vectors = (cache or VectorCache()).vectors(encoder, vocab.tokens, progress)
    return np.concatenate([np.zeros((2, encoder.dim), np.float32), vectors.vectors])


def embedded_vocabularies(preprocessor) -> dict:
    """`{embedding prefix: Vocabulary}`: `tag` (tags, or the one shared vocabulary) and `text` (a separate
    caption-word vocabulary), as `build_head` names the embeddings."""
    out = {}
    if preprocessor.tags is not None or preprocessor.shared_text:
        out["tag"] = (preprocessor.tags or preprocessor.text).vocab
    if preprocessor.uses_text and not preprocessor.shared_text:
        out["text"] = preprocessor.text.vocab
    return out


def starting_vectors(config: ModelConfig, preprocessor, cache: Optional[VectorCache] = None,
                     progress: bool = True) -> dict:
    """`{prefix: rows}` the embeddings start from (`{}` for `word_vectors` scratch)."""
    if not config.uses_vectors:
        return {}
    encoder = encoder_from_spec(config.text_encoder)
    return {prefix: vocabulary_rows(encoder, vocab, cache, progress)
            for prefix, vocab in embedded_vocabularies(preprocessor).items()}


def place_words(new: np.ndarray, vocab: np.ndarray, trained: np.ndarray, from_encoder: bool,
                neighbours: int = NEIGHBOURS) -> np.ndarray:
    """Rows of new words in a trained embedding.

    Args:
        new: `[m, d]` the new words' unit encoder vectors.
        vocab: `[V, d]` the vocabulary's encoder rows (`vocabulary_rows`; zero rows are never neighbours).
        trained: `[V, e]` the trained embedding.
        from_encoder: the embedding started from `vocab` (frozen or fine-tuned, `e == d`); otherwise it
            was learned from scratch.
        neighbours: how many nearest vocabulary words (by cosine) to draw from, weighted by cosine.

    Returns:
        `[m, e]`: `new + Σ w (trained - vocab)` over the neighbours when `from_encoder`, else `Σ w trained`.
    """
    usable = np.flatnonzero(np.abs(vocab).sum(axis=1) > 0)
    if len(usable) == 0:
        raise InputError("no vocabulary word has an encoder vector: new words have nothing to be placed by")
    k = min(neighbours, len(usable))
    similarity = new @ vocab[usable].T
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    weights = np.maximum(np.take_along_axis(similarity, nearest, axis=1), 1e-6)
    weights /= weights.sum(axis=1, keepdims=True)
    rows = usable[nearest]  # [m, k] ids
    drift = trained[rows] - (vocab[rows] if from_encoder else 0.0)
    placed = np.einsum("mk,mke->me", weights, drift)
    return (new + placed if from_encoder else placed).astype(np.float32)
