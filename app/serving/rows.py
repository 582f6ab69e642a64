"""Input rows for `app/predict.py`: photos from CSV or JSONL, or one from the command line.

Each row is checked on its own: a row that cannot be used (a line that is not JSON, a value that is
not UTF-8 or of the wrong type, an image that cannot be read) keeps its place with an `error` that
names its file and line, so that the caller reports it and scores the other rows.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from app.errors import InputError
from app.fileio import RepeatedKeyError, json_loads_unique
from app.text.normalize import normalize_tags, normalize_text, split_tag_list, unicode_problem

COLUMNS = ("image_path", "tags")
TEXT_NAMES = ("text", "caption")  # one input under two names, as in a manifest
KNOWN = (*COLUMNS, "image_id", *TEXT_NAMES)  # what a row may hold; other keys or columns are reported as not read


@dataclass
class Row:
    """One photo to score.

    Args:
        where: `file:line` (or the command-line flag) that errors name.
        image_path: as given; a string unless `error` says otherwise.
        tags: the tags as a list of strings, or the value given when the row is not `scorable`.
        scorable: False when the row's input cannot be used: it is reported, not scored.
        error: why the row is not scorable, or why its image is not used.
        note: something the output should say that is not an error.
        image: the image bytes, or b"".
        image_id: the photo's id for `--format oid-csv` (an `image_id` column), or "".
        text: the photo's free text (a `text` column, such as a caption), or "".
        unread: the row's keys (columns) that are not inputs, such as `Caption` or `url`: the output warns.
    """

    where: str
    image_path: object
    tags: object
    scorable: bool = True
    error: str | None = None
    note: str | None = None
    image: bytes = b""
    image_id: str = ""
    text: str = ""
    unread: tuple = ()

    @classmethod
    def bad(cls, where: str, problem: str, image_path: object = None, tags: object = None) -> Row:
        """A row whose input cannot be used, with `problem` as its error."""
        return cls(where, image_path, tags, scorable=False, error=f"{where}: {problem}")


def read_rows(path: Path) -> Iterator[Row]:
    """Streams rows from a CSV (header `image_path,tags`) or JSONL file (`{"image_path", "tags"}`),
    with an optional `image_id` and `text` (or `caption`, its other name as in a manifest).

    Raises:
        OSError: the file cannot be opened.
        InputError: a CSV file whose header is not CSV, lacks `image_path` or `tags`, or repeats a column.
    """
    # utf-8-sig: a byte-order mark is read as nothing; surrogateescape: a line that is not UTF-8 is reported on its
    # own instead of ending the file
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        yield from (_jsonl_rows(handle, path) if path.suffix == ".jsonl" else _csv_rows(handle, path))


def _jsonl_rows(handle, path: Path) -> Iterator[Row]:
    for line_no, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            value = json_loads_unique(line)
        except json.JSONDecodeError as err:
            yield Row.bad(where, f"not JSON: {err.msg} (column {err.colno})")
            continue
        except RepeatedKeyError as err:
            yield Row.bad(where, f"not one JSON object: {err}")
            continue
        if not isinstance(value, dict):
            yield Row.bad(where, f"expected a JSON object, got {_typed(value)}")
        elif any(k not in value for k in COLUMNS):
            yield Row.bad(where, f"expected keys {list(COLUMNS)}, got {_clip(repr(sorted(value)))}{_meant(value)}")
        elif all(k in value for k in TEXT_NAMES):
            yield Row.bad(where, "keys 'text' and 'caption' are one input (caption is another name for text): give one")
        else:
            text = value.get("text", value.get("caption"))
            yield _with_unread(make_row(where, value["image_path"], value["tags"], value.get("image_id"), text), value)


def _csv_rows(handle, path: Path) -> Iterator[Row]:
    reader = csv.DictReader(handle, strict=True)
    try:
        header = reader.fieldnames
    except csv.Error as err:  # e.g. a column name over csv.field_size_limit()
        raise InputError(f"{path}:1: not a valid CSV header: {err}") from None
    if not header or any(c not in header for c in COLUMNS):
        raise InputError(f"{path}:1: expected a header with {','.join(COLUMNS)}; got {_clip(repr(header))}"
                         f"{_meant(header or [])}")
    repeated = sorted({c for c in reader.fieldnames if reader.fieldnames.count(c) > 1})
    if repeated:
        raise InputError(f"{path}:1: the column {repeated[0]!r} repeats (which one holds the photo's value?)")
    if all(name in reader.fieldnames for name in TEXT_NAMES):
        raise InputError(f"{path}:1: columns text and caption are one input (caption is another name for text): "
                         f"give one")
    text = next((name for name in TEXT_NAMES if name in reader.fieldnames), None)
    while True:
        start = reader.reader.line_num + 1  # the line this row starts on
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:  # e.g. a field over csv.field_size_limit(); the reader goes on after it
            if "end of data" in str(err):  # an unclosed quote took every line after it: nothing to go on with
                raise InputError(f"{path}:{start}: not valid CSV: a quoted field opened here is never closed") from None
            yield Row.bad(f"{path}:{reader.reader.line_num}", f"not valid CSV: {err}")
            continue
        where = f"{path}:{start}"
        if None in row:  # more fields than the header names (an unquoted comma in a caption?)
            yield Row.bad(where, f"{len(reader.fieldnames) + len(row[None])} fields, the header names "
                                 f"{len(reader.fieldnames)} (quote a value that holds a comma)")
            continue
        yield _with_unread(make_row(where, row["image_path"] or "", row["tags"], row.get("image_id"),
                                    row[text] if text else None), row)


def _with_unread(row: Row, keys) -> Row:
    """`row` with the keys it was given that are not inputs (a misspelt `Caption` would otherwise go unseen)."""
    row.unread = tuple(k for k in keys if k not in KNOWN)
    return row


def unread_warning(unread: tuple, most: int = 10) -> str:
    """The output's warning about a row's keys that are not inputs, with the input a key may have meant
    (the first `most` keys, each clipped)."""
    named = []
    for key in unread[:most]:
        meant = meant_input(key)
        named.append(_clip(repr(key), 60) + (f" (did you mean {meant!r}?)" if meant else ""))
    more = f" and {len(unread) - most} more" if len(unread) > most else ""
    return f"not read (the inputs are {', '.join(KNOWN)}): {', '.join(named)}{more}"


def meant_input(key: object) -> str | None:
    """The input a key names in another case, form or with invisible characters (`Caption`, `ｔｅｘｔ`), or None."""
    if not isinstance(key, str) or unicode_problem("key", key):
        return None
    folded = unicodedata.normalize("NFKC", normalize_text(key)).casefold()
    return next((k for k in KNOWN if k == folded and k != key), None)


def _meant(keys) -> str:
    """`: 'Tags' may be 'tags'`-style hints for the required inputs that are missing."""
    hints = [f"{k!r} may be {meant!r}" for k in keys if (meant := meant_input(k)) in COLUMNS and meant not in keys]
    return f" ({'; '.join(hints)})" if hints else ""


def make_row(where: str, image_path: object, tags: object, image_id: object = None, text: object = None) -> Row:
    """A row from the values given, or a bad row saying what is wrong with them.

    Args:
        where: `file:line` or the flag the values came from.
        image_path: a path string ("" for none).
        tags: a tag-list string (split on `,` and `|`), a list of tag strings, or None for none.
        image_id: the photo's id (optional; default: the image file's name without its suffix).
        text: the photo's free text (optional; for models that read text).
    """
    try:
        if not isinstance(image_path, str):
            raise TypeError(f"image_path must be a string, got {_typed(image_path)}")
        if image_id is not None and not isinstance(image_id, str):
            raise TypeError(f"image_id must be a string, got {_typed(image_id)}")
        if text is not None and not isinstance(text, str):
            raise TypeError(f"text must be a string, got {_typed(text)}")
        tag_list = split_tags(tags)
        texts = [("image_path", image_path), ("image_id", image_id or ""), ("text", text or "")]
        texts += [(f"tag {i}", t) for i, t in enumerate(tag_list, start=1)]
        problem = next(filter(None, (unicode_problem(what, text) for what, text in texts)), None)
        if problem:
            raise ValueError(problem)
    except (TypeError, ValueError) as err:
        return Row.bad(where, str(err), image_path, tags)
    return Row(where, image_path, tag_list, image_id=normalize_text(image_id or "") or Path(image_path).stem,
               text=normalize_text(text or ""))


def split_tags(value: object) -> list[str]:
    """A tag-list string or a list of tag strings -> the tags, each by the text rule (None: no tags).

    A string is split by the one tag-list rule of `app.text.normalize` (on `,` and `|`, as a
    manifest's tags column is); tags that are empty by the text rule (only invisible characters) go.

    Raises:
        TypeError: naming the value, if it is neither.
    """
    if isinstance(value, list):
        bad = next((i for i, t in enumerate(value) if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"tags must be a list of strings, got {_typed(value[bad])} at position {bad}")
        return normalize_tags(value)[0]
    if value is None:
        return []
    if not isinstance(value, str):
        raise TypeError(f"tags must be a comma-separated string or a list of strings, got {_typed(value)}")
    return normalize_tags(split_tag_list(value))[0]


def read_image(row: Row, base: Path) -> Row:
    """Reads a scorable row's image into `row.image`, or sets its `note` (no path) or `error`.

    Args:
        row: the row, changed in place.
        base: the folder relative image paths start from (the input file's).

    Returns:
        The row.
    """
    if not row.scorable:
        return row
    if not row.image_path:
        row.note = "no image given: scored without an image"
        return row
    file = base / row.image_path
    try:
        if not file.is_file():  # a directory, a device such as /dev/zero, a FIFO, or nothing
            reason = "not a regular file" if file.exists() else "No such file or directory"
            shown = row.image_path if file == Path(row.image_path) else f"{row.image_path} (as {file})"
            row.error = f"{row.where}: cannot read image {shown}: {reason}"
        else:
            row.image = file.read_bytes()
    except OSError as err:
        row.error = f"{row.where}: cannot read image {row.image_path}: {err.strerror or err}"
    return row


def _typed(value: object) -> str:
    """`int 5`, `list [1, 2]`: a JSON value's type and its start."""
    return f"{type(value).__name__} {_clip(json.dumps(value))}"


def _clip(text: str, most: int = 80) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."
