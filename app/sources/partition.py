"""Reading every source of a prepare run once, into on-disk buckets (`app.sources.buckets`).

Open Images photos are bucketed by `mix64` of their ImageID's number, and so are their label rows
and manifest rows; user tags, extra tags and autotags, keyed by Flickr id, go to the buckets of the
photos with that Flickr id (`FlickrMap`). The `yfcc` split's photos (`app.sources.yfcc_split`) have
buckets of their own, by their order key.

Kept in memory while the sources are read, per Open Images photo: its Flickr id and bucket (12 bytes,
to route YFCC100M rows), whether YFCC100M had it (1 byte) and, while the image lists are read, its
ImageID's number, Flickr id and line (24 bytes, for repeats, the split's size and the check that no
photo is in two splits); per `yfcc` photo,
its id (8 bytes, twice while the selection runs). Everything else goes to disk as it is read.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from app.sources import oid
from app.sources import yfcc
from app.badrows import BadRows
from app.sources.buckets import BucketFiles, bucket_of, first_occurrences, mix64
from app.records.image_folder import ImageFolder, ManifestEntry
from app.sources.oid_yfcc import Sources
from app.sources.textfiles import iter_line_blocks
from app.sources.yfcc_split import BottomK, order_keys, parse_yfcc_key
from app.errors import InputError

BATCH = 8192  # rows handed to the bucket files at once (an autotag row is about 1 KB of Python objects)
# Label rows per photo a bucket is sized for (Open Images: about 5 human and 9 machine labels).
LABEL_ROWS_PER_PHOTO = 16
TAG_SOURCES = ("yfcc", "extra")
_LABELS = {"split": np.int8, "image": np.uint64, "label": np.int32, "value": np.float64, "line": np.int64}
_MANIFEST = {"image_id": list, "manifest": np.int32, "line": np.int64, "reason": list, "path": list,
             "verified": np.bool_}
OID_STREAMS = {
    "images": {"split": np.int8, "key": np.uint64, "flickr": np.uint64, "line": np.int64, "md5": list},
    "human": _LABELS,
    "machine": _LABELS,
    "tags": {"flickr": np.uint64, "source": np.int8, "tags": list},
    "autotags": {"flickr": np.uint64, "concepts": list},
    "manifest": _MANIFEST,
}
YFCC_STREAMS = {
    "tags": {"photo": np.uint64, "tags": list, "line": np.int64},
    "autotags": {"photo": np.uint64, "concepts": list},
    "manifest": _MANIFEST,
}


class FlickrMap:
    """The buckets holding the photos of each Flickr id, as sorted numpy arrays (12 bytes a photo).

    Args:
        flickr: each photo's Flickr id.
        buckets: each photo's bucket.
    """

    def __init__(self, flickr: np.ndarray, buckets: np.ndarray):
        order = np.lexsort((buckets, flickr))
        flickr, buckets = flickr[order], buckets[order].astype(np.int32)
        new = np.r_[True, (flickr[1:] != flickr[:-1]) | (buckets[1:] != buckets[:-1])]
        self.flickr, self.buckets = flickr[new], buckets[new]
        self.wanted = np.unique(self.flickr)  # sorted distinct ids, for the YFCC100M scan

    def route(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For Flickr ids, `(rows, buckets)`: an entry per bucket holding a photo of `ids[rows[i]]`."""
        low = np.searchsorted(self.flickr, ids, "left")
        counts = np.searchsorted(self.flickr, ids, "right") - low
        rows = np.repeat(np.arange(len(ids)), counts)
        within = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.buckets[np.repeat(low, counts) + within].astype(np.int64)


@dataclass
class Partitioned:
    """The sources of a run in buckets, and what the join needs besides them.

    Args:
        oid: the Open Images photos' buckets (`OID_STREAMS`).
        yfcc: the `yfcc` split's buckets (`YFCC_STREAMS`).
        sizes: photos per split (each ImageID once), the `yfcc` split included.
        yfcc_ids: the `yfcc` split's photo ids, sorted by order key.
        yfcc_offered: YFCC100M photos outside Open Images (videos excluded) that the selection saw.
    """

    oid: BucketFiles
    yfcc: BucketFiles
    sizes: dict
    yfcc_ids: np.ndarray
    yfcc_offered: int

    def __post_init__(self):
        self._yfcc_buckets = bucket_of(order_keys(self.yfcc_ids), self.yfcc.count)

    def yfcc_bucket(self, bucket: int) -> np.ndarray:
        """The `yfcc` split's photo ids in one bucket, in order."""
        where = np.searchsorted(self._yfcc_buckets, [bucket, bucket + 1])
        return self.yfcc_ids[where[0]: where[1]]

    def remove(self) -> None:
        self.oid.remove()
        self.yfcc.remove()


