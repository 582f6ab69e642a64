"""What a search index was made from, and the refusal of an index made from something else.

An index's fingerprint (saved in its `index.json`):

    vectors       `tags-mean`: a photo's vector is the mean of its tags' text-encoder vectors; or
                  `embedding-head:IDENTITY`: a trained run's embedding head (`RunDir.identity`), with
                  `run`, the run folder
    encoder       the text encoder's name, version and dimension (`TextEncoder.key`)
    encoder_spec  the spec that loads that encoder again (`use`, `savedmodel:/abs/path`, `keras:/abs/path`)
    dataset       the dataset folder and its fingerprint when it was last indexed
    splits        the splits indexed

Photos are added only from the dataset an index was made from, grown or not: a dataset whose
fingerprint changed is that dataset grown when every photo the index holds is still in it, and
another dataset otherwise.
"""

from __future__ import annotations

from pathlib import Path

from app.records.dataset import DatasetInfo
from app.retrieval.photo_vectors import stream_split
from app.retrieval.vector_index import SearchIndexError
from app.text.encoders import TextEncoder

TAGS_MEAN = "tags-mean"
REBUILD = "--rebuild starts over (or choose another --out)"


def normal_spec(spec: str) -> str:
    """An encoder spec with its model path made absolute (the same model wherever the command runs)."""
    kind, sep, path = spec.partition(":")
    return f"{kind}:{Path(path).expanduser().resolve()}" if sep else spec


def index_fingerprint(info: DatasetInfo, splits: list[str], encoder: TextEncoder, spec: str,
                      vectors: str = TAGS_MEAN, run: str | None = None) -> dict:
    """The fingerprint of an index of `splits` of `info`'s photos, made with `encoder` (loaded from `spec`),
    its vectors from `vectors` (`TAGS_MEAN`, or `head_vectors(run identity)` with `run` the run folder)."""
    return {"vectors": vectors, "encoder": encoder.key, "encoder_spec": normal_spec(spec),
            "dataset": {"path": str(info.data_dir.resolve()), "fingerprint": info.fingerprint},
            "splits": sorted(splits), **({"run": run} if run else {})}


def head_vectors(identity: str) -> str:
    """The `vectors` of an index made by the embedding head of the run of this identity."""
    return f"embedding-head:{identity}"


def refuse_other_vectors(fingerprint: dict, vectors: str, where: str, remedy: str = REBUILD) -> None:
    """Refuses adding to an index whose vectors came from elsewhere (tag means against a run's head, or
    another state of the run).

    Raises:
        SearchIndexError: `WHERE: its vectors are A, these would be B: REMEDY`.
    """
    if fingerprint.get("vectors") != vectors:
        def show(source: str) -> str:
            return ("the mean of each photo's tag vectors" if source == TAGS_MEAN else
                    f"the embedding head of the run {fingerprint.get('run')} ({source.partition(':')[2]})"
                    if source == fingerprint.get("vectors") else f"an embedding head ({source.partition(':')[2]})")

        raise SearchIndexError(f"{where}: its vectors are {show(fingerprint.get('vectors'))}; these would be "
                               f"{show(vectors)}: {remedy}")


def refuse_other_spec(fingerprint: dict, spec: str, where: str, remedy: str = REBUILD) -> None:
    """Refuses, before any encoder is loaded, an index made with another encoder spec than `spec`.

    Raises:
        SearchIndexError: `WHERE: built with another text encoder (index: A; asked: B): REMEDY`.
    """
    if fingerprint.get("encoder_spec") != normal_spec(spec):
        raise SearchIndexError(f"{where}: built with another text encoder (index: {fingerprint.get('encoder_spec')}; "
                               f"asked: {normal_spec(spec)}): {remedy}")


def refuse_other_encoder(fingerprint: dict, encoder: TextEncoder, where: str, remedy: str = REBUILD) -> None:
    """Refuses an index whose vectors are not in `encoder`'s space (another model, version or dimension).

    Raises:
        SearchIndexError: `WHERE: built with another text encoder (index: A; now: B): REMEDY`.
    """
    if fingerprint.get("vectors") != TAGS_MEAN and not str(fingerprint.get("vectors")).startswith("embedding-head:"):
        raise SearchIndexError(f"{where}: its vectors are {fingerprint.get('vectors')!r}, which this version does not "
                               f"make: {remedy}")
    recorded = fingerprint.get("encoder", {})
    if recorded != encoder.key:
        def show(key: dict) -> str:
            return f"{key.get('encoder')} {key.get('version')}, {key.get('dim')} dimensions"

        raise SearchIndexError(f"{where}: built with another text encoder (index: {show(recorded)}; now: "
                               f"{show(encoder.key)}): {remedy}")


def refuse_other_dataset(fingerprint: dict, ids: list[str], info: DatasetInfo, where: str,
                         remedy: str = REBUILD) -> bool:
    """Refuses an index (`fingerprint`, holding `ids`) made from another dataset than `info`.

    Returns:
        Whether the dataset changed since it was indexed (grown: every indexed photo still in it).

    Raises:
        SearchIndexError: `WHERE: built from another dataset (N of its M photos are not in DATA): REMEDY`.
    """
    if fingerprint["dataset"]["fingerprint"] == info.fingerprint:
        return False
    missing = set(ids)
    for split in fingerprint["splits"]:
        if info.shards.get(split):
            for batch in stream_split(info, split, ["image_id"]):
                missing.difference_update(i.decode("utf-8") for i in batch["image_id"].numpy())
    if missing:
        example = sorted(missing)[0]
        raise SearchIndexError(f"{where}: built from another dataset ({fingerprint['dataset']['path']}): {len(missing)} "
                               f"of its {len(ids)} photos (e.g. {example!r}) are not in {info.data_dir}'s "
                               f"{', '.join(fingerprint['splits'])}: {remedy}")
    return True
