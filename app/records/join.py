"""Joining Open Images with YFCC100M on the Flickr id, and turning the result into shards, streaming.

Every source is read once into on-disk buckets (`app.sources.partition`); then bucket by bucket, each
photo's rows are put together (`PhotoSources`), turned into a record by one pure function
(`build_record`) and written to its split's shards. Photos come out in the order of a hash of their
ImageID (`yfcc` photos: of their photo id), whatever the number of buckets, so the same inputs give
the same dataset. Memory holds one bucket, a few bytes of ids per photo, and the train split's tag
counts for the vocabulary.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from tqdm import tqdm

from app.config import PrepareConfig
from app.sources import oid
from app.records import schema
from app.sources import yfcc
from app.badrows import BadRows
from app.sources.buckets import BucketFiles, first_occurrences, mix64
from app.records.dataset import JOIN_TEMP, DatasetWriter
from app.sources.hierarchy import Hierarchy
from app.records.image_folder import ImageFolder, ManifestEntry
from app.text.language import detect_language
from app.sources.partition import TAG_SOURCES, Partitioned, partition
from app.records.schema import iter_language_tags
from app.sources.oid_yfcc import Sources
from app.text.stemming import build_normalized_vocabulary
from app.text.tags import clean_tags, vocabulary_from_counts
from app.sources.yfcc_split import SPLIT as YFCC_SPLIT
from app.sources.yfcc_split import yfcc_key

log = logging.getLogger(__name__)
prepare_log = logging.getLogger("prepare")  # the prepare step's own messages (app/prepare.py's logger)

SPLITS = (*oid.SPLITS, YFCC_SPLIT)
SELECTION_RULE = ("the photos of the YFCC100M file (not videos) outside the Open Images image lists with the "
                  "smallest mix64(photo id)")


@dataclass(frozen=True)
class RecordContext:
    """What turning any photo's sources into a record needs: the classes, their hierarchy, the
    autotag mapping and the options.

    Args:
        classes: `(mid, name)` in output order.
        hierarchy: the hierarchy restricted to the classes.
        autotag_mids: autotag concept -> MID of a class.
        lowercase: fold tags to lower case.
        expand_machine_labels: machine labels reach the classes' ancestors (maximum confidence).
    """

    classes: list
    hierarchy: Hierarchy
    autotag_mids: dict
    lowercase: bool = False
    expand_machine_labels: bool = True
    class_index: dict = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "class_index", {mid: i for i, (mid, _) in enumerate(self.classes)})

    @classmethod
    def load(cls, paths: oid.OidPaths, config: PrepareConfig) -> "RecordContext":
        """The context of a run: class list and hierarchy from its files, the shipped autotag mapping."""
        classes = oid.read_classes(paths.classes)
        hierarchy = Hierarchy.from_json(paths.hierarchy, [mid for mid, _ in classes])
        index = {mid for mid, _ in classes}
        mapping = {c: mid for c, mid in yfcc.load_autotag_mapping().items() if mid in index}
        return cls(classes, hierarchy, mapping, config.lowercase, config.expand_machine_labels)


@dataclass
class PhotoSources:
    """One photo's values from every source, before cleaning and expansion.

    Args:
        split: `train`, `validation`, `test` or `yfcc`.
        image_id: the ImageID, or `yfcc-<photo id>`.
        flickr_id: the Flickr photo id.
        md5: `OriginalMD5` (empty when there is none).
        tags: decoded user tags, as the user wrote them.
        tag_source: `yfcc`, `extra` or `none`.
        human: human-verified labels `(mid, 0|1)`, one per class.
        machine: machine labels `{mid: confidence}` of the classes.
        autotags: autotags `{concept: score}`.
    """

    split: str
    image_id: str
    flickr_id: int
    md5: str = ""
    tags: Sequence[str] = ()
    tag_source: str = "none"
    human: list = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    autotags: dict = field(default_factory=dict)


def photo_tags(raw: Sequence[str], lowercase: bool) -> tuple[list, str]:
    """A photo's cleaned tags and their language."""
    tags = clean_tags(raw, lowercase)
    return tags, detect_language(tags)