def partition(sources: Sources, label_mids: dict, folder: Optional[ImageFolder], tmp_dir: Path, yfcc_size: int,
              bucket_photos: int, bad: BadRows, progress: bool, scan_yfcc: Optional[Callable] = None) -> Partitioned:
    """Reads every source once into bucket files under `tmp_dir`.

    Args:
        sources: the run's files.
        label_mids: `{"human": [...], "machine": [...]}`: the MIDs each kind of label may use.
        folder: the images folder, if any (its manifests are bucketed).
        tmp_dir: a new folder for the bucket files.
        yfcc_size: the `yfcc` split's cap.
        bucket_photos: photos per bucket.
        bad: receives every bad row and warning.
        progress: show progress bars.
        scan_yfcc: what scans YFCC100M, with `partition_yfcc`'s arguments (`partition_yfcc`, in this
            process, by default; `app.records.spread` scans its byte spans as shard tasks).
    """
    paths = sources.oid
    label_paths = [p for kind in (paths.human_labels, paths.machine_labels) for p in kind.values() if p]
    count = max(1, math.ceil(count_lines(paths.images.values()) / bucket_photos),
                math.ceil(count_lines(label_paths) / (bucket_photos * LABEL_ROWS_PER_PHOTO)))
    oid_files = BucketFiles(tmp_dir / "oid", count, OID_STREAMS)
    yfcc_files = BucketFiles(tmp_dir / "yfcc", max(1, math.ceil(yfcc_size / bucket_photos)), YFCC_STREAMS)
    sizes, flickr = partition_images(paths.images, oid_files, bad)
    found = np.zeros(len(flickr.wanted), dtype=bool)
    selection = BottomK(yfcc_size)
    (scan_yfcc or partition_yfcc)(sources.yfcc, flickr, found, selection, oid_files, yfcc_files, bad, progress)
    selected = selection.selected()
    if sources.extra_tags:
        extra = yfcc.read_extra_tags(sources.extra_tags, flickr.wanted[~found], bad)
        for batch in batches(extra):
            add_tags(oid_files, flickr, [p for p, _ in batch], [t for _, t in batch], TAG_SOURCES.index("extra"))
    if sources.autotags:
        partition_autotags(sources.autotags, flickr, selected, oid_files, yfcc_files, bad)
    del flickr, found
    for code, split in enumerate(oid.SPLITS):
        for kind, files in (("human", paths.human_labels), ("machine", paths.machine_labels)):
            if files.get(split) is not None:
                partition_labels(files[split], code, kind, label_mids[kind], oid_files, bad)
    if folder is not None and folder.manifests:
        partition_manifests(folder.manifest_entries(bad), oid_files, yfcc_files)
    oid_files.flush()
    yfcc_files.flush()
    sizes["yfcc"] = len(selected)
    return Partitioned(oid_files, yfcc_files, sizes, selected[np.argsort(order_keys(selected))], selection.offered)


def count_lines(paths: Iterable[Path]) -> int:
    """Lines in files (plain, gzip or bz2), to size the buckets."""
    return sum(sum(block.obj.count(b"\n", 0, block.nbytes) for block in iter_line_blocks(path, 8 << 20))
               for path in paths if path is not None)


def batches(items: Iterable, size: int = BATCH) -> Iterator[list]:
    """Lists of up to `size` items."""
    items = iter(items)
    while batch := list(itertools.islice(items, size)):
        yield batch


