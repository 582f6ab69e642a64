"""Reading a photo manifest: CSV (with a header) or JSONL, streamed row by row.

Columns (CSV header names, JSONL keys; case-insensitive, aliases in brackets):
    id [imageid, image_id]   the photo's id, any non-empty string (required)
    image [path, url]        a path under --images, or a URL (optional)
    tags                     the user's tags (optional)
    text [caption]           free text such as a caption (optional)
    labels [label]           positive classes, by id or name (optional: a photo may have none)
    negatives                verified negative classes (`--labels partial` only; optional)
    split                    train, validation (or val), test, or unlabelled (optional; unlabelled
                             photos form the dataset's `yfcc` split: weak targets, no verified
                             labels, what pseudo_label.py's teacher scores)

In a CSV, a list field is split on `|` when it holds one, else on whitespace (a labels field that
is exactly one class's name, spaces included, is that class); in JSONL a list is a
JSON array (or a string, split the same way). Every bad row stops the run with `file:line: what`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterator

from app.badrows import BadRows
from app.sources.classes import ClassList
from app.sources.photo import UNLABELLED, CollectionPhoto
from app.sources.textfiles import open_text
from app.errors import InputError
from app.fileio import json_loads_unique

ALIASES = {"id": "id", "imageid": "id", "image_id": "id", "image": "image", "path": "image", "url": "image",
           "tags": "tags", "text": "text", "caption": "text", "labels": "labels", "label": "labels",
           "negatives": "negatives", "split": "split"}
SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation", "test": "test",
               "unlabelled": UNLABELLED, "unlabeled": UNLABELLED}
LABEL_MODES = ("exhaustive", "partial")


class _Raw(io.RawIOBase):
    """`app.sources.textfiles.open_text`'s handle (plain, gzip or bz2) as a raw stream, to buffer and iterate."""

    def __init__(self, handle):
        self.handle = handle

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self.handle.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self.handle.close()
        super().close()


def open_lines(path: Path):
    """A buffered binary reader of a plain, gzip or bz2 file (iterable by line)."""
    return io.BufferedReader(_Raw(open_text(path)), 1 << 20)


def split_list(value) -> list:
    """A list field: a JSON array as is, a string split on `|` if it holds one, else on whitespace."""
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    text = "" if value is None else str(value)
    parts = text.split("|") if "|" in text else text.split()
    return [p.strip() for p in parts if p.strip()]


class ManifestReader:
    """Streams a manifest's photos (a new pass for each iteration).

    Args:
        path: `.csv` or `.jsonl` (`.json`, `.ndjson`), plain, gzip or bz2.
        classes: the class list labels are looked up in.
        labels: `exhaustive` (every unlisted class is a verified negative) or `partial` (only the
            listed positives and the negatives column are verified).
    """

    def __init__(self, path: str | Path, classes: ClassList, labels: str = "exhaustive"):
        if labels not in LABEL_MODES:
            raise InputError(f"--labels must be one of {', '.join(LABEL_MODES)}. Received: {labels!r}")
        self.path, self.classes, self.labels = Path(path), classes, labels
        self.jsonl = self.path.name.lower().split(".gz")[0].split(".bz2")[0].endswith((".jsonl", ".json", ".ndjson"))

    def photos(self, bad: BadRows) -> Iterator[CollectionPhoto]:
        """One pass over the manifest; an empty caption is counted in `bad` (the photo is kept, without text)."""
        for line_no, row in self.rows():
            yield self._photo(row, line_no, bad)

    def rows(self) -> Iterator[tuple[int, dict]]:
        """`(line, {column: value})` of each row, columns by their canonical names (no label check)."""
        return self._jsonl_rows() if self.jsonl else self._csv_rows()

    def _csv_rows(self) -> Iterator[tuple[int, dict]]:
        with open_lines(self.path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
            reader = csv.reader(text, strict=True)
            try:
                header = next(reader, None)
                if header is None:
                    raise InputError(f"{self.path}: empty manifest (no header)")
                names = self._columns(header)
                for fields in reader:
                    if not fields:
                        continue
                    if len(fields) != len(names):
                        raise InputError(f"{self.path}:{reader.line_num}: expected {len(names)} fields "
                                         f"({','.join(header)}), got {len(fields)}")
                    yield reader.line_num, dict(zip(names, fields))
            except csv.Error as err:
                raise InputError(f"{self.path}:{reader.line_num}: cannot parse CSV: {err}") from None
            except UnicodeDecodeError as err:
                raise InputError(f"{self.path}:{reader.line_num + 1}: not UTF-8 ({err.reason})") from None

    def _columns(self, header: list) -> list:
        names = []
        for name in header:
            key = ALIASES.get(name.strip().lower())
            if key is None or key in names:
                what = "unknown" if key is None else "repeated"
                raise InputError(f"{self.path}:1: {what} column {name!r} (columns: id, image, tags, text, labels, "
                                 f"negatives, split)")
            names.append(key)
        if "id" not in names:
            raise InputError(f"{self.path}:1: no id column (header: {','.join(header)})")
        return names

    def _jsonl_rows(self) -> Iterator[tuple[int, dict]]:
        with open_lines(self.path) as raw:
            for line_no, line in enumerate(raw, start=1):
                if not line.strip():
                    continue
                try:
                    row = json_loads_unique(line.decode("utf-8-sig"))
                except (UnicodeDecodeError, ValueError) as err:
                    raise InputError(f"{self.path}:{line_no}: not a JSON object: {err}") from None
                if not isinstance(row, dict):
                    raise InputError(f"{self.path}:{line_no}: not a JSON object: {line[:80]!r}")
                keys = {}
                for key, value in row.items():
                    name = ALIASES.get(str(key).lower())
                    if name is None:
                        raise InputError(f"{self.path}:{line_no}: unknown key {key!r}")
                    keys[name] = value
                yield line_no, keys

    def _photo(self, row: dict, line_no: int, bad: BadRows) -> CollectionPhoto:
        where = f"{self.path}:{line_no}"
        image_id = str(row.get("id") or "").strip()
        if not image_id:
            raise InputError(f"{where}: empty id")
        split = row.get("split")
        if split not in (None, ""):
            split = SPLIT_NAMES.get(str(split).strip().lower())
            if split is None:
                raise InputError(f"{where}: split {row['split']!r} is not one of train, validation, test, unlabelled")
        negatives = None
        if "negatives" in row:
            if self.labels == "exhaustive":
                raise InputError(f"{where}: a negatives column with --labels exhaustive (every unlisted class is "
                                 f"already negative); use --labels partial")
            negatives = [self.classes.lookup(n, where) for n in split_list(row["negatives"])]
        text = "" if row.get("text") is None else str(row["text"]).strip()
        if "text" in row and not text:
            bad.add("empty_text", str(self.path), line_no, image_id)
        return CollectionPhoto(image_id, where, str(row.get("image") or "").strip(), split_list(row.get("tags")),
                               text, [self.classes.lookup(c, where) for c in self._label_list(row.get("labels"))],
                               negatives, split or None)

    def _label_list(self, value) -> list:
        """`split_list`, except that a whole field naming one class (`traffic light`) is that class."""
        if isinstance(value, str) and "|" not in value and value.strip() in self.classes.index:
            return [value.strip()]
        return split_list(value)