def build_record(photo: PhotoSources, context: RecordContext, image: bytes = b"") -> schema.PhotoRecord:
    """Turns one photo's sources into its record (a pure function).

    Open Images photos: training targets are the verified labels where present and the machine
    confidence elsewhere (expanded to ancestors, keeping the maximum, with
    `expand_machine_labels`). `yfcc` photos: the autotag-mapped classes expanded to ancestors
    (maximum confidence); they have no verified or machine labels.

    Args:
        photo: the photo's sources.
        context: classes, hierarchy, autotag mapping, options.
        image: the checked image bytes (empty without an image).
    """
    tags, language = photo_tags(photo.tags, context.lowercase)
    autotags = _autotag_scores(photo.autotags, context)
    if photo.split == YFCC_SPLIT:
        labels = _label_lists(context.hierarchy.expand_scores(autotags), {}, {}, context.class_index)
    else:
        machine = context.hierarchy.expand_scores(photo.machine) if context.expand_machine_labels else photo.machine
        labels = _label_lists(machine, context.hierarchy.expand(photo.human), photo.machine, context.class_index)
    ids = sorted(context.class_index[m] for m in autotags)
    scores = {context.class_index[m]: s for m, s in autotags.items()}
    return schema.PhotoRecord(photo.image_id, photo.flickr_id, tags, language, photo.tag_source, **labels,
                               autotag_ids=ids, autotag_scores=[scores[i] for i in ids], image=image)


def _autotag_scores(concepts: dict, context: RecordContext) -> dict:
    """`{mid: best score}` of the classes that the autotags map to."""
    best: dict = {}
    for concept, score in concepts.items():
        mid = context.autotag_mids.get(concept)
        if mid is not None and score > best.get(mid, 0.0):
            best[mid] = score
    return best


def _label_lists(scores: dict, verified: dict, machine: dict, index: dict) -> dict:
    """The record's label lists: targets (the scores, overridden by verified labels), verified
    positives and negatives, and the machine labels as given."""
    targets = {index[m]: float(s) for m, s in scores.items()}
    targets.update({index[m]: float(v) for m, v in verified.items()})
    ids = sorted(i for i, t in targets.items() if t > 0)
    machine_ids = sorted(index[m] for m in machine)
    return {
        "label_ids": ids,
        "label_targets": [targets[i] for i in ids],
        "verified_pos": sorted(index[m] for m, v in verified.items() if v == 1),
        "verified_neg": sorted(index[m] for m, v in verified.items() if v == 0),
        "machine_ids": machine_ids,
        "machine_scores": [float(machine[m]) for m in sorted(machine, key=index.get)],
    }


@dataclass(frozen=True)
class JoinHooks:
    """Where the two heavy steps of a prepare run: the YFCC100M scan (`partition_yfcc`'s arguments)
    and the join that writes the splits (`_write_splits`'s). None: in this process;
    `app.records.spread.spread_hooks` runs them as shard tasks (on Ray)."""

    scan_yfcc: Optional[Callable] = None
    write_splits: Optional[Callable] = None


def prepare_dataset(sources: Sources | Callable[[Path], Sources], out_dir: str | Path, config: PrepareConfig,
                    progress: bool = True, hooks: JoinHooks = JoinHooks()) -> dict:
    """Joins the sources into a new dataset folder, swapped into place when complete.

    Args:
        sources: the source files, or a function that finds (or writes) them, given the new
            folder's temporary path (the demo world writes its raw files there).
        out_dir: the dataset folder.
        config: vocabulary, shard layout, targets, the `yfcc` split's size, buckets.
        progress: show progress bars.
        hooks: where the YFCC100M scan and the join run.

    Returns:
        The stats (also in `stats.json`), plus the dataset's `fingerprint`.
    """
    with DatasetWriter(out_dir) as writer:
        sources = sources(writer.path) if callable(sources) else sources
        for split, path in sources.oid.human_labels.items():
            subset = " (the boxable subset: no full file found)" if path and path.stem.endswith("-boxable") else ""
            prepare_log.info("%s: human-verified labels from %s%s", split, path, subset)
        stats = prepare(sources, writer, config, progress, hooks)
        return {**stats, "fingerprint": writer.commit()}


