"""Open Images joined with YFCC100M on the Flickr id, as one `Source`, streamed bucket by bucket.

`open` reads every input file once into on-disk buckets (`app.sources.partition`); then, bucket by
bucket, each photo's rows are put together into a `CollectionPhoto`: its user tags (YFCC100M, else
the extra tags), its human-verified labels expanded by the hierarchy (a label may name a node
outside the class list), its machine labels and autotags as class scores. Photos come out in the
order of a hash of their ImageID (`yfcc` photos: of their photo id), whatever the number of
buckets, so the same inputs give the same dataset. Memory holds one bucket and a few bytes of ids
per photo.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from tqdm import tqdm

from app.badrows import BadRows
from app.config import PrepareConfig
from app.sources import oid, yfcc
from app.sources.base import Source
from app.sources.buckets import first_occurrences, mix64
from app.sources.classes import ClassList
from app.sources.hierarchy import Hierarchy
from app.sources.image_folder import ImageFolder, ManifestEntry
from app.sources.partition import TAG_SOURCES, OidYfccFiles, Partitioned, partition
from app.sources.photo import CollectionPhoto
from app.sources.yfcc_split import SPLIT as YFCC_SPLIT
from app.sources.yfcc_split import yfcc_key

log = logging.getLogger("prepare")  # the prepare step's own messages (app/prepare.py's logger)

SELECTION_RULE = ("the photos of the YFCC100M file (not videos) outside the Open Images image lists with the "
                  "smallest mix64(photo id)")
RARE_LABELS = 0.01  # a split whose share of photos with verified labels is under 1% of another split's


class OidYfcc(Source):
    """The join as a `Source`: human-verified labels are partial; there is no text.

    Args:
        files: the input files.
        config: the `yfcc` split's size and the photos per bucket.
    """

    labels = "partial"
    has_text = False

    def __init__(self, files: OidYfccFiles, config: PrepareConfig):
        self.files = files
        self.yfcc_size, self.bucket_photos = config.yfcc_split_size, config.bucket_photos
        pairs = oid.read_classes(files.oid.classes)
        self.classes = ClassList([mid for mid, _ in pairs], [name for _, name in pairs], str(files.oid.classes))
        self.hierarchy = Hierarchy.from_json(files.oid.hierarchy, self.classes.ids)
        self.autotag_classes = {concept: self.classes.index[mid] for concept, mid in yfcc.load_autotag_mapping().items()
                                if mid in self.classes.index}
        self.folder: Optional[ImageFolder] = None
        self.parts: Optional[Partitioned] = None
        self.progress = False

    def open(self, scratch: Path, bad: BadRows, progress: bool) -> dict:
        """Reads every input into buckets under `scratch` (repeated ImageIDs counted, a photo in two
        splits refused: `partition.check_disjoint_splits`); returns the photos per split."""
        for split, path in self.files.oid.human_labels.items():
            subset = " (the boxable subset: no full file found)" if path and path.stem.endswith("-boxable") else ""
            log.info("%s: human-verified labels from %s%s", split, path, subset)
        self.folder = ImageFolder(self.files.images, bad, index=False) if self.files.images else None
        label_mids = {"human": self.hierarchy.known_mids(), "machine": self.classes.ids}
        self.parts = partition(self.files, label_mids, self.folder, scratch, self.yfcc_size, self.bucket_photos, bad,
                               progress)
        self.progress = progress
        return dict(self.parts.sizes)

    def photos(self, bad: BadRows) -> Iterator[CollectionPhoto]:
        """The Open Images photos bucket by bucket, then the `yfcc` split's."""
        parts = self.parts
        work = [(parts.oid, b) for b in range(parts.oid.count)] + [(parts.yfcc, b) for b in range(parts.yfcc.count)]
        for files, bucket in tqdm(work, desc="join", unit="bucket", disable=not self.progress):
            if self.folder is not None:  # the images of this bucket's photos (`ImageFolder.iter_load`)
                self.folder.use_entries(_manifest_entries(files.read("manifest", bucket)))
            yield from self._oid_photos(bucket, bad) if files is parts.oid else self._yfcc_photos(bucket, bad)

    def hierarchy_json(self) -> str:
        return Path(self.files.oid.hierarchy).read_text(encoding="utf-8")

    def image_loader(self) -> Optional[ImageFolder]:
        return self.folder

    def finish(self, counts: dict, bad: BadRows) -> dict:
        """Warns of splits without (or with too few) verified labels and of an empty `yfcc` split."""
        warn_on_labels(counts, self.files.oid.human_labels, bad)
        size = self.parts.sizes[YFCC_SPLIT]
        if self.yfcc_size and not size:
            bad.warn(f"{YFCC_SPLIT}: 0 photos; {self.files.yfcc} has no photo (marker 0, not a video) outside the "
                     f"Open Images image lists")
        return {"yfcc_split": {"photos": size, "cap": self.yfcc_size, "outside_open_images": self.parts.yfcc_offered,
                               "rule": SELECTION_RULE}}

    def close(self) -> None:
        if self.parts is not None:
            self.parts.remove()

    def _oid_photos(self, bucket: int, bad: BadRows) -> Iterator[CollectionPhoto]:
        """The Open Images photos of one bucket, split by split, in order (made one at a time: a
        bucket's rows stay in their compact columns)."""
        files, paths = self.parts.oid, self.files.oid
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
            verified = _Labels(human, code, (keys, others), self.hierarchy.known_mids(), False,
                               paths.human_labels.get(split), bad)
            scores = _Labels(machine, code, (keys, others), self.classes.ids, True, paths.machine_labels.get(split),
                             bad)
            for i, row in enumerate(rows.tolist()):
                flickr = int(images["flickr"][row])
                source, raw = tags.get(flickr, ("none", ()))
                expanded = self.hierarchy.expand((mid, int(value)) for mid, value in verified[i])
                yield CollectionPhoto(
                    oid.image_id_text(keys[i]), f"{paths.images[split]}:{int(images['line'][row])}", tags=raw,
                    labels=[self.classes.index[m] for m, v in expanded.items() if v],
                    negatives=[self.classes.index[m] for m, v in expanded.items() if not v], split=split,
                    flickr_id=flickr, md5=images["md5"][row], tag_source=source,
                    scores={self.classes.index[m]: s for m, s in scores[i]},
                    autotags=self._autotag_scores(autotags.get(flickr, {})))

    def _yfcc_photos(self, bucket: int, bad: BadRows) -> Iterator[CollectionPhoto]:
        """The `yfcc` split's photos of one bucket, in order, with their user tags and autotags.

        A photo whose YFCC100M line is bad (counted there) stays, without tags; of a photo id on
        several lines, the first is used and the others are bad rows `yfcc_duplicate`.
        """
        path = self.files.yfcc
        ids = np.sort(self.parts.yfcc_bucket(bucket))
        keep = lambda chunk: yfcc.contains(ids, chunk["photo"])[0]  # noqa: E731 (candidates not selected)
        rows = self.parts.yfcc.read("tags", bucket, keep)
        first = first_occurrences(rows["photo"])
        repeats = np.flatnonzero(~first)
        bad.add_many("yfcc_duplicate", str(path), rows["line"][repeats], rows["photo"][repeats[:bad.max_examples]])
        tagged = {photo: i for i, photo in zip(np.flatnonzero(first).tolist(), rows["photo"][first].tolist())}
        autotags = _last_by_key(self.parts.yfcc.read("autotags", bucket, keep), "photo", "concepts")
        for photo in self.parts.yfcc_bucket(bucket).tolist():
            at = tagged.get(photo)
            yield CollectionPhoto(yfcc_key(photo), f"{path}:{0 if at is None else int(rows['line'][at])}",
                                  tags=() if at is None else rows["tags"][at], split=YFCC_SPLIT, flickr_id=photo,
                                  tag_source="none" if at is None else "yfcc",
                                  autotags=self._autotag_scores(autotags.get(photo, {})))

    def _autotag_scores(self, concepts: dict) -> dict:
        """`{class index: best score}` of the classes that the autotags map to."""
        best: dict = {}
        for concept, score in concepts.items():
            index = self.autotag_classes.get(concept)
            if index is not None and score > best.get(index, 0.0):
                best[index] = score
        return best


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


def _manifest_entries(rows: dict) -> list:
    return [ManifestEntry(*values) for values in zip(rows["image_id"], rows["manifest"].tolist(),
                                                    rows["line"].tolist(), rows["reason"], rows["path"],
                                                    rows["verified"].tolist())]


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