def partition_images(paths: dict, files: BucketFiles, bad: BadRows) -> tuple[dict, FlickrMap]:
    """Buckets each split's image rows.

    Returns:
        Photos per split (an ImageID once: a repeat in a split is a bad row `oid_duplicate_image`,
        the first row wins) and the Flickr ids' buckets. A split without images is a warning.

    Raises:
        InputError: a photo in two splits (`check_disjoint_splits`).
    """
    sizes, flickr, buckets, members = {}, [], [], {}
    for code, split in enumerate(oid.SPLITS):
        keys, lines, split_flickr, elsewhere = [], [], [], []
        for batch in batches(oid.read_images(paths[split], bad)):
            elsewhere += [(image.line_no, image.subset) for image in batch if image.subset not in ("", split)]
            key = np.array([int(image.image_id, 16) for image in batch], dtype=np.uint64)
            line = np.array([image.line_no for image in batch], dtype=np.int64)
            ids = np.array([image.flickr_id for image in batch], dtype=np.uint64)
            bucket = bucket_of(mix64(key), files.count)
            files.add("images", bucket, {"split": np.full(len(batch), code, np.int8), "key": key, "flickr": ids,
                                         "line": line, "md5": [image.md5 for image in batch]})
            keys.append(key)
            lines.append(line)
            split_flickr.append(ids)
            buckets.append(bucket)
        keys, lines, ids = (np.concatenate(parts or [np.zeros(0, dtype)]) for parts, dtype in
                            ((keys, np.uint64), (lines, np.int64), (split_flickr, np.uint64)))
        first = _first_images(keys, lines, str(paths[split]), bad)
        members[split] = SplitMembers(keys[first], ids[first], lines[first])
        sizes[split] = int(first.sum())
        flickr.append(ids)
        if not sizes[split]:
            bad.warn(f"{split}: 0 images ({paths[split]})")
        if elsewhere:
            bad.warn(f"{paths[split]}: {len(elsewhere)} rows whose Subset is not {split} (e.g. line {elsewhere[0][0]}: "
                     f"{elsewhere[0][1]!r}); they are kept in the {split} split, as the file says")
    check_disjoint_splits(members, paths)
    return sizes, FlickrMap(np.concatenate(flickr or [np.zeros(0, np.uint64)]),
                            np.concatenate(buckets or [np.zeros(0, np.int64)]))


def _first_images(keys: np.ndarray, lines: np.ndarray, path: str, bad: BadRows) -> np.ndarray:
    """A mask of the first row of each ImageID of a split (rows in file order); each repeat is
    counted as a bad row."""
    first = first_occurrences(keys)
    repeats = np.flatnonzero(~first)
    texts = [oid.image_id_text(k) for k in keys[repeats[:bad.max_examples]].tolist()]
    bad.add_many("oid_duplicate_image", path, lines[repeats], texts)
    return first


@dataclass
class SplitMembers:
    """A split's distinct ImageID numbers, with each one's Flickr id and image-list line."""

    keys: np.ndarray
    flickr: np.ndarray
    lines: np.ndarray


def check_disjoint_splits(members: dict, paths: dict) -> None:
    """Stops at a photo listed in two splits: the same ImageID, or the same Flickr photo behind two
    ImageIDs (the same pixels and tags, so the same features). Either would leak one split into
    another, so it is an error, not a skip.

    Args:
        members: `{split: SplitMembers}`.
        paths: `{split: image list}`.

    Raises:
        InputError: `list:line: ...` at the later split's first such row, naming the other's row.
    """
    pairs = list(itertools.combinations(members, 2))
    for column, what in (("keys", "ImageID"), ("flickr", "Flickr photo")):
        for first, second in pairs:
            a, b = members[first], members[second]
            _, in_a, in_b = np.intersect1d(getattr(a, column), getattr(b, column), return_indices=True)
            if not len(in_b):
                continue
            j = int(np.argmin(b.lines[in_b]))
            i, j = int(in_a[j]), int(in_b[j])
            same = (f"ImageID {oid.image_id_text(int(b.keys[j]))} is also in the {first} split" if column == "keys" else
                    f"ImageID {oid.image_id_text(int(b.keys[j]))} is Flickr photo {int(b.flickr[j])}, which the "
                    f"{first} split has as ImageID {oid.image_id_text(int(a.keys[i]))}")
            raise InputError(f"{paths[second]}:{int(b.lines[j])}: {same} ({paths[first]}:{int(a.lines[i])}): "
                             f"one photo in two splits leaks {first} into {second}; remove it from one image "
                             f"list ({len(in_b)} such {what}s between these two lists)")


def add_tags(files: BucketFiles, flickr: FlickrMap, ids: list, tags: list, source: int) -> None:
    """Adds decoded user tags of Open Images photos to the buckets of their Flickr ids."""
    rows, buckets = flickr.route(np.array(ids, dtype=np.uint64))
    files.add("tags", buckets, {"flickr": np.array(ids, dtype=np.uint64)[rows],
                                "source": np.full(len(rows), source, np.int8), "tags": [tags[i] for i in rows]})