def prepare(sources: Sources, writer: DatasetWriter, config: PrepareConfig, progress: bool = True,
            hooks: JoinHooks = JoinHooks()) -> dict:
    """Reads every source, joins them, and writes shards plus metadata into the writer's folder.

    Args:
        sources: the Open Images / YFCC100M files.
        writer: the dataset being written (the caller commits it).
        config: vocabulary, shard layout, targets, the `yfcc` split's size, buckets.
        progress: show progress bars.
        hooks: where the YFCC100M scan and the join run.

    Returns:
        The stats dictionary that is also written to `stats.json`.
    """
    out_dir = writer.path
    bad = BadRows()
    context = RecordContext.load(sources.oid, config)
    folder = ImageFolder(sources.images, bad, index=False) if sources.images else None
    label_mids = {"human": context.hierarchy.known_mids(), "machine": [mid for mid, _ in context.classes]}
    parts = partition(sources, label_mids, folder, out_dir / JOIN_TEMP, config.yfcc_split_size, config.bucket_photos,
                      bad, progress, hooks.scan_yfcc)
    try:
        tally = (hooks.write_splits or _write_splits)(parts, sources, context, folder, writer, config, bad, progress)
    finally:
        parts.remove()
        shutil.rmtree(out_dir / JOIN_TEMP, ignore_errors=True)
    warn_on_labels(tally.counts, sources.oid.human_labels, bad)
    if config.yfcc_split_size and not parts.sizes[YFCC_SPLIT]:
        bad.warn(f"{YFCC_SPLIT}: 0 photos; {sources.yfcc} has no photo (marker 0, not a video) outside the Open "
                 f"Images image lists")
    if config.tag_normalization == "none":
        vocab = vocabulary_from_counts(tally.tag_counts, config.tag_limit, config.tag_threshold, config.lowercase)
    else:  # the forms need each photo's language: one more pass, over the train shards just written
        train = sorted(out_dir / name for name in writer.shards if name.startswith("train-"))
        vocab = build_normalized_vocabulary(iter_language_tags(train), config.tag_limit, config.tag_threshold,
                                            config.lowercase, config.tag_normalization)
    writer.write_metadata(context.classes, Path(sources.oid.hierarchy).read_text(encoding="utf-8"), vocab)
    stats = {"splits": {split: dict(tally.counts[split]) for split in SPLITS}, "bad_rows": bad.to_dict(),
             "languages": dict(tally.languages.most_common()), "config": dataclasses.asdict(config),
             "vocabulary_size": vocab.size, "image_folder": folder.stats() if folder else None,
             "yfcc_split": {"photos": parts.sizes[YFCC_SPLIT], "cap": config.yfcc_split_size,
                            "outside_open_images": parts.yfcc_offered, "rule": SELECTION_RULE}}
    writer.write_stats(stats)
    log.info("%s", bad.report())
    return stats


RARE_LABELS = 0.01  # a split whose share of photos with verified labels is under 1% of another split's


def warn_on_labels(counts: dict, label_files: dict, bad: BadRows) -> None:
    """Warns of an Open Images split without verified labels, or with under `RARE_LABELS` of the
    share of photos with verified labels that another split has (the wrong labels file, most often).

    Args:
        counts: `{split: Counter}` with `images` and `with_verified_labels`.
        label_files: `{split: human labels file}`.
        bad: receives the warnings.
    """
    shares = {split: counts[split]["with_verified_labels"] / counts[split]["images"]
              for split in oid.SPLITS if counts[split]["images"]}
    for split, share in shares.items():
        labelled, images = counts[split]["with_verified_labels"], counts[split]["images"]
        best, other = max(((s, o) for o, s in shares.items() if o != split), default=(0.0, None))
        if not labelled:
            use = "training on verified labels learns nothing" if split == "train" else "nothing to score on this split"
            bad.warn(f"{split}: 0 images with verified labels ({label_files.get(split)}): {use}")
        elif share < RARE_LABELS * best:
            bad.warn(f"{split}: only {labelled} of {images} images ({share:.2%}) have verified labels, against "
                     f"{best:.2%} in {other}: is {label_files.get(split)} this split's labels file?")


class _Tally:
    """Counts per split, tag languages (Open Images splits) and the train split's tag counts."""

    def __init__(self, tag_limit: int):
        self.counts = {split: collections.Counter(images=0) for split in SPLITS}
        self.languages: collections.Counter = collections.Counter()
        self.tag_counts: collections.Counter = collections.Counter()
        self.tag_limit = tag_limit

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
        if split != YFCC_SPLIT:
            self.languages[record.language] += 1
        if split == "train":
            self.tag_counts.update(record.tags[: self.tag_limit])


