"""Text search over a prepared dataset's photos: build (or extend) an index, answer queries.

An index records its fingerprint: the photo vectors' source (`tags-mean`, or a run's identity), the
dataset's fingerprint and split, and the text encoder (`name@version`). Extending an existing index
takes the same source and encoder, and adds only the photos it does not hold yet (no rebuild).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.badrows import BadRows
from app.config import SearchConfig
from app.records.dataset import DatasetInfo
from app.retrieval.photo_vectors import model_photo_vectors, tag_photo_vectors
from app.retrieval.query import check_query
from app.retrieval.text_encoder import encoder_id
from app.retrieval.vector_index import VectorIndex, is_complete_index

log = logging.getLogger("app")
TAGS_SOURCE = "tags-mean"


@dataclass
class BuildReport:
    """What an index build did: photos added, already present, and skipped (counted)."""

    added: int = 0
    already_present: int = 0
    size: int = 0
    kind: str = ""
    bad: BadRows = field(default_factory=BadRows)


def source_fingerprint(run, encoder, head=None) -> dict:
    """The part of the fingerprint an index must share to be extended or queried: vectors' source (the run
    and its embedding head, or mean tag vectors), encoder."""
    source = TAGS_SOURCE if run is None else f"{run.run.identity()}, head {head_identity(head)}"
    return {"vectors": source, "encoder": encoder_id(encoder)}


def head_identity(head) -> str:
    """A short hash of an embedding head's record (its run, encoder, calibration, training history)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(head.record, sort_keys=True).encode()).hexdigest()[:12]


def build_index(out: Path, info: DatasetInfo, split: str, encoder, run=None, head=None, spec: str = "use",
                settings: SearchConfig = SearchConfig()) -> BuildReport:
    """Indexes a split's photos into `out`, or adds its new photos to the index already there (`run` and
    its embedding `head`, or None for mean tag vectors; `encoder`: the text encoder that `spec` names).

    Raises:
        SearchIndexError: the index at `out` was built from another source or encoder (without `rebuild`).
    """
    fingerprint = {**source_fingerprint(run, encoder, head), "dataset": info.fingerprint, "split": split,
                   "encoder_spec": spec}
    report = BuildReport()
    if is_complete_index(out) and not settings.rebuild:
        index = VectorIndex.load(out)
        index.require(source_fingerprint(run, encoder, head), str(out))
        index.fingerprint.update(fingerprint)
    else:
        expected = info.split_sizes.get(split, 0)
        kind = VectorIndex.choose_kind(settings.kind, expected, settings.exact_limit)
        index = VectorIndex(encoder.dim, kind, fingerprint)
    present = set(index.ids)
    batches = (tag_photo_vectors(info, split, encoder, report.bad) if run is None
               else model_photo_vectors(run, head, info, split))
    for ids, vectors in batches:
        new = np.array([i not in present for i in ids], bool)
        report.already_present += int((~new).sum())
        fresh = [i for i, keep in zip(ids, new) if keep]
        index.add(fresh, vectors[new])
        present.update(fresh)
        report.added += len(fresh)
    index.save(out)
    report.size, report.kind = len(index), index.kind
    return report


def search(index: VectorIndex, queries: list, encoder, k: int = 10) -> list[dict]:
    """Answers text queries: for each, `{"query", "results": [{"rank", "id", "score"}], "warnings"}`.

    Raises:
        InputError: an empty or oversized query.
        SearchIndexError: the index was built with another encoder.
    """
    index.require({"encoder": encoder_id(encoder)}, "the index to search")
    warnings = [check_query(q) for q in queries]
    vectors = encoder.encode(list(queries))
    answers = []
    for query, warned, hits in zip(queries, warnings, index.search(vectors, k)):
        for warning in warned:
            log.warning(warning)
        answers.append({"query": query, "warnings": warned,
                        "results": [{"rank": r + 1, "id": i, "score": round(s, 6)} for r, (i, s) in enumerate(hits)]})
    return answers


def require_fingerprint(index: VectorIndex, where: str, run=None, head=None, encoder=None,
                        info: DatasetInfo | None = None) -> None:
    """Refuses an index made from another run (and head), encoder or dataset than the ones given (None: not
    checked)."""
    expected = {}
    if encoder is not None:
        expected = source_fingerprint(run, encoder, head) if run is not None else {"encoder": encoder_id(encoder)}
    if info is not None:
        expected["dataset"] = info.fingerprint
    index.require(expected, where)

