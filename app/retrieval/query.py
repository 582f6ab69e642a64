"""Text queries: checked, encoded with the index's own text encoder, answered with the nearest photos.

A query is refused with a one-line error, before the index is read, when it is empty (or holds no
letter or digit), longer than the encoder takes (`MAX_TEXT_CHARS`) or not encodable. A query in a
script the encoder was not trained on is scored, with a warning in its answer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from app.errors import InputError
from app.records.dataset import DatasetInfo
from app.retrieval.fingerprint import refuse_other_dataset, refuse_other_encoder, refuse_other_spec
from app.retrieval.vector_index import VectorIndex
from app.text.encoders import MAX_TEXT_CHARS, TextEncoder, encoder_from_spec, text_problem
from app.text.encoders.base import describe_text

log = logging.getLogger("app")
RECHOOSE = "rebuild it (search.py index --rebuild), or choose another --index"


def refuse_bad_query(text: str) -> None:
    """Refuses a query that no encoder can score.

    Raises:
        InputError: `query: empty (...)`, `query: N characters, over the limit of 1,000 (...)`, or
            `query '...': cannot be encoded (reason)`.
    """
    reason = text_problem(text)
    if reason is None and not any(c.isalnum() for c in text):
        reason = "empty"
    if reason in ("empty", "invisible_only"):
        raise InputError(f"query: empty (received {describe_text(text)}): give some words to search for")
    if reason == "too_long":
        raise InputError(f"query: {len(text):,} characters, over the limit of {MAX_TEXT_CHARS:,} characters: give a "
                         f"shorter query")
    if reason:
        raise InputError(f"query {describe_text(text)}: cannot be encoded ({reason})")


def open_index(folder: str | Path, spec: Optional[str] = None,
               info: Optional[DatasetInfo] = None) -> tuple[VectorIndex, TextEncoder]:
    """An index to query, and the text encoder it was made with (loaded from the spec it records).

    Args:
        folder: the index folder.
        spec: refuse the index unless it was made with this encoder spec.
        info: refuse the index unless it was made from this dataset (or an earlier, smaller version of it).

    Raises:
        SearchIndexError: an incomplete or changed index folder, or one made from another encoder or dataset.
    """
    index, where = VectorIndex.load(folder), str(folder)
    if spec is not None:
        refuse_other_spec(index.fingerprint, spec, where, RECHOOSE)
    encoder = encoder_from_spec(index.fingerprint["encoder_spec"])
    refuse_other_encoder(index.fingerprint, encoder, where, RECHOOSE)
    if info is not None and refuse_other_dataset(index.fingerprint, index.ids, info, where, RECHOOSE):
        log.warning("%s: %s has changed since it was indexed: run search.py index again to add its new photos",
                    where, info.data_dir)
    return index, encoder


def answer_queries(index: VectorIndex, queries: list[str], encoder: TextEncoder, k: int = 10) -> list[dict]:
    """Each query's `k` nearest photos: `{"query", "results": [{"rank", "id", "score"}], "warnings"}`.

    `score` is the cosine between the query's vector and the photo's; `warnings` names a script the
    encoder was not trained on (the query is scored all the same).

    Raises:
        InputError: a query that `refuse_bad_query` refuses.
    """
    for query in queries:
        refuse_bad_query(query)
    answers = []
    for query, hits in zip(queries, index.search(encoder.encode(queries), k)):
        unknown = encoder.unknown_scripts(query)
        warnings = [f"query {describe_text(query)} is written in a script the text encoder was not trained on "
                    f"({', '.join(unknown).lower()}): scored, but the photos found may be unrelated"] if unknown else []
        if not len(index):
            warnings.append("the index holds no photos: nothing can be found")
        for warning in warnings:
            log.warning(warning)
        answers.append({"query": query,
                        "results": [{"rank": rank, "id": photo, "score": round(score, 6)}
                                    for rank, (photo, score) in enumerate(hits, 1)], "warnings": warnings})
    return answers