def _write_splits(parts: Partitioned, sources: Sources, context: RecordContext, folder: Optional[ImageFolder],
                  writer: DatasetWriter, config: PrepareConfig, bad: BadRows, progress: bool) -> _Tally:
    """Builds and writes every split's records, bucket by bucket, in order."""
    shards = {split: schema.ShardWriter(writer.path, split, schema.shard_count(
        parts.sizes[split], config.records_per_shard, config.min_shards), total=parts.sizes[split]) for split in SPLITS}
    tally = _Tally(config.tag_limit)
    try:
        work = [(parts.oid, b) for b in range(parts.oid.count)] + [(parts.yfcc, b) for b in range(parts.yfcc.count)]
        for files, bucket in tqdm(work, desc="join", unit="bucket", disable=not progress):
            for record, split in bucket_records(parts, files, bucket, sources, context, folder, bad):
                shards[split].write(record)
                tally.add(split, record)
        for split, shard_writer in shards.items():
            writer.add_shards(shard_writer.close())
    except BaseException:
        for shard_writer in shards.values():
            shard_writer.abort()
        raise
    return tally


def bucket_records(parts: Partitioned, files: BucketFiles, bucket: int, sources: Sources, context: RecordContext,
                   folder: Optional[ImageFolder], bad: BadRows) -> Iterator[tuple[schema.PhotoRecord, str]]:
    """`(record, split)` of one bucket's photos (of `parts.oid` or `parts.yfcc`), in order."""
    if files is parts.oid:
        photos = oid_photos(parts, bucket, sources.oid, context, bad)
    else:
        photos = yfcc_photos(parts, bucket, sources.yfcc, bad)
    if folder is not None:
        folder.use_entries(_manifest_entries(files.read("manifest", bucket)))
        photos, ahead = itertools.tee(photos)  # tee holds only iter_load's look-ahead
        loaded = folder.iter_load(ahead, bad)
    else:
        loaded = itertools.repeat(b"")
    for photo, image in zip(photos, loaded):
        yield build_record(photo, context, image), photo.split


def _manifest_entries(rows: dict) -> list:
    return [ManifestEntry(*values) for values in zip(rows["image_id"], rows["manifest"].tolist(),
                                                    rows["line"].tolist(), rows["reason"], rows["path"],
                                                    rows["verified"].tolist())]


def oid_photos(parts: Partitioned, bucket: int, paths: oid.OidPaths, context: RecordContext,
               bad: BadRows) -> Iterator[PhotoSources]:
    """The Open Images photos of one bucket with their sources, split by split, in order (made one at a
    time: a bucket's rows stay in their compact columns)."""
    files = parts.oid
    images = files.read("images", bucket)
    tags = _first_by_key(files.read("tags", bucket), "flickr")
    autotags = _last_by_key(files.read("autotags", bucket), "flickr", "concepts")
    human, machine = files.read("human", bucket), files.read("machine", bucket)
    for code, split in enumerate(oid.SPLITS):
        rows = np.flatnonzero(images["split"] == code)
        rows = rows[first_occurrences(images["key"][rows])]  # a repeated ImageID: its first row
        rows = rows[np.argsort(mix64(images["key"][rows]))]
        keys = images["key"][rows]
        others = images["key"][images["split"] != code]
        verified = _Labels(human, code, (keys, others), context.hierarchy.known_mids(), False,
                           paths.human_labels.get(split), bad)
        scores = _Labels(machine, code, (keys, others), [mid for mid, _ in context.classes], True,
                         paths.machine_labels.get(split), bad)
        for i, row in enumerate(rows.tolist()):
            flickr = int(images["flickr"][row])
            source, raw = tags.get(flickr, ("none", ()))
            yield PhotoSources(split, oid.image_id_text(keys[i]), flickr, images["md5"][row], raw, source,
                               [(m, int(v)) for m, v in verified[i]], dict(scores[i]), autotags.get(flickr, {}))


