"""MS-COCO (2017) as a collection: categories from `annotations/instances_{train,val}2017.json`,
captions from `annotations/captions_{train,val}2017.json`, photos under `train2017/` and `val2017/`.

* Splits: val2017 is the test split; validation is a fixed cut of train2017 (the photos whose id
  hashes below `--validation-fraction`, `photo.HashSplit`), so it never takes a test photo.
* Classes: the 80 categories in category-id order, `name` as the class name, the category id as
  its id. Every category is labelled for every photo (exhaustive): a photo without an instance
  of a category is a verified negative for it.
* Text: the five captions of a photo joined with a space, in caption-id order, into one text
  (scored as one input; see docs/your-own-photos.md).
* A photo's position in messages is its index in the JSON `images` list (`file:N`).

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
from app.sources.json_stream import iter_array
from app.sources.photo import CollectionPhoto, unit_hash
from app.sources.oid import flickr_id_from_url
from app.errors import InputError

PARTS = (("train2017", "train"), ("val2017", "test"))


def _array(path: Path, key: str) -> Iterator:
    """The elements of a top-level array of an annotation file, streamed (`json_stream`)."""
    if not path.is_file():
        raise InputError(f"{path}: missing (COCO layout: annotations/instances_*2017.json, captions_*2017.json)")
    return iter_array(path, key)


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
        path = self.root / "annotations" / "instances_val2017.json"
        categories = list(_array(path, "categories"))
        for position, category in enumerate(categories, start=1):
            if not isinstance(category, dict) or type(category.get("id")) is not int or not isinstance(
                    category.get("name"), str):
                raise InputError(f"{path}:1: category {position} needs an integer \"id\" and a \"name\", "
                                 f"got {category!r:.80}")
        categories.sort(key=lambda c: c["id"])
        self.classes = ClassList.from_names([c["name"] for c in categories], str(self.root / "annotations"),
                                            [str(c["id"]) for c in categories])

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
            for note in _array(path, "annotations"):
                category = str(note.get("category_id"))
                if category not in self.classes.index:
                    raise InputError(f"{path}:1: annotation {note.get('id')} has category {category}, not in the "
                                     f"categories of instances_val2017.json")
                labels[note.get("image_id")].add(self.classes.index[category])
            captions = self._captions(part)
            for position, image in enumerate(_array(path, "images"), start=1):
                if not isinstance(image, dict) or not {"id", "file_name"} <= image.keys():
                    raise InputError(f"{path}:{position}: an image needs \"id\" and \"file_name\", got {image!r:.80}")
                image_id = str(image["id"])
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
        for note in _array(self.root / "annotations" / f"captions_{part}.json", "annotations"):
            caption = " ".join(str(note.get("caption", "")).split())
            if caption:
                by_image[note.get("image_id")].append((note.get("id", 0), caption))
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
