"""NUS-WIDE in its real layout, streamed in image-list order.

    ImageList/Imagelist.txt                   one photo a line, a Windows path such as
                                              C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg
    ImageList/TrainImagelist.txt, TestImagelist.txt
                                              the official split (161,789 / 107,859), each in
                                              Imagelist.txt order (with or without the C:\\... prefix)
    NUS_WID_Tags/All_Tags.txt                 per line: the Flickr photo id, then its raw tags,
                                              separated by whitespace, in Imagelist.txt order
    ConceptsList/Concepts81.txt               the 81 concept names, one a line
    Groundtruth/AllLabels/Labels_<c>.txt      one 0/1 a line, in Imagelist.txt order, or else
    Groundtruth/TrainTestLabels/Labels_<c>_{Train,Test}.txt
                                              one 0/1 a line in the split list's order
    Flickr/<folder>/<n>_<flickr id>.jpg       the photos (many links are dead: a missing photo is
                                              counted and kept, tags only)

A photo's id is `<folder>/<n>_<flickr id>` (unique; a Flickr id may appear under two folders).
Ids, tags and concept names follow the text rule (`app.text.normalize`); a tag made only of
invisible characters is counted as `tag_only_invisible`. AllLabels is read when it holds any
`Labels_*.txt` (then a missing concept's file there is named), TrainTestLabels otherwise.
Every concept is labelled for every photo: the labels are exhaustive. The validation split is a
fixed hash cut of the train list (NUS-WIDE has none); the test list is the test split. A label value other than 0
or 1 (TrainTestLabels/Labels_lake_Train.txt has one) is counted as `label_not_0_or_1` and read as 0.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from app.badrows import BadRows
from app.sources.classes import ClassList, read_class_list
from app.sources.photo import CollectionPhoto, unit_hash
from app.sources.textfiles import NumberedLines
from app.errors import InputError
from app.text.normalize import normalize_name, normalize_tags

LIST_DIR, TAGS, CONCEPTS = "ImageList", "NUS_WID_Tags/All_Tags.txt", "ConceptsList/Concepts81.txt"
ALL_LABELS, SPLIT_LABELS = "Groundtruth/AllLabels/Labels_{concept}.txt", \
    "Groundtruth/TrainTestLabels/Labels_{concept}_{split}.txt"
SPLIT_LISTS = {"train": "TrainImagelist.txt", "test": "TestImagelist.txt"}
_lines = functools.partial(NumberedLines, layout="NUS-WIDE")


def list_entry(line: str) -> str:
    """`folder/n_flickrid.jpg` of an image-list line (any `C:\\...\\Flickr\\` prefix dropped)."""
    parts = [p for p in line.strip().replace("\\", "/").split("/") if p]
    return "/".join(parts[-2:])


@dataclass
class NusWide:
    """Reads a NUS-WIDE folder.

    Args:
        root: the folder holding ImageList/, NUS_WID_Tags/, ConceptsList/, Groundtruth/ (and Flickr/).
        validation: the fraction of the official train list cut out as the validation split (by a
            hash of the photo id: `photo.unit_hash`).
    """

    root: Path
    validation: float = 0.1

    def __post_init__(self):
        self.root = Path(self.root)
        self.classes: ClassList = read_class_list(self.root / CONCEPTS)
        self.all_labels = any((self.root / ALL_LABELS).parent.glob("Labels_*.txt"))

    @property
    def images(self) -> Path:
        return self.root / "Flickr"

    def made_from(self) -> tuple:
        return (self.root / LIST_DIR / "Imagelist.txt", self.root / TAGS, self.root / CONCEPTS)

    def photos(self, bad: BadRows) -> Iterator[CollectionPhoto]:
        """One pass over the photos in Imagelist.txt order."""
        with contextlib.ExitStack() as stack:
            images = _lines(self.root / LIST_DIR / "Imagelist.txt", stack)
            tags = _lines(self.root / TAGS, stack)
            lists = {split: _lines(self.root / LIST_DIR / name, stack) for split, name in SPLIT_LISTS.items()}
            heads = {split: self._next_entry(lines) for split, lines in lists.items()}
            labels = self._label_files(stack)
            while (line := images.next()) is not None:
                if not line.strip():
                    continue
                entry = list_entry(line)
                split = self._split_of(entry, heads, lists, images)
                heads[split] = self._next_entry(lists[split])
                image_id = normalize_name(entry.rsplit(".", 1)[0], "id", images.where)
                kept = "validation" if split == "train" and unit_hash(image_id) < self.validation else split
                yield CollectionPhoto(image_id, images.where, entry, self._tags(tags, entry, bad),
                                      labels=self._labels(labels, split, bad), split=kept,
                                      flickr_id=_flickr_id(entry, images.where))
            for split, head in heads.items():
                if head is not None:
                    raise InputError(f"{lists[split].where}: {head} is not in Imagelist.txt (or out of its order)")
            for lines in [tags] + [each for group in labels.values() for each in group]:
                _check_ended(lines)

    @staticmethod
    def _next_entry(lines: NumberedLines) -> Optional[str]:
        while (line := lines.next()) is not None:
            if line.strip():
                return list_entry(line)
        return None

    @staticmethod
    def _split_of(entry: str, heads: dict, lists: dict, images: NumberedLines) -> str:
        found = [split for split, head in heads.items() if head == entry]
        if len(found) == 2:
            raise InputError(f"{lists['test'].where}: {entry} is in two splits (also {lists['train'].where}): "
                             f"a train/test leak")
        if not found:
            raise InputError(f"{images.where}: {entry} is next in neither TrainImagelist.txt nor TestImagelist.txt "
                             f"(each must list its photos in Imagelist.txt order)")
        return found[0]

    def _tags(self, tags: NumberedLines, entry: str, bad: BadRows) -> list:
        line = tags.next()
        if line is None:
            raise InputError(f"{tags.path}:{tags.line_no + 1}: ends before Imagelist.txt (no line for {entry})")
        fields = line.split()
        if not fields or fields[0] != str(_flickr_id(entry, tags.where)):
            raise InputError(f"{tags.where}: photo id {fields[0] if fields else ''!r}, but Imagelist.txt has "
                             f"{entry} here (the files must be in one order)")
        kept, invisible = normalize_tags(fields[1:])
        for tag in invisible:
            bad.add("tag_only_invisible", str(tags.path), tags.line_no, tag)
        return kept

    def _label_files(self, stack: contextlib.ExitStack) -> dict:
        """`{split or None: [lines of each concept]}`: one set for AllLabels, one per split otherwise."""
        if self.all_labels:
            return {None: [_lines(self.root / ALL_LABELS.format(concept=c), stack) for c in self.classes.names]}
        return {split: [_lines(self.root / SPLIT_LABELS.format(concept=c, split=split.title()), stack)
                        for c in self.classes.names] for split in SPLIT_LISTS}

    def _labels(self, files: dict, split: str, bad: BadRows) -> list:
        positives = []
        for index, lines in enumerate(files[None] if self.all_labels else files[split]):
            value = lines.next()
            if value is None:
                raise InputError(f"{lines.path}:{lines.line_no + 1}: ends before its image list")
            value = value.strip()
            if value not in ("0", "1"):
                bad.add("label_not_0_or_1", str(lines.path), lines.line_no, value)
            elif value == "1":
                positives.append(index)
        return positives


def _check_ended(lines: NumberedLines) -> None:
    """Refuses a file read in step with Imagelist.txt that has lines left over (it belongs to another list)."""
    while (line := lines.next()) is not None:
        if line.strip():
            raise InputError(f"{lines.where}: a line past the end of its image list (the file is longer than the "
                             f"list it must follow line by line)")


def _flickr_id(entry: str, where: str) -> int:
    stem = entry.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    try:
        return int(stem.rsplit("_", 1)[-1])
    except ValueError:
        raise InputError(f"{where}: {entry!r} is not <folder>/<n>_<flickr id>.jpg") from None
