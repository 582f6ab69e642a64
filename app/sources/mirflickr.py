"""MIRFLICKR-25K in the layout of its text form (the 20,015-photo subset of the cross-modal retrieval
papers), streamed in line order:

    all_imgs.txt     one photo a line: `mirflickr/im<N>.jpg`
    all_tags.txt     its user tags, comma-separated (a blank line: no tags)
    all_labels.txt   24 space-separated 0/1 values, in the order of `LABELS`
    mirflickr/       the photos, `im<N>.jpg` (optional: without it every photo has tags only)

Line i of each file is the same photo; CRLF or LF line breaks. A photo's id is `im<N>` (the file
name without `.jpg`). Every label is given for every photo: the labels are exhaustive. There is no
official split: the photos are split by a seeded hash of their id (`photo.HashSplit`, the caller's),
or by a split file of `id,split` lines (`im<N>` or `mirflickr/im<N>.jpg`, then train, validation or
test), which must name every photo once.
"""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from app.badrows import BadRows
from app.errors import InputError
from app.sources.classes import ClassList
from app.sources.photo import SPLITS, CollectionPhoto
from app.sources.textfiles import CR_HINT, NumberedLines
from app.text.normalize import normalize_name, normalize_tags, split_tag_list

IMAGES, TAGS, LABEL_FILE = "all_imgs.txt", "all_tags.txt", "all_labels.txt"
LABELS = ("animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor", "lake", "male",
          "night", "people", "plant_life", "portrait", "river", "sea", "sky", "structures", "sunset", "transport",
          "tree", "water")
PHOTOS = "mirflickr"  # the photos' folder under the root, as all_imgs.txt names it
_lines = functools.partial(NumberedLines, layout="MIRFLICKR-25K")


def photo_id(entry: str, where: str) -> str:
    """`im<N>` of an all_imgs.txt entry (`mirflickr/im<N>.jpg`) or of an id already in that form, by
    the text rule (`app.text.normalize`).

    Raises:
        InputError: `where: empty id` (an empty line, or only invisible characters).
    """
    return normalize_name(entry.strip().replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0], "id", where)


def count_lines(path: Path) -> tuple[int, bool]:
    """`(the lines of a file, whether a CR ends a line alone)`, streamed; a last line without a line break counts."""
    count, last, lone_cr = 0, b"\n", False
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            lone_cr = lone_cr or (last == b"\r" and block[:1] != b"\n") or re.search(rb"\r(?!\n|$)", block) is not None
            count, last = count + block.count(b"\n"), block[-1:]
    return count + (last != b"\n"), lone_cr or last == b"\r"


def read_split_file(path: Path) -> dict:
    """`{photo id: (split, line number)}` of a split file: `id,split` lines, an optional `id,split` header.

    Raises:
        InputError: `FILE:LINE: what` for a malformed line, an unknown split or a repeated id.
    """
    splits: dict = {}
    with contextlib.ExitStack() as stack:
        lines = NumberedLines(Path(path), stack, "split file (id,split lines)")
        while (line := lines.next()) is not None:
            fields = [f.strip() for f in line.split(",")]
            if fields == [""] or (lines.line_no == 1 and [f.lower() for f in fields] == ["id", "split"]):
                continue
            if len(fields) != 2 or not fields[0]:
                raise InputError(f"{lines.where}: expected `id,split`, got {line!r:.80}")
            if fields[1] not in SPLITS:
                raise InputError(f"{lines.where}: split {fields[1]!r} is not one of {', '.join(SPLITS)}")
            key = photo_id(fields[0], lines.where)
            if key in splits:
                raise InputError(f"{lines.where}: {key} repeats (first on line {splits[key][1]})")
            splits[key] = (fields[1], lines.line_no)
    return splits


