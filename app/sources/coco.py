"""MS-COCO (2017) as a collection: categories from `annotations/instances_{train,val}2017.json`,
captions from `annotations/captions_{train,val}2017.json`, photos under `train2017/` and `val2017/`.

* Splits: val2017 is the test split; validation is a fixed cut of train2017 (the photos whose id
  hashes below `--validation-fraction`, `photo.HashSplit`), so it never takes a test photo.
* Classes: the 80 categories in category-id order, `name` as the class name, the category id as
  its id. Every category is labelled for every photo (exhaustive): a photo without an instance
  of a category is a verified negative for it.
* Text: the five captions of a photo joined with a space, in caption-id order, into one text
  (scored as one input; see docs/your-own-photos.md).
* A photo's place is its index in the JSON `images` list (`file:N`: COCO's files are one line);
  an error in a value names the true line and the element (`file:1: image 4 needs "file_name"`).
* Every value used is type-checked; train2017's categories must be val2017's.

The annotation files are streamed element by element (`json_stream`); what is kept is each photo's
category set and joined captions (a few hundred bytes a photo), not the documents.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from app.badrows import BadRows
from app.sources.classes import ClassList
from app.sources.json_stream import check_object, iter_array
from app.sources.photo import CollectionPhoto, unit_hash
from app.sources.oid import flickr_id_from_url
from app.errors import InputError
from app.text.normalize import normalize_name, normalize_text

PARTS = (("train2017", "train"), ("val2017", "test"))
KEY = (int, str)  # an image id as COCO writes it (an int), or a string
CATEGORY = {"id": ((int,), True), "name": ((str,), True)}
IMAGE = {"id": (KEY, True), "file_name": ((str,), True), "flickr_url": ((str,), False)}
INSTANCE = {"image_id": (KEY, True), "category_id": ((int,), True)}
CAPTION = {"image_id": (KEY, True), "id": ((int,), False), "caption": ((str,), False)}


def _array(path: Path, key: str, what: str, fields: dict) -> Iterator[tuple[int, int, dict]]:
    """`(line, position from 1, element)` of a top-level array of an annotation file, streamed
    (`json_stream`), each element type-checked (`json_stream.check_object`)."""
    if not path.is_file():
        raise InputError(f"{path}: missing (COCO layout: annotations/instances_*2017.json, captions_*2017.json)")
    for position, (line, element) in enumerate(iter_array(path, key, lines=True), start=1):
        yield line, position, check_object(element, f"{path}:{line}", f"{what} {position}", fields)


def _categories(path: Path) -> list:
    """`[(id, name)]` of an instances file's categories, by id."""
    return sorted((c["id"], normalize_text(c["name"])) for *_, c in _array(path, "categories", "category", CATEGORY))


@dataclass
class Coco:
    """Reads a COCO 2017 folder.

    Args:
        root: the folder holding `annotations/`, `train2017/` and `val2017/`.
        validation: the fraction of train2017 photos cut out as the validation split.
    """

    root: Path
    validation: float = 0.1

    def __post_init__(self):
        self.root = Path(self.root)
        val, train = (self.root / "annotations" / f"instances_{part}.json" for part in ("val2017", "train2017"))
        categories, other = _categories(val), _categories(train) if train.is_file() else None
        if other is not None and other != categories:
            differ = sorted(set(categories) ^ set(other))[0]
            raise InputError(f"{train}: its categories differ from {val.name}'s (category {differ[0]} "
                             f"{differ[1]!r} is only in {train.name if differ in other else val.name}): one "
                             f"class list serves both")
        self.classes = ClassList.from_names([name for _, name in categories], str(self.root / "annotations"),
                                            [str(cid) for cid, _ in categories])

    @property
    def images(self) -> Path:
        return self.root

    def made_from(self) -> tuple:
        return tuple(self.root / "annotations" / f"{kind}_{part}.json" for part, _ in PARTS
                     for kind in ("instances", "captions"))

    def photos(self, bad: BadRows) -> Iterator[CollectionPhoto]:
        """One pass: train2017 (train and validation), then val2017 (test), each in `images` order."""
        for part, split in PARTS:
            path = self.root / "annotations" / f"instances_{part}.json"
            labels = collections.defaultdict(set)
            for line, position, note in _array(path, "annotations", "annotation", INSTANCE):
                category = str(note["category_id"])
                if category not in self.classes.index:
                    raise InputError(f"{path}:{line}: annotation {position} has category {category}, not in the "
                                     f"categories of instances_val2017.json")
                labels[note["image_id"]].add(self.classes.index[category])
            captions = self._captions(part)
            for _, position, image in _array(path, "images", "image", IMAGE):
                image_id = normalize_name(str(image["id"]), "image id", f"{path}:{position}")
                text = captions.pop(image["id"], "")
                if not text:
                    bad.add("empty_text", str(path), position, image_id)
                photo_split = split if split == "test" or unit_hash(image_id) >= self.validation else "validation"
                yield CollectionPhoto(image_id, f"{path}:{position}", f"{part}/{image['file_name']}", [], text,
                                      sorted(labels.pop(image["id"], ())), None, photo_split,
                                      flickr_id_from_url(image.get("flickr_url", "")) or 0)
            _count_unlisted(bad, path, labels, "annotation_image_not_listed")
            _count_unlisted(bad, self.root / "annotations" / f"captions_{part}.json", captions,
                            "caption_image_not_listed")

    def _captions(self, part: str) -> dict:
        """`{image id: the captions joined}` in caption-id order."""
        by_image = collections.defaultdict(list)
        for *_, note in _array(self.root / "annotations" / f"captions_{part}.json", "annotations", "caption", CAPTION):
            caption = " ".join(normalize_text(note.get("caption", "")).split())
            if caption:
                by_image[note["image_id"]].append((note.get("id", 0), caption))
        return {image: " ".join(c for _, c in sorted(notes)) for image, notes in by_image.items()}


def _count_unlisted(bad: BadRows, path: Path, left: dict, reason: str) -> None:
    """Counts the notes left over for image ids that the `images` list lacks (they would be lost silently).

    Args:
        bad: where the bad rows are counted.
        path: the annotation file the notes came from.
        left: `{image id: its notes}` not taken by any listed photo.
        reason: the bad-row reason.
    """
    for image_id in left:
        bad.add(reason, str(path), 1, f"image_id {image_id!r} is not in the images list")