class _Labels:
    """One split's labels in a bucket, one per (image, class) (repeats resolved and counted by
    `oid.dedupe_labels`), looked up for the ImageID numbers `keys`: `labels[i]` is `keys[i]`'s
    `[(mid, value)]`.

    A label row of a photo outside the split's image list is not used, and counted: a bad row
    `{kind}_label_image_in_other_split` when another split lists the photo, else a skip
    `{kind}_label_image_not_listed`.
    """

    def __init__(self, rows: dict, code: int, images: tuple, mids: list, machine: bool, path: Optional[Path],
                 bad: BadRows):
        keys, others = images
        chosen = np.flatnonzero(rows["split"] == code)
        listed = np.isin(rows["image"][chosen], keys)
        _count_unlisted(rows, chosen[~listed], others, "machine_label" if machine else "human_label", str(path), bad)
        chosen = chosen[listed]
        label_rows = oid.LabelRows(rows["image"][chosen], rows["label"][chosen], rows["value"][chosen],
                                   rows["line"][chosen])
        self.table = oid.dedupe_labels(label_rows, mids, machine, str(path), bad)
        at = np.minimum(np.searchsorted(self.table.images, keys), max(len(self.table.images) - 1, 0))
        known = self.table.images[at] == keys if len(self.table.images) else np.zeros(len(keys), dtype=bool)
        self.starts = np.where(known, np.searchsorted(self.table.image, at, "left"), 0)
        self.ends = np.where(known, np.searchsorted(self.table.image, at, "right"), 0)
        self.mids = mids

    def __getitem__(self, i: int) -> list:
        rows = slice(self.starts[i], self.ends[i])
        return [(self.mids[label], value) for label, value in zip(self.table.label[rows].tolist(),
                                                                  self.table.value[rows].tolist())]


def _count_unlisted(rows: dict, unlisted: np.ndarray, others: np.ndarray, kind: str, path: str, bad: BadRows) -> None:
    """Counts label rows of photos outside their split's image list, by reason (see `_Labels`)."""
    elsewhere = np.isin(rows["image"][unlisted], others)
    for mask, record, reason in ((elsewhere, bad.add_many, "image_in_other_split"),
                                 (~elsewhere, bad.skip_many, "image_not_listed")):
        picked = unlisted[mask]
        record(f"{kind}_{reason}", path, rows["line"][picked],
               [oid.image_id_text(k) for k in rows["image"][picked[:bad.max_examples]].tolist()])


def _first_by_key(rows: dict, key: str) -> dict:
    """Tag rows as `{key: (source, tags)}`, the first row of a key winning (YFCC100M before extra tags)."""
    out: dict = {}
    for photo, source, tags in zip(rows[key].tolist(), rows["source"].tolist(), rows["tags"]):
        out.setdefault(photo, (TAG_SOURCES[source], tags))
    return out


def _last_by_key(rows: dict, key: str, value: str) -> dict:
    """`{key: value}`, the last row of a key winning."""
    return dict(zip(rows[key].tolist(), rows[value]))


def yfcc_photos(parts: Partitioned, bucket: int, path: Path, bad: BadRows) -> Iterator[PhotoSources]:
    """The `yfcc` split's photos of one bucket, in order, with their user tags and autotags.

    A photo whose YFCC100M line is bad (counted there) stays, without tags; of a photo id on several
    lines, the first is used and the others are bad rows `yfcc_duplicate`.
    """
    ids = np.sort(parts.yfcc_bucket(bucket))
    keep = lambda chunk: yfcc.contains(ids, chunk["photo"])[0]  # noqa: E731 (candidates not selected)
    rows = parts.yfcc.read("tags", bucket, keep)
    first = first_occurrences(rows["photo"])
    repeats = np.flatnonzero(~first)
    bad.add_many("yfcc_duplicate", str(path), rows["line"][repeats], rows["photo"][repeats[:bad.max_examples]])
    tags = {photo: rows["tags"][i] for i, photo in zip(np.flatnonzero(first).tolist(), rows["photo"][first].tolist())}
    autotags = _last_by_key(parts.yfcc.read("autotags", bucket, keep), "photo", "concepts")
    for photo in parts.yfcc_bucket(bucket).tolist():
        yield PhotoSources(YFCC_SPLIT, yfcc_key(photo), photo, "", tags.get(photo, ()),
                           "yfcc" if photo in tags else "none", autotags=autotags.get(photo, {}))
