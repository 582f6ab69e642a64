"""What the dataset builder (`app.records.builder`) reads: a `Source`.

A source yields its photos as `CollectionPhoto` records, one pass at a time, and knows its class
list and hierarchy. Two kinds exist:

* `Collection`: a reader that streams photos (manifest, NUS-WIDE, COCO), with its class list,
  hierarchy, label mode, images folder and hash split. The builder checks every id in a first
  pass (`app.records.ledger`), then writes in a second.
* `app.sources.oid_yfcc.OidYfcc`: the Open Images ⋈ YFCC100M join, whose inputs are read once
  into on-disk buckets by `open`, then streamed bucket by bucket.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Protocol

from app.badrows import BadRows
from app.sources.classes import ClassList
from app.sources.hierarchy import Hierarchy
from app.sources.image_folder import CollectionImages
from app.sources.photo import SPLITS, CollectionPhoto, HashSplit


class ImageLoader(Protocol):
    """Where a source's photos find their images: checked bytes in photo order, and counts."""

    def iter_load(self, photos: Iterable[CollectionPhoto], bad: BadRows) -> Iterator[bytes]:
        """Each photo's checked image bytes, b"" for none (counted by reason; a broken file in `bad`)."""

    def stats(self) -> dict:
        """The `image_folder` entry of stats.json."""


class Source(ABC):
    """Photos, their class list and hierarchy, for one dataset.

    Attributes:
        classes: the class list, in output order.
        hierarchy: the hierarchy over the class ids (labels are expanded by it).
        labels: `exhaustive` (every class a photo does not list is a verified negative) or
            `partial` (only the listed labels and negatives are verified).
        has_text: whether photos may carry text (counted as `with_text` per split).
    """

    classes: ClassList
    hierarchy: Hierarchy
    labels: str = "exhaustive"
    has_text: bool = True

    def open(self, scratch: Path, bad: BadRows, progress: bool) -> Optional[dict]:
        """Called once before `photos`. A source that must read its inputs ahead (the join, into
        buckets under `scratch`) does it here, checks its own ids and returns its photos per
        split. None (this default): the builder counts them, checking every id, in a first pass.
        """
        return None

    @abstractmethod
    def photos(self, bad: BadRows) -> Iterator[CollectionPhoto]:
        """One pass over the photos, each with its split set; bad rows are counted in `bad` or raised."""

    @abstractmethod
    def hierarchy_json(self) -> str:
        """The dataset's hierarchy.json."""

    def image_loader(self) -> Optional[ImageLoader]:
        """Where the photos' images are, or None (every photo goes without one, uncounted)."""
        return None

    def finish(self, counts: dict, bad: BadRows) -> dict:
        """After the photos: checks the counts per split (warnings go to `bad`); returns the source's
        own entries of stats.json."""
        return {}

    def close(self) -> None:
        """Removes what `open` wrote."""

    def name(self) -> str:
        """What the source is, for messages (its first input file where it has one)."""
        return type(self).__name__


class PhotoReader(Protocol):
    """A collection reader: `photos(bad)` streams one pass over its photos."""

    def photos(self, bad: BadRows) -> Iterator[CollectionPhoto]: ...


@dataclass
class Collection(Source):
    """A reader as a `Source`.

    Args:
        kind: `manifest`, `nuswide`, `coco`, ... (recorded in stats.json).
        reader: the reader.
        classes: the class list, in output order.
        tree: the hierarchy (Open Images JSON form, class ids).
        labels: `exhaustive` or `partial`.
        images: the images folder, or None.
        split: the hash split for photos without one.
        made_from: the input files, for stats.json.
        bad: what opening the collection counted (hierarchy nodes that are not classes).
    """

    kind: str
    reader: PhotoReader
    classes: ClassList
    tree: dict
    labels: str = "exhaustive"
    images: Optional[Path] = None
    split: HashSplit = HashSplit()
    made_from: tuple = ()
    bad: BadRows = field(default_factory=BadRows)
    hierarchy: Hierarchy = field(init=False)

    def __post_init__(self):
        self.hierarchy = Hierarchy(self.tree, self.classes.ids)

    def open(self, scratch: Path, bad: BadRows, progress: bool) -> Optional[dict]:
        bad.merge(self.bad)
        return None

    def name(self) -> str:
        return str(self.made_from[0]) if self.made_from else self.kind

    def photos(self, bad: BadRows) -> Iterator[CollectionPhoto]:
        for photo in self.reader.photos(bad):
            photo.split = photo.split or self.split(photo.image_id)
            yield photo

    def hierarchy_json(self) -> str:
        return json.dumps(self.tree, ensure_ascii=False, indent=1)

    def image_loader(self) -> CollectionImages:
        return CollectionImages(self.images)

    def finish(self, counts: dict, bad: BadRows) -> dict:
        warn_on_collection(counts, bad)
        return {"collection": {"kind": self.kind, "labels": self.labels, "classes": len(self.classes),
                               "made_from": [str(p) for p in self.made_from],
                               "hash_split": dataclasses.asdict(self.split)}}


def warn_on_collection(counts: dict, bad: BadRows) -> None:
    """Warns of a split without photos, or without a photo that has a label (nothing to learn or score).

    Args:
        counts: `{split: Counter}` with `images` and `with_targets`.
        bad: receives the warnings.
    """
    for split in SPLITS:
        images, labelled = counts[split]["images"], counts[split]["with_targets"]
        use = "training learns nothing" if split == "train" else "nothing to score on this split"
        if not images:
            bad.warn(f"{split}: 0 photos: {use} (more photos, or a split column, would fill it)")
        elif not labelled:
            bad.warn(f"{split}: 0 of {images} photos have a label: {use} (does a labels column name classes of "
                     f"the class list?)")
