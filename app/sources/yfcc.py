"""Streaming readers for YFCC100M metadata, autotags and extra Flickr-API tags.

The dataset file is 100M lines (about 50 GB), so the scan works on large binary chunks:
every line is checked for its field count and a numeric photo id, and only lines of wanted
photos (about 2% for Open Images) are decoded in full. Wanted ids are a sorted numpy array
(8 bytes an id), looked up block by block. Memory stays flat in the file size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from app import resources
from app.badrows import BadRows
from app.sources.textfiles import iter_line_blocks
from app.text.tags import TagDecodeError, decode_field, decode_tags
from app.errors import InputError

CHUNK_BYTES = 1 << 20  # text per block: its lines' Python objects (~15x) bound the scan's memory
# Field positions for the 25-field 2016 file and the 23-field 2014 Webscope release.
LAYOUTS = {
    25: {"id": 1, "title": 8, "description": 9, "user_tags": 10, "machine_tags": 11, "download_url": 16},
    23: {"id": 0, "title": 6, "description": 7, "user_tags": 8, "machine_tags": 9, "download_url": 14},
}


@dataclass(frozen=True)
class YfccPhoto:
    """The fields of a YFCC100M line that the classifier uses.

    `wanted` is False for a photo yielded for the `outside` selection of `scan_dataset`.
    """

    photo_id: int
    user_tags: tuple
    title: str
    line_no: int
    download_url: str = ""
    wanted: bool = True


def id_array(ids) -> np.ndarray:
    """Photo ids (ints, ASCII digits as bytes, or an array) as a sorted array of distinct uint64."""
    if isinstance(ids, np.ndarray):
        return np.unique(ids.astype(np.uint64))
    return np.unique(np.fromiter((int(i) for i in ids), dtype=np.uint64))


def contains(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(mask, positions)`: which `ids` are in `sorted_ids` (sorted, distinct), and where."""
    positions = np.searchsorted(sorted_ids, ids)
    inside = positions < len(sorted_ids)
    mask = inside.copy()
    mask[inside] = sorted_ids[positions[inside]] == ids[inside]
    return mask, positions


def _iter_lines(path: Path, progress: Optional[Callable[[int], None]]) -> Iterator[list]:
    """Yields lists of complete lines (bytes, no newline), block by block."""
    for block in iter_line_blocks(path, CHUNK_BYTES, progress):
        yield bytes(block[1:]).split(b"\n")


def detect_layout(path: str | Path) -> int:
    """Returns 25 or 23: the field count of the first line that has one of them."""
    for lines in _iter_lines(Path(path), None):
        for line in lines:
            fields = line.count(b"\t") + 1
            if fields in LAYOUTS:
                return fields
        break
    raise InputError(f"{path}: no line with 25 (yfcc100m_dataset) or 23 (2014 release) tab-separated fields "
                     f"in its first block")


