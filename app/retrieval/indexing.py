"""Building a search index of a dataset split's photos, or adding a grown dataset's new photos to one.

An index folder that holds an index is extended, not rebuilt: its vectors stay, and only the photos
whose ids it does not hold yet are read into vectors and added. Its text encoder, kind and search
settings stay too. It is refused when it was made with another text encoder or from another dataset
(`app.retrieval.fingerprint`), unless `rebuild` starts a new one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from app.badrows import BadRows
from app.config import SearchConfig
from app.errors import InputError
from app.fileio import folder_lock, remove_stale_folders
from app.records.dataset import DatasetInfo
from app.retrieval.fingerprint import (TAGS_MEAN, head_vectors, index_fingerprint, normal_spec, refuse_other_dataset,
                                       refuse_other_encoder, refuse_other_spec, refuse_other_vectors)
from app.retrieval.photo_vectors import TagVectors, head_photo_vectors, photo_tags
from app.retrieval.vector_index import VectorIndex, choose_kind, is_index
from app.text.encoders import DEFAULT_ENCODER, TextEncoder, encoder_from_spec

log = logging.getLogger("app")


@dataclass
class BuildReport:
    """What an `index` run did.

    Args:
        kind: the index's kind (`exact` or `hnsw`).
        size: photos in the index now.
        added: photos added by this run.
        already_indexed: photos of the split the index held already.
        skipped: photos of the split without a vector, counted by reason (`no_tags`, `no_tag_vector`).
        dataset_grew: the index was made from an earlier version of the dataset.
    """

    kind: str = ""
    size: int = 0
    added: int = 0
    already_indexed: int = 0
    skipped: BadRows = field(default_factory=BadRows)
    dataset_grew: bool = False


def build_index(out: str | Path, info: DatasetInfo, split: str, spec: Optional[str] = None,
                config: SearchConfig = SearchConfig(), rebuild: bool = False,
                model: Optional[str | Path] = None) -> BuildReport:
    """Indexes a split's photos into `out`, or adds the photos it does not hold yet to the index there.

    Args:
        out: the index folder.
        info: the dataset.
        split: the split to index (`train`, `validation`, `test`, `yfcc`).
        spec: the text encoder (`use`, `savedmodel:PATH`, `keras:PATH`); default: the index's own, or
            `use` for a new index.
        config: the index settings (a new index's kind and search settings; batch size, tag cache).
        rebuild: start a new index even if `out` holds one.
        model: a run folder with an embedding head: the photos' vectors are the head's (default: the mean of
            their tags' encoder vectors; an index made from a run keeps adding from it).

    Raises:
        SearchIndexError: the index at `out` was made with another text encoder or from another dataset.
        InputError: `out` holds something that is not an index, or another process is writing it.
    """
    out = Path(out)
    report = BuildReport()
    busy = lambda pid: InputError(f"{out}: another process (pid {pid}) is writing this index; wait for it")  # noqa: E731
    with folder_lock(out, busy):
        remove_stale_folders(out)
        index, encoder, head = _open_index(out, info, split, spec, config, rebuild, report, model)
        if head is None:
            _add_new_photos(index, info, split, encoder, config, report)
        else:
            _add_head_vectors(index, info, split, head, config, report)
        index.save(out)
    report.kind, report.size = index.kind, len(index)
    if index.kind == "exact" and len(index) > config.exact_limit:
        log.warning("%s: %d photos in an exact index, over --exact-limit %d: each query compares them all; "
                    "--rebuild makes a graph (hnsw) index", out, len(index), config.exact_limit)
    return report


def _open_index(out: Path, info: DatasetInfo, split: str, spec: Optional[str], config: SearchConfig, rebuild: bool,
                report: BuildReport, model: Optional[str | Path]) -> tuple[VectorIndex, TextEncoder, Optional[tuple]]:
    """The index to add to (the one at `out`, checked, or a new one), its text encoder, and the
    `(run, embedding head)` its vectors come from (None: tag means)."""
    splits = [split]
    if not is_index(out) and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: exists and is not a search index (no index.json), and it would be replaced whole; "
                         f"choose another --out, or remove it first")
    existing = VectorIndex.load(out) if is_index(out) and not rebuild else None
    model = model or (existing.fingerprint.get("run") if existing else None)
    head = _run_head(model, spec) if model else None
    if head is not None:
        spec = head[1].record["encoder_spec"]
    vectors = head_vectors(f"{head[0].run.identity()} head {head[1].identity}") if head else TAGS_MEAN
    if existing is not None:
        index = existing
        refuse_other_vectors(index.fingerprint, vectors, str(out))
        if spec is not None:
            refuse_other_spec(index.fingerprint, spec, str(out))
        spec = index.fingerprint["encoder_spec"]
        encoder = encoder_from_spec(spec)
        refuse_other_encoder(index.fingerprint, encoder, str(out))
        report.dataset_grew = refuse_other_dataset(index.fingerprint, index.ids, info, str(out))
        if config.index_kind not in ("auto", index.kind):
            log.warning("%s: an %s index keeps its kind when photos are added: --index-kind %s is not used "
                        "(--rebuild makes a new index)", out, index.kind, config.index_kind)
        splits += index.fingerprint["splits"]
    else:
        spec = spec or DEFAULT_ENCODER
        encoder = encoder_from_spec(spec)
        kind = choose_kind(config.index_kind, info.split_sizes.get(split, 0), config.exact_limit)
        index = VectorIndex(encoder.dim, kind, {}, config.ef_search)
    if head is not None and head[1].encoder != f"{encoder.name}@{encoder.version}":
        raise InputError(f"{model}: its embedding head was trained with the text encoder {head[1].encoder}; the one "
                         f"installed is {encoder.name}@{encoder.version}: train the head again")
    index.fingerprint = index_fingerprint(info, sorted(set(splits)), encoder, spec, vectors,
                                          str(Path(model).resolve()) if model else None)
    return index, encoder, head


def _run_head(model: str | Path, spec: Optional[str]) -> tuple:
    """`(TrainedRun, EmbeddingHead)` of a run folder (refused: no head, or `--text-encoder` beside it)."""
    from app.runs.embedding_head import EmbeddingHead
    from app.runs.trained import TrainedRun

    run = TrainedRun(model)
    head = EmbeddingHead.load(run.run, run.model)
    if spec is not None and normal_spec(spec) != normal_spec(head.record["encoder_spec"]):
        raise InputError(f"--text-encoder {spec}: the run's embedding head maps photos into the space of "
                         f"{head.record['encoder_spec']}; leave --text-encoder out with --model")
    return run, head


def _add_head_vectors(index: VectorIndex, info: DatasetInfo, split: str, head: tuple, config: SearchConfig,
                      report: BuildReport) -> None:
    """Streams the split through the run's embedding head and adds each photo the index does not hold yet."""
    present = set(index.ids)
    for ids, vectors in head_photo_vectors(*head, info, split, config.batch_size):
        new = [i for i, photo in enumerate(ids) if photo not in present]
        report.already_indexed += len(ids) - len(new)
        added = [ids[i] for i in new]
        index.add(added, vectors[new])
        present.update(added)
        report.added += len(added)


def _add_new_photos(index: VectorIndex, info: DatasetInfo, split: str, encoder: TextEncoder, config: SearchConfig,
                    report: BuildReport) -> None:
    """Streams the split and adds each photo the index does not hold yet (counting those without a vector)."""
    tag_vectors = TagVectors(encoder, config.tag_cache)
    present = set(index.ids)
    where, position = f"{info.data_dir}/{split}", 0
    for ids, rows in photo_tags(info, split, config.batch_size):
        new = [i for i, photo in enumerate(ids) if photo not in present]
        report.already_indexed += len(ids) - len(new)
        vectors, has = tag_vectors.mean_vectors([rows[i] for i in new])
        for reason, which in (("no_tags", [i for i, h in zip(new, has) if not h and not rows[i]]),
                              ("no_tag_vector", [i for i, h in zip(new, has) if not h and rows[i]])):
            report.skipped.skip_many(reason, where, [position + i for i in which], [ids[i] for i in which])
        added = [ids[i] for i, h in zip(new, has) if h]
        index.add(added, vectors[has])
        present.update(added)
        report.added += len(added)
        position += len(ids)
