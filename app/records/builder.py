"""The dataset builder: any `Source` (`app.sources.base`) -> a dataset folder, streaming.

The source is opened first: the Open Images ⋈ YFCC100M join reads its inputs into buckets there and
counts its splits itself. Other sources are read once to count their splits, every id checked
(`IdLedger`: no id twice, none in two splits). Then each photo becomes a record (`build_record`:
tags cleaned, labels expanded, the checked image) and goes to its split's shards, in the source's
order. Memory holds the id ledger (20 bytes a photo) or one bucket of the join, and the train
split's tag counts for the vocabulary.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import json
import logging
import shutil
from pathlib import Path
from typing import Callable, Optional

from app.badrows import BadRows
from app.config import PrepareConfig
from app.errors import InputError
from app.records import schema
from app.records.dataset import JOIN_TEMP, DatasetWriter
from app.records.ledger import IdLedger, ImageLedger
from app.records.schema import iter_language_tags
from app.sources.base import Collection, ImageLoader, Source
from app.sources.classes import ClassList
from app.sources.hierarchy import Hierarchy
from app.sources.oid_yfcc import OidYfcc, OidYfccFiles
from app.sources.photo import ALL_SPLITS, UNLABELLED, CollectionPhoto
from app.text.language import detect_language
from app.text.stemming import build_normalized_vocabulary
from app.text.tags import clean_tags, vocabulary_from_counts, warn_on_vocabulary

log = logging.getLogger(__name__)


def prepare_dataset(source: Source | OidYfccFiles | Callable[[Path], Source | OidYfccFiles], out_dir: str | Path,
                    config: PrepareConfig, progress: bool = True) -> dict:
    """Builds a new dataset folder from a source, swapped into place when complete.

    Args:
        source: a `Source`, the Open Images + YFCC100M files, or a function that finds (or writes)
            either, given the new folder's temporary path (a demo world writes its raw files there).
        out_dir: the dataset folder.
        config: vocabulary, shard layout, targets, the `yfcc` split's size, buckets.
        progress: show progress bars.

    Returns:
        The stats (also in `stats.json`), plus the dataset's `fingerprint`.
    """
    with DatasetWriter(out_dir) as writer:
        found = source(writer.path) if callable(source) else source
        if isinstance(found, OidYfccFiles):
            found = OidYfcc(found, config)
        stats = build(found, writer, config, progress)
        return {**stats, "fingerprint": writer.commit()}


def build(source: Source, writer: DatasetWriter, config: PrepareConfig, progress: bool = True) -> dict:
    """Writes a source's shards and metadata into the writer's folder (the caller commits).

    Returns:
        The stats (also written to stats.json).
    """
    bad = BadRows()
    try:
        sizes = source.open(writer.path / JOIN_TEMP, bad, progress) or count_splits(source)
        images = source.image_loader()
        tally = write_splits(source, sizes, images, writer, config, bad)
    finally:
        source.close()
        shutil.rmtree(writer.path / JOIN_TEMP, ignore_errors=True)
    own = source.finish(tally.counts, bad)
    vocab = vocabulary(tally, writer, config)
    warn_on_vocabulary(tally.tag_counts, vocab, bad)
    writer.write_metadata(source.classes.pairs(), source.hierarchy_json(), vocab)
    stats = {"splits": {split: dict(tally.counts[split]) for split in ALL_SPLITS}, "bad_rows": bad.to_dict(),
             "languages": dict(tally.languages.most_common()), "config": dataclasses.asdict(config),
             "vocabulary_size": vocab.size, "image_folder": images.stats() if images else None, **own}
    stats = _final_paths(stats, writer)
    writer.write_stats(stats)
    log.info("%s", bad.report())
    return stats


def count_splits(source: Source) -> dict:
    """A first pass: checks every id (the readers raise on a bad row) and counts each split's photos.

    Raises:
        InputError: a repeated id, an id in two splits, or no photo at all.
    """
    ledger, sizes = IdLedger(), collections.Counter()
    for photo in source.photos(BadRows()):
        ledger.add(photo.image_id, photo.where, photo.split)
        sizes[photo.split] += 1
    if not sizes:
        raise InputError(f"{source.name()}: no photos (only a header, or empty image lists): nothing to prepare")
    ledger.check(functools.partial(_id_at, source))
    return {split: sizes[split] for split in ALL_SPLITS}


def _id_at(source: Source, path: str, line: int) -> str:
    """The id of the photo at `path:line` (read back from the source: only for messages)."""
    return next(p.image_id for p in source.photos(BadRows()) if p.where == f"{path}:{line}")


def write_splits(source: Source, sizes: dict, images: Optional[ImageLoader], writer: DatasetWriter,
                 config: PrepareConfig, bad: BadRows) -> "Tally":
    """Builds and writes every photo's record to its split's shards, in the source's order."""
    shards = {split: schema.ShardWriter(writer.path, split, schema.shard_count(
        sizes[split], config.records_per_shard, config.min_shards), total=sizes[split]) for split in ALL_SPLITS}
    tally = Tally(config.tag_limit, source.has_text)
    contents = ImageLedger() if isinstance(source, Collection) else None  # Open Images may repeat an image
    try:
        photos = source.photos(bad)
        if images is None:
            loaded = itertools.repeat(b"")
        else:
            photos, ahead = itertools.tee(photos)  # tee holds only the loader's look-ahead
            loaded = images.iter_load(ahead, bad)
        for photo, image in zip(photos, loaded):
            record = build_record(photo, source, config, image)
            shards[photo.split].write(record)
            tally.add(photo.split, record)
            if contents is not None:
                contents.add(record.image, photo.where, photo.split)
        for shard_writer in shards.values():
            writer.add_shards(shard_writer.close())
    except BaseException:
        for shard_writer in shards.values():
            shard_writer.abort()
        raise
    if contents is not None:
        contents.check(functools.partial(_id_at, source), bad)
    return tally