@dataclass
class MirFlickr:
    """Reads a MIRFLICKR-25K folder.

    Args:
        root: the folder holding all_imgs.txt, all_tags.txt, all_labels.txt (and mirflickr/).
        split_file: `id,split` lines that split the photos (None: the caller's hash split does).
    """

    root: Path
    split_file: Optional[Path] = None

    def __post_init__(self):
        self.root = Path(self.root)
        self.classes = ClassList.from_names(list(LABELS), f"{self.root} (MIRFLICKR-25K's 24 labels)")
        files = [self.root / name for name in (IMAGES, TAGS, LABEL_FILE)]
        for path in files:
            if not path.is_file():
                raise InputError(f"{path}: missing (MIRFLICKR-25K layout: see docs/your-own-photos.md)")
        counted = {path.name: count_lines(path) for path in files}
        counts = {name: n for name, (n, _) in counted.items()}
        if len(set(counts.values())) > 1:
            lone_cr = [name for name, (_, cr) in counted.items() if cr]
            raise InputError(f"{self.root}: the files disagree in line count ("
                             + ", ".join(f"{name} {n:,}" for name, n in counts.items())
                             + "); line i of each must be the same photo"
                             + (f" ({', '.join(lone_cr)}: line breaks that are a lone CR, {CR_HINT})"
                                if lone_cr else ""))
        self.splits = read_split_file(self.split_file) if self.split_file else None

    @property
    def images(self) -> Optional[Path]:
        """The root when it holds the photos' folder, else None (tags only)."""
        return self.root if (self.root / PHOTOS).is_dir() else None

    def made_from(self) -> tuple:
        return tuple(self.root / name for name in (IMAGES, TAGS, LABEL_FILE)) + (
            (Path(self.split_file),) if self.split_file else ())

    def photos(self, bad: BadRows) -> Iterator[CollectionPhoto]:
        """One pass over the photos in line order."""
        listed = set()
        with contextlib.ExitStack() as stack:
            images, tags, labels = (_lines(self.root / name, stack) for name in (IMAGES, TAGS, LABEL_FILE))
            while (entry := images.next()) is not None:
                image_id = photo_id(entry, images.where)
                tag_line, label_line = tags.next(), labels.next()
                listed.add(image_id)
                yield CollectionPhoto(image_id, images.where, entry.strip().replace("\\", "/"),
                                      self._tags(tag_line, tags, bad), labels=_positives(label_line, labels.where),
                                      split=self._split_of(image_id, images.where))
        if self.splits is not None:
            self._check_split_file_ids(listed)

    @staticmethod
    def _tags(line: str, tags: NumberedLines, bad: BadRows) -> list:
        """A line's tags by the tag-list and text rules; a tag of only invisible characters is counted."""
        kept, invisible = normalize_tags(split_tag_list(line))
        for tag in invisible:
            bad.add("tag_only_invisible", str(tags.path), tags.line_no, tag)
        return kept

    def _split_of(self, image_id: str, where: str) -> Optional[str]:
        if self.splits is None:
            return None
        found = self.splits.get(image_id)
        if found is None:
            raise InputError(f"{where}: {image_id} is not in the split file {self.split_file} (it must name every "
                             f"photo)")
        return found[0]

    def _check_split_file_ids(self, listed: set) -> None:
        """Refuses a split file naming a photo that all_imgs.txt lacks (a split of another collection)."""
        for key, (_, line) in self.splits.items():
            if key not in listed:
                raise InputError(f"{self.split_file}:{line}: {key} is not in {self.root / IMAGES}")


def _positives(line: str, where: str) -> list:
    """The label indices whose value is 1 on an all_labels.txt line.

    Raises:
        InputError: `FILE:LINE: what` unless the line holds 24 values, each 0 or 1.
    """
    values = line.split()
    if len(values) != len(LABELS):
        raise InputError(f"{where}: {len(values)} label values, expected {len(LABELS)} ({', '.join(LABELS)})")
    for index, value in enumerate(values):
        if value not in ("0", "1"):
            raise InputError(f"{where}: label {LABELS[index]!r} (column {index + 1}) is {value!r}, not 0 or 1")
    return [index for index, value in enumerate(values) if value == "1"]
