"""Streaming readers for the Open Images V5 CSV files (real names, real formats)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.badrows import BadRows
from app.sources.csvread import BOM, BadLine, CsvChunk, CsvReader, arrow_to_numpy, parse_line
from app.errors import InputError
from app.fileio import LINE_BREAKS

SPLITS = ("train", "validation", "test")
MID_RE = re.compile(r"/[mg]/[0-9a-z_]+\Z")
# The photo part of a Flickr static URL: `{id}_{secret}[_{size}].{ext}`.
FLICKR_FILE_RE = re.compile(r"(\d+)_[0-9a-f]+(?:_[a-z0-9]+)?\.(?:jpe?g|png|gif)\Z", re.IGNORECASE)
FLICKR_PAGE_RE = re.compile(r"/photos/[^/]+/(\d+)")

IMAGE_COLUMNS = ("ImageID", "OriginalURL", "OriginalMD5")
# Real file names, most complete first: `{split}` is train, validation or test. The full human
# labels come before the boxable subset, which lacks the verified labels of every train photo
# outside it.
IMAGE_FILES = ("{split}-images-with-labels-with-rotation.csv", "{split}-images-with-rotation.csv",
               "{split}-images-boxable-with-rotation.csv")
HUMAN_LABEL_FILES = ("{split}-annotations-human-imagelabels.csv", "{split}-annotations-human-imagelabels-boxable.csv")
LABEL_COLUMNS = ("ImageID", "LabelName", "Confidence")
# ImageID: 16 lower-case hex digits, read as the 64-bit number they spell (same order as the text),
# two characters at a time: `_HEX_PAIRS[two bytes read as little-endian uint16]` is their byte
# value, or 256 if either is not a lower-case hex digit.
_HEX = np.full(256, 256, dtype=np.uint16)
_HEX[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16)
_PAIRS = np.arange(1 << 16)
_HEX_PAIRS = np.where((_HEX[_PAIRS & 255] < 16) & (_HEX[_PAIRS >> 8] < 16),
                      _HEX[_PAIRS & 255] * 16 + _HEX[_PAIRS >> 8], 256).astype(np.uint16)


@dataclass(frozen=True)
class OidImage:
    """One row of an Open Images image-metadata file."""

    image_id: str
    subset: str
    flickr_id: int
    url: str
    md5: str
    rotation: float
    line_no: int
    thumbnail_url: str = ""


@dataclass(frozen=True)
class OidPaths:
    """Where the Open Images files of a run are; `find` fills it from a folder by real names."""

    classes: Path
    hierarchy: Path
    images: dict
    human_labels: dict
    machine_labels: dict

    @classmethod
    def find(cls, oid_dir: str | Path, **overrides) -> "OidPaths":
        """Finds files by their real Open Images names; keyword overrides win.

        Args:
            oid_dir: folder holding the downloaded CSV/JSON files.
            **overrides: `classes`, `hierarchy` (paths) or `images`, `human_labels`,
                `machine_labels` (dicts split -> path).

        Returns:
            The resolved paths. Per split, the image and human-label files are required.
        """
        from app import resources

        root = Path(oid_dir)

        def first(*names: str) -> Path | None:
            return find_first(root, names)

        images, human, machine = {}, {}, {}
        for split in SPLITS:
            images[split] = find_first(root, IMAGE_FILES, split)
            human[split] = find_first(root, HUMAN_LABEL_FILES, split)
            machine[split] = first(f"{split}-annotations-machine-imagelabels.csv")
        classes, hierarchy = overrides.pop("classes", None), overrides.pop("hierarchy", None)
        found = cls(
            classes=Path(classes) if classes else first("challenge-2019-classes-description-500.csv")
            or resources.CHALLENGE_CLASSES_CSV,
            hierarchy=Path(hierarchy) if hierarchy else first("challenge-2019-label500-hierarchy.json",
                                                              "bbox_labels_600_hierarchy.json")
            or resources.HIERARCHY_JSON,
            images={**images, **overrides.pop("images", {})},
            human_labels={**human, **overrides.pop("human_labels", {})},
            machine_labels={**machine, **overrides.pop("machine_labels", {})},
        )
        if overrides:
            raise TypeError(f"unknown OidPaths overrides: {sorted(overrides)}")
        missing = [f"{kind} for {split}" for split in SPLITS
                   for kind, table in (("image metadata", found.images), ("human labels", found.human_labels))
                   if table.get(split) is None]
        if missing:
            raise FileNotFoundError(f"{root}: Open Images files not found: {', '.join(missing)}")
        return found


def find_first(root: str | Path, names: tuple, split: str = "") -> Path | None:
    """The first of `names` (with `{split}` filled in) that exists in `root`, or None."""
    paths = (Path(root) / name.format(split=split) for name in names)
    return next((path for path in paths if path.exists()), None)


def flickr_id_from_url(url: str) -> int | None:
    """Extracts the Flickr photo id from an Open Images OriginalURL.

    Handles `farmN.staticflickr.com/server/ID_secret_o.jpg`, `cN.staticflickr.com/farm/server/...`,
    `live.staticflickr.com/server/...` (and `static.flickr.com`), extra slashes, query strings,
    and `www.flickr.com/photos/USER/ID` page URLs.

    Returns:
        The id, or None when the URL holds none.
    """
    parts = urlsplit(url.strip())
    if "flickr" not in parts.netloc.lower():
        return None
    path = re.sub(r"/{2,}", "/", parts.path).rstrip("/")
    match = FLICKR_FILE_RE.search(path.rsplit("/", 1)[-1])
    if match is None:
        match = FLICKR_PAGE_RE.search(path)
    return int(match.group(1)) if match else None


def read_classes(path: str | Path, any_id: bool = False) -> list[tuple[str, str]]:
    """Reads `MID,DisplayName` rows (no header), e.g. `challenge-2019-classes-description-500.csv`.

    With `any_id` (a dataset's or run's own classes.csv), a class id need not be a MID: collections
    (`app.sources`) name their classes freely.

    Raises:
        InputError: naming the file and line, for a malformed row or a repeated MID, or for no rows.
    """
    path = Path(path)
    lines = path.read_bytes().removeprefix(BOM).replace(b"\r\n", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out, seen = [], {}
    for line_no, raw in enumerate(lines, start=1):
        try:
            mid, name = parse_line(raw, 2)
        except BadLine as err:
            raise InputError(f"{path}:{line_no}: expected 'MID,DisplayName' ({err}), got {raw[:200]!r}") from None
        if not (MID_RE.match(mid) or (any_id and mid)):
            raise InputError(f"{path}:{line_no}: expected a MID such as /m/0bt9lr, got {mid!r}")
        if any(ch in LINE_BREAKS for ch in name):
            raise InputError(f"{path}:{line_no}: a class name holding a line break, {name!r}: some readers of "
                             f"classes.csv would split it")
        if mid in seen:
            raise InputError(f"{path}:{line_no}: class {mid} repeats line {seen[mid]}")
        seen[mid] = line_no
        out.append((mid, name))
    if not out:
        raise InputError(f"{path}: no classes (empty file)")
    return out


def image_keys(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Reads ImageIDs (16 lower-case hex digits) as uint64 keys, vectorised.

    Rows usually come image by image, so each run of equal ids is decoded once.

    Args:
        column: a pyarrow string array.

    Returns:
        `(keys, ok)`: the numbers the ids spell (sorting them sorts the ids), 0 where `ok` is False.
    """
    count = len(column)
    if count == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=bool)
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32)[column.offset: column.offset + count + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    sized = np.diff(offsets) == 16
    if sized.all() and offsets[-1] - offsets[0] == 16 * count:
        text = data[offsets[0]: offsets[-1]].reshape(count, 16)
    else:
        text = np.zeros((count, 16), dtype=np.uint8)  # byte 0 is not a hex digit
        text[sized] = data[offsets[:-1][sized, None] + np.arange(16)]
    halves = text.view("<u8")
    heads = np.flatnonzero(np.r_[True, (halves[1:] != halves[:-1]).any(axis=1)])
    pairs = _HEX_PAIRS[text[heads].view("<u2")]
    ok = pairs.max(axis=1, initial=0) < 256
    keys = np.where(ok, pairs.astype(np.uint8).view(">u8").reshape(len(heads)), 0).astype(np.uint64)
    runs = np.diff(np.r_[heads, count])
    return np.repeat(keys, runs), np.repeat(ok, runs)


def image_id_text(key: int) -> str:
    """The ImageID spelled by an `image_keys` key."""
    return f"{int(key):016x}"


class ImageIdKeys:
    """How a file's ImageIDs become uint64 keys whose order is the ids' order: Open Images ids (16
    lower-case hex digits, the number they spell). `app.evaluation.image_ids` keys ids of any form."""

    def keys(self, column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """`(keys, ok)` of a string column (see `image_keys`)."""
        return image_keys(column)

    def text(self, key: int) -> str:
        """The ImageID of a key."""
        return image_id_text(key)


HEX_IDS = ImageIdKeys()


def record_rejects(chunk: CsvChunk, bad: BadRows, prefix: str, path: Path) -> None:
    """Counts the lines of a chunk that could not be parsed, as `{prefix}_{reason}`."""
    for reject in chunk.rejects:
        bad.add(f"{prefix}_{reject.reason}", str(path), reject.line, reject.raw)


def warn_if_empty(reader: CsvReader, bad: BadRows) -> None:
    """After reading: a warning for a 0-byte or header-only file."""
    if reader.header is None:
        bad.warn(f"{reader.path}: empty file (0 bytes)")
    elif reader.data_lines == 0:
        bad.warn(f"{reader.path}: no data rows (header only)")


def read_images(path: str | Path, bad: BadRows) -> Iterator[OidImage]:
    """Streams an image-metadata file (`*-images-*with-rotation.csv`).

    Unparseable rows (wrong field count, not UTF-8, a broken quote), a malformed ImageID, no Flickr
    id in OriginalURL or a bad Rotation are counted in `bad` and skipped; an empty file is a warning.

    Raises:
        InputError: for a header without ImageID, OriginalURL or OriginalMD5.
    """
    path = Path(path)
    reader = CsvReader(path, IMAGE_COLUMNS, optional=("Subset", "Rotation", "Thumbnail300KURL"))
    for chunk in reader:
        record_rejects(chunk, bad, "oid", path)
        yield from _images_of(chunk, str(path), bad)
    warn_if_empty(reader, bad)


def _images_of(chunk: CsvChunk, name: str, bad: BadRows) -> Iterator[OidImage]:
    _, ok = image_keys(chunk.columns["ImageID"])
    rows = {column: values.to_pylist() for column, values in chunk.columns.items()}
    blank = [""] * len(chunk)
    subsets, rotations = rows.get("Subset", blank), rows.get("Rotation", blank)
    thumbnails = rows.get("Thumbnail300KURL", blank)
    for i, line_no in enumerate(chunk.lines.tolist()):
        image_id, url = rows["ImageID"][i], rows["OriginalURL"][i]
        if not ok[i]:
            bad.add("oid_bad_image_id", name, line_no, image_id)
            continue
        flickr_id = flickr_id_from_url(url)
        if flickr_id is None:
            bad.add("oid_no_flickr_id", name, line_no, url)
            continue
        try:
            rotation = float(rotations[i] or "0")
        except ValueError:
            bad.add("oid_bad_rotation", name, line_no, rotations[i])
            continue
        yield OidImage(image_id, subsets[i], flickr_id, url, rows["OriginalMD5"][i], rotation, line_no,
                       thumbnails[i])


@dataclass
class LabelRows:
    """The valid rows of one chunk of a label file."""

    image: np.ndarray  # uint64 ImageID keys (`image_keys`)
    label: np.ndarray  # int32 indices into the MID list
    value: np.ndarray  # float64 confidences
    lines: np.ndarray  # int64 line numbers


@dataclass
class LabelTable:
    """A whole label file as arrays: one row per (image, class), sorted by ImageID, then class."""

    images: np.ndarray  # sorted distinct ImageID keys (uint64)
    image: np.ndarray  # row -> index into `images`
    label: np.ndarray  # row -> index into `mids`
    value: np.ndarray  # row -> confidence (0 or 1 for human labels)
    mids: list

    def image_ids(self) -> list[str]:
        """The ImageIDs of `images`, as text."""
        return [image_id_text(key) for key in self.images.tolist()]


class _AnyMid(dict):
    """A MID index that gives every well-formed MID the next index."""

    def get(self, mid, default=None):
        return self.setdefault(mid, len(self)) if MID_RE.match(mid) else default


def iter_label_rows(path: str | Path, bad: BadRows, mids: Mapping[str, int], machine: bool = False,
                    ids: "ImageIdKeys | None" = None) -> Iterator[LabelRows]:
    """Streams an image-level label file (`ImageID,Source,LabelName,Confidence`) in chunks of valid rows.

    Counted in `bad` as `{human|machine}_label_{reason}`: unparseable lines, a malformed ImageID, a
    bad confidence (human: 0 or 1; machine: in [0, 1]), a malformed MID, and a MID not in `mids`
    (`unknown_class` for human labels; for machine labels a skip, `outside_classes`, since such a
    MID is usually a valid Open Images class outside the class list). An empty file is a warning.

    Args:
        path: plain, gzip or bz2 file.
        bad: receives the counts.
        mids: `{mid: index}` of the classes to keep.
        machine: a machine-label file.
        ids: how ImageIDs become keys (default: 16 hex digits, `image_keys`).
    """
    path = Path(path)
    kind = "machine_label" if machine else "human_label"
    reader = CsvReader(path, LABEL_COLUMNS, numbers=("Confidence",))
    for chunk in reader:
        record_rejects(chunk, bad, kind, path)
        yield _check_labels(chunk, str(path), bad, mids, kind, machine, ids or HEX_IDS)
    warn_if_empty(reader, bad)


def _check_labels(chunk: CsvChunk, name: str, bad: BadRows, mids: Mapping[str, int], kind: str,
                  machine: bool, ids: "ImageIdKeys") -> LabelRows:
    keys, id_ok = ids.keys(chunk.columns["ImageID"])
    label, formed = mid_index(chunk.columns["LabelName"], mids)
    value = chunk.numbers("Confidence")
    value_ok = ((value >= 0) & (value <= 1)) if machine else ((value == 0) | (value == 1))
    good = id_ok & value_ok & formed

    def report(mask: np.ndarray, reason: str, record=bad.add_many) -> None:
        where = np.flatnonzero(mask)
        texts = [",".join(_text(c[int(i)].as_py()) for c in chunk.columns.values()) for i in where[:bad.max_examples]]
        record(f"{kind}_{reason}", name, chunk.lines[where], texts)

    report(~id_ok, "bad_image_id")
    report(id_ok & ~(value_ok & formed), "bad_value")
    report(good & (label < 0), "outside_classes" if machine else "unknown_class",
           bad.skip_many if machine else bad.add_many)
    keep = good & (label >= 0)
    return LabelRows(keys[keep], label[keep], value[keep], chunk.lines[keep])


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def mid_index(column: pa.Array, mids: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the index of its MID in `mids` (-1 if absent) and whether it is a well-formed MID (or a
    class id of `mids`: a collection's classes need not be MIDs)."""
    encoded = pc.dictionary_encode(column)
    names = encoded.dictionary.to_pylist()
    index = np.array([mids.get(n, -1) for n in names] or [-1], dtype=np.int32)
    formed = np.array([bool(MID_RE.match(n)) or n in mids for n in names] or [False])
    codes = arrow_to_numpy(encoded.indices, np.int32)
    return index[codes], formed[codes]


def read_labels(path: str | Path, bad: BadRows, machine: bool = False,
                mids: Mapping[str, int] | None = None) -> Iterator[tuple[str, str, float]]:
    """Streams an image-level label file row by row as `(image_id, mid, confidence)`.

    The checks of `iter_label_rows`; without `mids` every well-formed MID is kept. Repeated
    (image, class) rows are passed on: `load_labels` counts and resolves them.
    """
    index = _AnyMid() if mids is None else mids
    for rows in iter_label_rows(path, bad, index, machine):
        names = {i: mid for mid, i in index.items()}
        for key, label, value in zip(rows.image.tolist(), rows.label.tolist(), rows.value.tolist()):
            yield image_id_text(key), names[label], value


def load_labels(path: str | Path, bad: BadRows, mids: Sequence[str], machine: bool = False,
                ids: "ImageIdKeys | None" = None) -> LabelTable:
    """Reads a whole label file into a `LabelTable`, one label per (image, class).

    Besides the checks of `iter_label_rows`, repeated (image, class) rows are resolved as
    `dedupe_labels` says.

    Args:
        path: the label file.
        bad: receives the counts.
        mids: the MIDs to keep, in index order.
        machine: a machine-label file.
        ids: how ImageIDs become keys (default: 16 hex digits).
    """
    parts = list(iter_label_rows(path, bad, {m: i for i, m in enumerate(mids)}, machine, ids))
    return dedupe_labels(concat_label_rows(parts), mids, machine, str(path), bad, ids)


def concat_label_rows(parts: Sequence[LabelRows]) -> LabelRows:
    """One `LabelRows` from several, in order."""
    return LabelRows(*(np.concatenate([getattr(p, f) for p in parts] or [np.zeros(0, t)])
                       for f, t in (("image", np.uint64), ("label", np.int32), ("value", float), ("lines", np.int64))))


def dedupe_labels(rows: LabelRows, mids: Sequence[str], machine: bool, name: str, bad: BadRows,
                  ids: "ImageIdKeys | None" = None) -> LabelTable:
    """One label per (image, class), as a `LabelTable`.

    A repeated (image, class) is counted as `{kind}_duplicate` (same value) or
    `human_label_conflict` (0 and 1), with the line of the first; the highest value wins (a
    positive beats a negative, as in the challenge label expansion).

    Args:
        rows: every row of the (image, class) pairs to resolve, in file order.
        mids: the MIDs that `rows.label` indexes.
        machine: machine labels.
        name: the file, for the bad-row examples.
        bad: receives the counts.
        ids: what the image keys spell (default: 16 hex digits).
    """
    images, inverse = _distinct(rows.image)
    key = inverse * max(len(mids), 1) + rows.label
    order = np.argsort(key, kind="stable")
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    if not first.all():
        earlier = order[np.maximum.accumulate(np.where(first, np.arange(len(first)), 0))][~first]
        later = order[~first]
        kind = "machine_label" if machine else "human_label"
        conflict = (rows.value[later] != rows.value[earlier]) & (not machine)
        for mask, reason in ((~conflict, f"{kind}_duplicate"), (conflict, f"{kind}_conflict")):
            _report_repeats(later[mask], earlier[mask], rows, list(mids), name, bad, reason, ids or HEX_IDS)
    starts = np.flatnonzero(first)
    best = np.maximum.reduceat(rows.value[order], starts) if len(starts) else rows.value
    return LabelTable(images, inverse[order[starts]], rows.label[order[starts]], best, list(mids))


def _distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(keys, return_inverse=True)` (inverse as int64), without a sort when `keys` is
    already sorted, as Open Images label files are (by ImageID)."""
    if len(keys) and not (keys[1:] >= keys[:-1]).all():
        distinct, inverse = np.unique(keys, return_inverse=True)
        return distinct, inverse.astype(np.int64)
    change = np.empty(len(keys), dtype=bool)
    change[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=change[1:])
    return keys[change], np.cumsum(change, dtype=np.int64) - 1


def _report_repeats(later: np.ndarray, earlier: np.ndarray, rows: LabelRows, mids: list, name: str, bad: BadRows,
                    reason: str, ids: "ImageIdKeys") -> None:
    image, label, value, lines = rows.image, rows.label, rows.value, rows.lines
    by_line = np.argsort(lines[later], kind="stable")
    later, earlier = later[by_line], earlier[by_line]
    texts = [f"{ids.text(image[r])},{mids[label[r]]},{value[r]:g} (first at line {lines[f]})"
             for r, f in zip(later[:bad.max_examples].tolist(), earlier[:bad.max_examples].tolist())]
    bad.add_many(reason, name, lines[later], texts)