def scan_dataset(
    path: str | Path,
    wanted,
    bad: BadRows,
    progress: Optional[Callable[[int], None]] = None,
    found: Optional[np.ndarray] = None,
    outside: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    span: Optional[tuple[int, int]] = None,
    first_line: int = 0,
) -> Iterator[YfccPhoto]:
    """Streams the YFCC100M dataset file, yielding the photos whose id is in `wanted`.

    Args:
        path: `yfcc100m_dataset` (25 fields) or a 2014 part (23 fields); plain, gzip or bz2.
        wanted: photo ids: a sorted uint64 array of distinct ids, or any ids `id_array` takes.
        bad: receives `yfcc_field_count`, `yfcc_bad_id` (not 1 to 19 digits), `yfcc_non_utf8`,
            `yfcc_bad_escape` and `yfcc_duplicate` rows with their line numbers.
        progress: called with the number of bytes read, chunk by chunk.
        found: a bool array aligned with `wanted` (as sorted ids); set True for each id yielded.
        outside: called with the ids of the photos (not videos: the last field, the photo/video
            marker, is `0`) that are not wanted, block by block; returns a mask of those to yield too
            (with `wanted=False`; a repeated id among them is not checked here).
        span: read only the lines that start in this byte span (`app.sources.textfiles.line_spans`),
            a task's share of a plain file; a wanted id is then checked for repeats in the span only.
        first_line: the lines of the file before the span (line numbers count from there).

    Yields:
        One `YfccPhoto` per wanted id (the first line wins if an id repeats), in file order.
    """
    path = Path(path)
    fields = detect_layout(path)
    layout = LAYOUTS[fields]
    wanted = wanted if _is_id_array(wanted) else id_array(wanted)
    found = np.zeros(len(wanted), dtype=bool) if found is None else found
    # One match per line whose field count may be right: the id field of each line.
    id_pattern = re.compile(rb"\n" + rb"[^\t\n]*\t" * layout["id"] + rb"([^\t\n]*)\t")
    name, line_no = str(path), first_line
    for view in iter_line_blocks(path, CHUNK_BYTES, progress, span):
        block = bytes(view)
        lines = _block_lines(block, fields - 1, layout["id"], id_pattern, name, line_no, bad)
        hit, positions = contains(wanted, lines.ids)
        pick = hit.copy()
        if outside is not None:
            others = np.flatnonzero(~hit & lines.photo)
            pick[others[outside(lines.ids[others])]] = True
        for j in np.flatnonzero(pick).tolist():
            if hit[j] and found[positions[j]]:
                bad.add("yfcc_duplicate", name, line_no + lines.index[j] + 1, lines.ids[j])
                continue
            photo = _decode_line(lines.line(j), fields - 1, layout, name, line_no + lines.index[j] + 1, bad)
            if photo is not None:
                if hit[j]:
                    found[positions[j]] = True
                tags, title, url = photo
                yield YfccPhoto(int(lines.ids[j]), tags, title, line_no + lines.index[j] + 1, url, bool(hit[j]))
        line_no += lines.count


def _is_id_array(ids) -> bool:
    return (isinstance(ids, np.ndarray) and ids.dtype == np.uint64
            and bool(len(ids) < 2 or (ids[1:] > ids[:-1]).all()))


@dataclass
class _Lines:
    """The well-formed lines of a block: their index in the block, photo ids, and whether each is a
    photo (not a video)."""

    block: bytes
    starts: np.ndarray
    ends: np.ndarray
    index: list
    ids: np.ndarray
    photo: np.ndarray
    count: int

    def line(self, j: int) -> bytes:
        i = self.index[j]
        return self.block[self.starts[i] + 1: self.ends[i]]


def _block_lines(block: bytes, tabs: int, id_at: int, id_pattern, name: str, first: int, bad: BadRows) -> _Lines:
    """Finds the lines of a block (each after its newline) and their ids; counts the bad ones."""
    data = np.frombuffer(block, dtype=np.uint8)
    starts = np.flatnonzero(data == 10)  # the newline before each line
    ends = np.append(starts[1:], len(block))
    count = len(starts)
    tab_counts = np.diff(np.searchsorted(np.flatnonzero(data == 9), np.append(starts, len(block))))
    ids = id_pattern.findall(block)
    if (tab_counts != tabs).any() or len(ids) != count or not all(i.isdigit() and len(i) < 20 for i in ids):
        index, ids = _check_lines(block, starts, ends, tabs, id_at, name, first, bad)
    else:
        index = list(range(count))
    numbers = np.fromiter(map(int, ids), dtype=np.uint64, count=len(ids))
    last = ends[index] if index else np.zeros(0, dtype=np.int64)
    if len(last):
        last = last - (data[last - 1] == 13)  # a CRLF line end: the marker is before the CR
    photo = (data[last - 1] == ord("0")) & (data[last - 2] == 9) if len(last) else np.zeros(0, dtype=bool)
    return _Lines(block, starts, ends, index, numbers, photo, count)


def _check_lines(block: bytes, starts, ends, tabs: int, id_at: int, name: str, first: int,
                 bad: BadRows) -> tuple[list, list]:
    """Slow path for a block with an anomaly: checks each line and counts bad ones.

    Returns:
        The indices of the well-formed lines and their ids (ASCII digits).
    """
    index, ids = [], []
    for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
        line = block[start + 1 : end]
        if line.count(b"\t") != tabs:
            bad.add("yfcc_field_count" if line.strip() else "yfcc_blank_line", name, first + i + 1, line)
            continue
        photo = line.split(b"\t", id_at + 1)[id_at]
        if not photo.isdigit() or len(photo) > 19:
            bad.add("yfcc_bad_id", name, first + i + 1, photo)
            continue
        index.append(i)
        ids.append(photo)
    return index, ids


