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

A list field (tags, labels, negatives) in a CSV is split by the one tag-list rule of
`app.text.normalize`: on `,` and `|`, white space around each value dropped, inside it kept
(`cat,pet|dog` is three tags, `new york` one; a labels field that is exactly one class's name is
that class). In JSONL a list is a JSON array (tags: of strings; labels: of strings or integers) or a
string, split the same way. Ids, tags, labels and text follow the text rule (invisible characters
removed, NFC); a tag that holds only invisible characters is counted as `tag_only_invisible`.
Every JSON value is type-checked (`id`: a string or an integer; `image`, `text`, `split`: strings;
null is the same as absent). Every bad row stops the run with `file:line: what`.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Iterator

from app.badrows import BadRows
from app.sources.classes import ClassList
from app.sources.json_stream import typed
from app.sources.photo import UNLABELLED, CollectionPhoto
from app.sources.textfiles import open_text
from app.errors import InputError
from app.fileio import json_loads_unique
from app.text.normalize import normalize_name, normalize_tags, normalize_text, split_tag_list, unicode_problem

ALIASES = {"id": "id", "imageid": "id", "image_id": "id", "image": "image", "path": "image", "url": "image",
           "tags": "tags", "text": "text", "caption": "text", "labels": "labels", "label": "labels",
           "negatives": "negatives", "split": "split"}
SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation", "test": "test",
               "unlabelled": UNLABELLED, "unlabeled": UNLABELLED}
LABEL_MODES = ("exhaustive", "partial")
LIST_FIELDS = {"tags": (str,), "labels": (str, int), "negatives": (str, int)}
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # a byte that is not UTF-8, read with surrogateescape


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
    """A list field: a JSON array as is (each value stripped, empty ones dropped), a string split by
    the tag-list rule (`app.text.normalize.split_tag_list`). Values are not normalised."""
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return split_tag_list("" if value is None else value)


def check_types(row: dict, where: str) -> None:
    """Refuses a JSON value of the wrong type (a CSV's values are strings): `where: key must be ...`."""
    for key, value in row.items():
        if value is None:
            continue
        if key in LIST_FIELDS:
            kinds = LIST_FIELDS[key]
            good = isinstance(value, str) or (isinstance(value, list) and all(
                isinstance(v, kinds) and not isinstance(v, bool) for v in value))
            expected = "a string or a list of strings" + (" or integers" if int in kinds else "")
        else:
            good = isinstance(value, str) or (key == "id" and isinstance(value, int) and not isinstance(value, bool))
            expected = "a string" + (" or an integer" if key == "id" else "")
        if not good:
            raise InputError(f"{where}: {key} must be {expected}, got {typed(value)}")


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
        """Rows with the line each starts on; a byte that is not UTF-8 and an unclosed quote are
        reported at their own line (a row whose quoted field holds line breaks spans several lines)."""
        with open_lines(self.path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape",
                                                            newline="") as text:
            reader = csv.reader(text, strict=True)
            start = 1
            try:
                header = next(reader, None)
                if header is None:
                    raise InputError(f"{self.path}: empty manifest (no header)")
                self._check_utf8(header, 1)
                names = self._columns(header)
                start = reader.line_num + 1
                for fields in reader:
                    line, start = start, reader.line_num + 1
                    if not fields:
                        continue
                    self._check_utf8(fields, line)
                    if len(fields) != len(names):
                        raise InputError(f"{self.path}:{line}: expected {len(names)} fields "
                                         f"({','.join(header)}), got {len(fields)}")
                    yield line, dict(zip(names, fields))
            except csv.Error as err:
                unclosed = " (a quoted field opened here is never closed)" if "end of data" in str(err) else ""
                raise InputError(f"{self.path}:{start}: cannot parse CSV: {err}{unclosed}") from None

    def _check_utf8(self, fields: list, line: int) -> None:
        """Refuses a row holding a byte that is not UTF-8, at the line of that byte."""
        for index, value in enumerate(fields):
            found = _NOT_UTF8.search(value)
            if found:
                at = line + sum(f.count("\n") for f in fields[:index]) + value.count("\n", 0, found.start())
                byte = ord(found.group()) - 0xDC00
                raise InputError(f"{self.path}:{at}: not UTF-8 (byte 0x{byte:02x} in field {index + 1})")

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
                except UnicodeDecodeError as err:
                    raise InputError(f"{self.path}:{line_no}: not UTF-8 (byte 0x{err.object[err.start]:02x})") from None
                except ValueError as err:
                    raise InputError(f"{self.path}:{line_no}: not a JSON object: {err}") from None
                except RecursionError:
                    raise InputError(f"{self.path}:{line_no}: not a manifest row: JSON nested too deeply") from None
                if not isinstance(row, dict):
                    raise InputError(f"{self.path}:{line_no}: not a JSON object: {line[:80]!r}")
                if b"\\u" in line:  # a JSON escape may name a lone surrogate, which no text can hold
                    self._check_unicode(row, line_no)
                yield line_no, self._keys(row, line_no)

    def _check_unicode(self, row: dict, line_no: int) -> None:
        for key, value in row.items():
            for i, text in enumerate(value if isinstance(value, list) else [value]):
                what = key if isinstance(value, str) else f"value {i + 1} of {key}"
                problem = isinstance(text, str) and unicode_problem(what, text)
                if problem:
                    raise InputError(f"{self.path}:{line_no}: {problem}")

    def _keys(self, row: dict, line_no: int) -> dict:
        """A JSONL row by canonical names, refusing a key given twice under two spellings (`ID`, `id`)."""
        keys, given = {}, {}
        for key, value in row.items():
            name = ALIASES.get(key.lower())
            if name is None:
                raise InputError(f"{self.path}:{line_no}: unknown key {key!r}")
            if name in keys:
                raise InputError(f"{self.path}:{line_no}: the keys {given[name]!r} and {key!r} both give the {name} "
                                 f"(give it once)")
            keys[name], given[name] = value, key
        return keys

    def _photo(self, row: dict, line_no: int, bad: BadRows) -> CollectionPhoto:
        where = f"{self.path}:{line_no}"
        check_types(row, where)
        image_id = normalize_name("" if row.get("id") is None else str(row["id"]), "id", where)
        split = row.get("split")
        if split not in (None, ""):
            split = SPLIT_NAMES.get(split.strip().lower())
            if split is None:
                raise InputError(f"{where}: split {row['split']!r} is not one of train, validation, test, unlabelled")
        negatives = None
        if "negatives" in row:
            if self.labels == "exhaustive":
                raise InputError(f"{where}: a negatives column with --labels exhaustive (every unlisted class is "
                                 f"already negative); use --labels partial")
            negatives = [self.classes.lookup(n, where) for n in split_list(row["negatives"])]
        text = normalize_text(row.get("text") or "")
        if "text" in row and not text:
            bad.add("empty_text", str(self.path), line_no, image_id)
        tags, invisible = normalize_tags(split_list(row.get("tags")))
        for tag in invisible:
            bad.add("tag_only_invisible", str(self.path), line_no, tag)
        return CollectionPhoto(image_id, where, (row.get("image") or "").strip(), tags, text,
                               [self.classes.lookup(c, where) for c in self._label_list(row.get("labels"))],
                               negatives, split or None)

    def _label_list(self, value) -> list:
        """`split_list`, except that a whole field naming one class (`traffic light`) is that class."""
        if isinstance(value, str) and normalize_text(value) in self.classes.index:
            return [value]
        return split_list(value)