def build_record(photo: CollectionPhoto, source: Source, config: PrepareConfig,
                 image: bytes = b"") -> schema.PhotoRecord:
    """Turns one photo into its record (a pure function): tags cleaned (and their language), labels
    expanded (`photo_labels`), machine labels and autotags as given."""
    tags = clean_tags(photo.tags, config.lowercase)
    labels = photo_labels(photo, source.classes, source.hierarchy, source.labels == "exhaustive",
                          config.expand_machine_labels)
    machine, autotags = sorted(photo.scores), sorted(photo.autotags)
    return schema.PhotoRecord(photo.image_id, photo.flickr_id, tags, detect_language(tags),
                              photo.tag_source or ("own" if tags else "none"), **labels, machine_ids=machine,
                              machine_scores=[float(photo.scores[i]) for i in machine], autotag_ids=autotags,
                              autotag_scores=[photo.autotags[i] for i in autotags], image=image, text=photo.text)


def photo_labels(photo: CollectionPhoto, classes: ClassList, hierarchy: Hierarchy, exhaustive: bool,
                 expand_scores: bool) -> dict:
    """The record's label lists, by the challenge convention (`Hierarchy.expand`).

    A labelled photo: its labels (copied to ancestors) are verified positives; its negatives (copied
    to descendants), or with `exhaustive` labels every other class, verified negatives. Its targets
    are the verified labels and, elsewhere, its machine scores (copied to ancestors, keeping the
    maximum, with `expand_scores`). An unlabelled photo (split `UNLABELLED`) has nothing verified:
    its targets are its labels and its autotag scores (copied to ancestors).
    """
    given = [(classes.ids[i], 1) for i in photo.labels] + [(classes.ids[i], 0) for i in photo.negatives or ()]
    verified = {classes.index[c]: v for c, v in hierarchy.expand(given).items()} if given else {}
    positive = sorted(i for i, v in verified.items() if v)
    if photo.split == UNLABELLED:
        weak, positive_out, negative = hierarchy.expand_scores(_by_id(photo.autotags, classes)), [], []
    else:
        weak = _by_id(photo.scores, classes)
        weak = hierarchy.expand_scores(weak) if expand_scores else weak
        positive_out = positive
        negative = sorted(set(range(len(classes))) - set(positive) if exhaustive else
                          (i for i, v in verified.items() if not v))
    targets = {classes.index[c]: float(s) for c, s in weak.items()}
    targets.update({i: float(v) for i, v in verified.items()})
    ids = sorted(i for i, t in targets.items() if t > 0)
    return {"label_ids": ids, "label_targets": [targets[i] for i in ids], "verified_pos": positive_out,
            "verified_neg": negative}


def _by_id(scores: dict, classes: ClassList) -> dict:
    """`{class id: score}` of `{class index: score}`."""
    return {classes.ids[i]: s for i, s in scores.items()}


class Tally:
    """Counts per split, tag languages (labelled splits) and the train split's tag counts.

    Args:
        tag_limit: the tags of a photo that count for the vocabulary.
        text: count photos with text (`with_text`).
    """

    def __init__(self, tag_limit: int, text: bool):
        self.counts = {split: collections.Counter(images=0) for split in ALL_SPLITS}
        self.languages: collections.Counter = collections.Counter()
        self.tag_counts: collections.Counter = collections.Counter()
        self.tag_limit, self.text = tag_limit, text

    def add(self, split: str, record: schema.PhotoRecord) -> None:
        counts = self.counts[split]
        counts["images"] += 1
        counts[f"tags_from_{record.tag_source}"] += 1
        counts["with_tags"] += bool(record.tags)
        counts["with_image"] += bool(record.image)
        counts["without_image"] += not record.image
        counts["with_verified_labels"] += bool(record.verified_pos or record.verified_neg)
        counts["with_targets"] += bool(record.label_ids)
        counts["tags_kept"] += len(record.tags)
        if self.text:
            counts["with_text"] += bool(record.text)
        if split != UNLABELLED:
            self.languages[record.language] += 1
        if split == "train":
            self.tag_counts.update(record.tags[: self.tag_limit])


def vocabulary(tally: Tally, writer: DatasetWriter, config: PrepareConfig):
    """The train split's vocabulary: from the tag counts, or (normalised forms need each photo's
    language) from one more pass over the train shards just written."""
    if config.tag_normalization == "none":
        return vocabulary_from_counts(tally.tag_counts, config.tag_limit, config.tag_threshold, config.lowercase)
    train = sorted(writer.path / name for name in writer.shards if name.startswith("train-"))
    return build_normalized_vocabulary(iter_language_tags(train), config.tag_limit, config.tag_threshold,
                                       config.lowercase, config.tag_normalization)


def _final_paths(stats: dict, writer: DatasetWriter) -> dict:
    """`stats` with paths inside the writer's temporary folder (a demo world's files) as they will be
    once the folder is swapped into place."""
    temporary, final = (json.dumps(str(p))[1:-1] for p in (writer.path, writer.target))
    return json.loads(json.dumps(stats).replace(temporary, final))
