"""A collection (manifest, NUS-WIDE, COCO) -> a normal dataset folder, streaming.

Two passes over the source: the first checks every row (ids, labels) and counts each split's
photos; the second builds each record (tags, text, labels, the checked image) and writes it to its
split's shards, in source order. Memory holds the id ledger (20 bytes a photo) and the train
split's tag counts.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Protocol

from app.config import PrepareConfig
from app.downloader import images as image_checks
from app.records import schema
from app.badrows import BadRows
from app.sources.classes import ClassList
from app.records.ledger import IdLedger
from app.sources.photo import ALL_SPLITS, UNLABELLED, CollectionPhoto, HashSplit
from app.downloader.reader import download_key, is_url
from app.records.dataset import DatasetWriter
from app.sources.hierarchy import Hierarchy
from app.records.image_folder import ImageFolder
from app.records.join import _Tally as _JoinTally  # one owner of the per-split counts
from app.records.join import photo_tags
from app.downloader.manifest import manifest_files, relative_path
from app.records.schema import iter_language_tags
from app.text.stemming import build_normalized_vocabulary
from app.text.tags import vocabulary_from_counts

log = logging.getLogger(__name__)


class PhotoSource(Protocol):
    """A collection reader: `photos(bad)` streams one pass over its photos."""

    def photos(self, bad: BadRows) -> Iterator[CollectionPhoto]: ...


@dataclass(frozen=True)
class Collection:
    """What a collection dataset is made from.

    Args:
        kind: `manifest`, `nuswide` or `coco` (recorded in stats.json).
        source: the reader.
        classes: the class list, in output order.
        tree: the hierarchy (Open Images JSON form, class ids).
        labels: `exhaustive` or `partial`.
        images: the images folder, or None.
        split: the hash split for photos without one.
        made_from: the input files, for stats.json.
    """

    kind: str
    source: PhotoSource
    classes: ClassList
    tree: dict
    labels: str = "exhaustive"
    images: Optional[Path] = None
    split: HashSplit = HashSplit()
    made_from: tuple = ()


def scan(collection: Collection) -> dict:
    """The first pass: checks ids and labels (the readers raise on a bad row) and counts each split."""
    ledger, sizes = IdLedger(), collections.Counter()
    for photo in collection.source.photos(BadRows()):
        split = photo.split or collection.split(photo.image_id)
        ledger.add(photo.image_id, photo.where, split)
        sizes[split] += 1

    def id_at(path: str, line: int) -> str:
        return next(p.image_id for p in collection.source.photos(BadRows()) if p.where == f"{path}:{line}")

    ledger.check(id_at)
    return {split: sizes[split] for split in ALL_SPLITS}


def photo_labels(photo: CollectionPhoto, hierarchy: Hierarchy, classes: ClassList, labels: str,
                 split: str) -> dict:
    """The record's label lists: positives (expanded to ancestors) are the targets; `exhaustive`:
    every other class a verified negative; `partial`: the negatives column (expanded to descendants).
    An unlabelled photo (split `unlabelled`, the dataset's `yfcc` split) keeps its positives as weak
    targets, with nothing verified."""
    given = [(classes.ids[i], 1) for i in photo.labels] + [(classes.ids[i], 0) for i in photo.negatives or ()]
    expanded = hierarchy.expand(given)
    index = classes.index
    positive = sorted(index[c] for c, v in expanded.items() if v == 1)
    if split == UNLABELLED:
        return {"label_ids": positive, "label_targets": [1.0] * len(positive), "verified_pos": [],
                "verified_neg": []}
    if labels == "exhaustive":
        kept = set(positive)
        negative = [i for i in range(len(classes)) if i not in kept]
    else:
        negative = sorted(index[c] for c, v in expanded.items() if v == 0)
    return {"label_ids": positive, "label_targets": [1.0] * len(positive), "verified_pos": positive,
            "verified_neg": negative}


class CollectionImages:
    """Where a collection's photos are: paths under `folder`, and URL photos that `download.py
    --manifest` stored there (found by `urls.download_key` in its download manifest).

    Args:
        folder: the images folder, or None (every photo goes without an image).
    """

    def __init__(self, folder: Optional[Path]):
        self.folder = Path(folder) if folder is not None else None
        self._entries: Optional[dict] = None

    def _downloaded(self) -> dict:
        if self._entries is None:
            self._entries = ImageFolder(self.folder, BadRows()).entries if manifest_files(self.folder) else {}
        return self._entries

    def _relative(self, photo: CollectionPhoto) -> tuple[Optional[str], str]:
        """`(path under the folder, "")`, or `(None, why there is none)`."""
        if not photo.image:
            return None, "no_image"
        if self.folder is None:
            return None, "no_images_folder"
        if not is_url(photo.image):
            return photo.image.replace("\\", "/"), ""
        found = self._downloaded().get(download_key(photo.image_id))
        if found is None or found.reason:
            return None, f"download_{found.reason}" if found else "not_downloaded"
        return found.path or relative_path(download_key(photo.image_id)), ""

    def load(self, photo: CollectionPhoto, bad: BadRows, without: BadRows) -> bytes:
        """The photo's checked image bytes, or b"" (counted in `without` by reason; a broken file also in `bad`)."""
        path, line = photo.where.rsplit(":", 1)
        relative, why = self._relative(photo)
        if relative is None:
            without.add(why, path, int(line), f"{photo.image_id}: {photo.image}" if photo.image else photo.image_id)
            return b""
        file = (self.folder / relative).resolve()
        if not file.is_relative_to(self.folder.resolve()):
            bad.add("image_outside_folder", path, int(line), photo.image)
            without.add("image_outside_folder", path, int(line), photo.image)
            return b""
        try:
            data = file.read_bytes()
            image_checks.verify_image(data)
            return data
        except FileNotFoundError:  # a dead link (NUS-WIDE has many): counted, the photo kept without an image
            without.add("image_missing", path, int(line), f"{photo.image_id}: {file}")
            return b""
        except OSError as err:
            reason, detail = "image_unreadable", f"{file}: {err.strerror}"
        except image_checks.BadImage as err:
            reason, detail = f"image_{err.reason}", f"{file}: {err.detail}"
        bad.add(reason, path, int(line), f"{photo.image_id}: {detail}")
        without.add(reason, path, int(line), f"{photo.image_id}: {detail}")
        return b""


class _Tally(_JoinTally):
    """The Open Images path's counts (per split, languages, train tag counts), plus photos with text."""

    def add(self, split: str, record: schema.PhotoRecord) -> None:
        super().add(split, record)
        self.counts[split]["with_text"] += bool(record.text)


def prepare_collection_dataset(args, config: PrepareConfig) -> dict:
    """`prepare.py`'s collection run: the collection its flags name (`cli.open_collection`; a demo
    world is written into the new folder first) as a new dataset folder, swapped in when complete.

    Returns:
        The stats, plus the dataset's `fingerprint`.
    """
    from app.records.collection_flags import open_collection

    with DatasetWriter(args.out) as writer:
        stats = prepare_collection(open_collection(args, writer.path / "raw"), writer, config)
        return {**stats, "fingerprint": writer.commit()}


def prepare_collection(collection: Collection, writer: DatasetWriter, config: PrepareConfig) -> dict:
    """Writes a collection's shards and metadata into the writer's folder (the caller commits).

    Returns:
        The stats (also written to stats.json).
    """
    sizes = scan(collection)
    bad, without = BadRows(), BadRows()
    hierarchy = Hierarchy(collection.tree, collection.classes.ids)
    shards = {split: schema.ShardWriter(writer.path, split, schema.shard_count(
        sizes[split], config.records_per_shard, config.min_shards), total=sizes[split]) for split in ALL_SPLITS}
    tally, images = _Tally(config.tag_limit), CollectionImages(collection.images)
    try:
        for photo in collection.source.photos(bad):
            split = photo.split or collection.split(photo.image_id)
            tags, language = photo_tags(photo.tags, config.lowercase)
            record = schema.PhotoRecord(
                photo.image_id, photo.flickr_id, tags, language, "own" if tags else "none",
                **photo_labels(photo, hierarchy, collection.classes, collection.labels, split),
                image=images.load(photo, bad, without), text=photo.text)
            shards[split].write(record)
            tally.add(split, record)
        for shard_writer in shards.values():
            writer.add_shards(shard_writer.close())
    except BaseException:
        for shard_writer in shards.values():
            shard_writer.abort()
        raise
    vocab = _vocabulary(tally, writer, config)
    writer.write_metadata(collection.classes.pairs(), json.dumps(collection.tree, ensure_ascii=False, indent=1), vocab)
    stats = {"splits": {split: dict(tally.counts[split]) for split in ALL_SPLITS}, "bad_rows": bad.to_dict(),
             "languages": dict(tally.languages.most_common()), "config": dataclasses.asdict(config),
             "vocabulary_size": vocab.size, "image_folder": {"without_image": without.to_dict()},
             "collection": {"kind": collection.kind, "labels": collection.labels, "classes": len(collection.classes),
                            "made_from": [str(p) for p in collection.made_from],
                            "hash_split": dataclasses.asdict(collection.split)}}
    stats = _final_paths(stats, writer)
    writer.write_stats(stats)
    log.info("%s", bad.report())
    return stats


def _final_paths(stats: dict, writer: DatasetWriter) -> dict:
    """`stats` with paths inside the writer's temporary folder (a demo world's files) as they will be
    once the folder is swapped into place."""
    temporary, final = (json.dumps(str(p))[1:-1] for p in (writer.path, writer.target))
    return json.loads(json.dumps(stats).replace(temporary, final))


def _vocabulary(tally: _Tally, writer: DatasetWriter, config: PrepareConfig):
    if config.tag_normalization == "none":
        return vocabulary_from_counts(tally.tag_counts, config.tag_limit, config.tag_threshold, config.lowercase)
    train = sorted(writer.path / name for name in writer.shards if name.startswith("train-"))
    return build_normalized_vocabulary(iter_language_tags(train), config.tag_limit, config.tag_threshold,
                                       config.lowercase, config.tag_normalization)