def partition_yfcc(path: Path, flickr: FlickrMap, found: np.ndarray, selection: BottomK, oid_files: BucketFiles,
                   yfcc_files: BucketFiles, bad: BadRows, progress: bool, span: Optional[tuple[int, int]] = None,
                   first_line: int = 0, lines: Optional[np.ndarray] = None) -> None:
    """Scans YFCC100M once (or the lines of a byte span of it, after `first_line` lines): user tags of
    Open Images photos (their lines into `lines`, aligned with `flickr.wanted`, if given), and of the
    `yfcc` split's candidates (offered to `selection`)."""
    size = os.path.getsize(path) if span is None else span[1] - span[0]
    with tqdm(total=size, desc="scan YFCC100M", unit="B", unit_scale=True, disable=not progress) as bar:
        photos = yfcc.scan_dataset(path, flickr.wanted, bad, progress=bar.update, found=found, outside=selection.offer,
                                   span=span, first_line=first_line)
        for batch in batches(photos):
            wanted = [p for p in batch if p.wanted]
            add_tags(oid_files, flickr, [p.photo_id for p in wanted], [p.user_tags for p in wanted],
                     TAG_SOURCES.index("yfcc"))
            if lines is not None and wanted:
                at = np.searchsorted(flickr.wanted, np.array([p.photo_id for p in wanted], dtype=np.uint64))
                lines[at] = [p.line_no for p in wanted]
            others = [p for p in batch if not p.wanted]
            ids = np.array([p.photo_id for p in others], dtype=np.uint64)
            yfcc_files.add("tags", bucket_of(order_keys(ids), yfcc_files.count),
                           {"photo": ids, "tags": [p.user_tags for p in others],
                            "line": np.array([p.line_no for p in others], dtype=np.int64)})


def partition_autotags(path: Path, flickr: FlickrMap, selected: np.ndarray, oid_files: BucketFiles,
                       yfcc_files: BucketFiles, bad: BadRows) -> None:
    """Buckets the autotags of the Open Images photos and of the `yfcc` split."""
    for batch in batches(yfcc.read_autotags(path, np.union1d(flickr.wanted, selected), bad)):
        ids = np.array([photo for photo, _ in batch], dtype=np.uint64)
        concepts = [c for _, c in batch]
        mine = yfcc.contains(selected, ids)[0]
        rows, buckets = flickr.route(ids[~mine])
        oid_files.add("autotags", buckets, {"flickr": ids[~mine][rows],
                                            "concepts": [concepts[i] for i in np.flatnonzero(~mine)[rows]]})
        yfcc_files.add("autotags", bucket_of(order_keys(ids[mine]), yfcc_files.count),
                       {"photo": ids[mine], "concepts": [concepts[i] for i in np.flatnonzero(mine)]})


def partition_labels(path: Path, code: int, kind: str, mids: list, files: BucketFiles, bad: BadRows) -> None:
    """Buckets the valid rows of a label file (`oid.iter_label_rows` checks and counts the others)."""
    index = {mid: i for i, mid in enumerate(mids)}
    for rows in oid.iter_label_rows(path, bad, index, machine=kind == "machine"):
        files.add(kind, bucket_of(mix64(rows.image), files.count),
                  {"split": np.full(len(rows.image), code, np.int8), "image": rows.image, "label": rows.label,
                   "value": rows.value, "line": rows.lines})


def partition_manifests(entries: Iterable[ManifestEntry], oid_files: BucketFiles, yfcc_files: BucketFiles) -> None:
    """Buckets manifest rows by their photo (an ImageID, or `yfcc-<id>`); rows of other keys are not
    photos of a dataset, and are left out."""
    for batch in batches(entries):
        keys, ok = oid.image_keys(_string_array([e.image_id for e in batch]))
        photos = [parse_yfcc_key(e.image_id) for e in batch]
        mine = np.array([p is not None for p in photos], dtype=bool)
        for files, rows, order in ((oid_files, np.flatnonzero(ok), mix64(keys[ok])),
                                   (yfcc_files, np.flatnonzero(mine),
                                    order_keys(np.array([p for p in photos if p is not None], dtype=np.uint64)))):
            chosen = [batch[i] for i in rows.tolist()]
            files.add("manifest", bucket_of(order, files.count), {
                "image_id": [e.image_id for e in chosen], "manifest": np.array([e.manifest for e in chosen], np.int32),
                "line": np.array([e.line for e in chosen], np.int64), "reason": [e.reason for e in chosen],
                "path": [e.path for e in chosen], "verified": np.array([e.verified for e in chosen], bool)})


def _string_array(texts: list) -> pa.Array:
    return pa.array(texts, pa.string())