def _decode_line(line: bytes, tabs: int, layout: dict, name: str, line_no: int, bad: BadRows):
    """`(user tags, title, download URL)` of a line, or None (counted in `bad`)."""
    if line.count(b"\t") != tabs:
        bad.add("yfcc_field_count", name, line_no, line)
        return None
    try:
        fields = line.decode("utf-8").split("\t")
    except UnicodeDecodeError:
        bad.add("yfcc_non_utf8", name, line_no, line)
        return None
    try:
        return tuple(decode_tags(fields[layout["user_tags"]])), decode_field(fields[layout["title"]]), \
            fields[layout["download_url"]]
    except TagDecodeError as err:
        bad.add(f"yfcc_{err.reason}", name, line_no, err.value)
        return None


def read_keyed_tsv(path: str | Path, wanted, bad: BadRows, kind: str) -> Iterator[tuple]:
    """Streams `photo_id<TAB>value` lines, yielding `(photo_id, value, line_no)` for wanted ids.

    Args:
        path: plain, gzip or bz2 file.
        wanted: the ids to yield (anything `id_array` takes), or None for all.
        bad: receives `{kind}_malformed` (not `id<TAB>value`, an id of more than 19 digits) and
            `{kind}_non_utf8` rows.
        kind: the prefix of the bad-row reasons.
    """
    path = Path(path)
    name = str(path)
    wanted = None if wanted is None or _is_id_array(wanted) else id_array(wanted)
    line_no = 0
    for lines in _iter_lines(path, None):
        keyed = []
        for i, line in enumerate(lines, start=line_no + 1):
            photo, sep, value = line.partition(b"\t")
            if not sep or b"\t" in value or not photo.isdigit() or len(photo) > 19:
                bad.add(f"{kind}_malformed", name, i, line)
            else:
                keyed.append((int(photo), value, i))
        line_no += len(lines)
        ids = np.fromiter((photo for photo, _, _ in keyed), dtype=np.uint64, count=len(keyed))
        hits = contains(wanted, ids)[0] if wanted is not None else np.ones(len(keyed), dtype=bool)
        for j in np.flatnonzero(hits).tolist():
            photo, value, i = keyed[j]
            try:
                yield photo, value.decode("utf-8"), i
            except UnicodeDecodeError:
                bad.add(f"{kind}_non_utf8", name, i, b"%d\t%s" % (photo, value))


def read_extra_tags(path: str | Path, wanted, bad: BadRows) -> Iterator[tuple[int, tuple]]:
    """Reads the extra-tags TSV (`flickr_id<TAB>user_tags`, YFCC encoding) as `(photo_id, tags)`."""
    for photo, value, line_no in read_keyed_tsv(path, wanted, bad, "extra_tags"):
        try:
            yield photo, tuple(decode_tags(value))
        except TagDecodeError as err:
            bad.add(f"extra_tags_{err.reason}", str(path), line_no, err.value)


def read_autotags(path: str | Path, wanted, bad: BadRows) -> Iterator[tuple[int, dict]]:
    """Reads the autotags pack (`photo_id<TAB>concept:score,...`) as `(photo_id, {concept: score})`."""
    for photo, value, line_no in read_keyed_tsv(path, wanted, bad, "autotags"):
        concepts = {}
        try:
            for item in filter(None, value.split(",")):
                concept, sep, score = item.rpartition(":")
                probability = float(score)
                if not sep or not 0.0 <= probability <= 1.0:
                    raise ValueError(item)
                concepts[decode_field(concept)] = probability
        except (ValueError, TagDecodeError):
            bad.add("autotags_bad_value", str(path), line_no, value)
            continue
        yield photo, concepts


def load_autotag_mapping(path: Path = resources.ALIGNED_AUTOTAGS) -> dict:
    """Reads `autotag,oid_mid` rows (`0` = no Open Images class) as `{autotag: mid}`."""
    mapping = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            concept, sep, mid = line.rstrip("\n").rpartition(",")
            if not sep:
                raise ValueError(f"{path}:{line_no}: expected 'autotag,mid', got {line!r}")
            if mid != "0":
                mapping[concept] = mid
    return mapping
