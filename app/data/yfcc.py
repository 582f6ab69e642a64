"""Streaming readers for YFCC100M metadata, autotags and extra Flickr-API tags.

The dataset file is 100M lines (about 50 GB), so the scan works on large binary chunks:
every line is checked for its field count and a numeric photo id, and only lines of wanted
photos (about 2% for Open Images) are decoded in full. Memory stays flat in the file size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import compress
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from app import resources
from app.data.badrows import BadRows
from app.data.sources import iter_line_blocks
from app.data.tags import TagDecodeError, decode_field, decode_tags
from app.errors import InputError

CHUNK_BYTES = 8 << 20
# Field positions for the 25-field 2016 file and the 23-field 2014 Webscope release.
LAYOUTS = {
    25: {"id": 1, "title": 8, "description": 9, "user_tags": 10, "machine_tags": 11, "download_url": 16},
    23: {"id": 0, "title": 6, "description": 7, "user_tags": 8, "machine_tags": 9, "download_url": 14},
}


@dataclass(frozen=True)
class YfccPhoto:
    """The fields of a YFCC100M line that the classifier uses."""

    photo_id: int
    user_tags: tuple
    title: str
    line_no: int


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
    wanted: set,
    bad: BadRows,
    progress: Optional[Callable[[int], None]] = None,
) -> Iterator[YfccPhoto]:
    """Streams the YFCC100M dataset file, yielding the photos whose id is in `wanted`.

    Args:
        path: `yfcc100m_dataset` (25 fields) or a 2014 part (23 fields); plain, gzip or bz2.
        wanted: photo ids as ASCII bytes (e.g. `b"6162540254"`).
        bad: receives `yfcc_field_count`, `yfcc_bad_id`, `yfcc_non_utf8`, `yfcc_bad_escape` and
            `yfcc_duplicate` rows with their line numbers.
        progress: called with the number of bytes read, chunk by chunk.

    Yields:
        One `YfccPhoto` per wanted id (the first line wins if an id repeats).
    """
    path = Path(path)
    fields = detect_layout(path)
    layout = LAYOUTS[fields]
    tabs = fields - 1
    id_at, tags_at, title_at = layout["id"], layout["user_tags"], layout["title"]
    # One match per line whose field count may be right: the id field of each line.
    id_pattern = re.compile(rb"\n" + rb"[^\t\n]*\t" * id_at + rb"([^\t\n]*)\t")
    name = str(path)
    seen: set = set()
    line_no = 0
    is_wanted = wanted.__contains__
    for view in iter_line_blocks(path, CHUNK_BYTES, progress):
        block = bytes(view)
        data = np.frombuffer(block, dtype=np.uint8)
        starts = np.flatnonzero(data == 10)  # the newline before each line
        ends = np.append(starts[1:], len(block))
        count = len(starts)
        tab_at = np.flatnonzero(data == 9)
        tab_counts = np.diff(np.searchsorted(tab_at, np.append(starts, len(block))))
        ids = id_pattern.findall(block)
        wrong = np.flatnonzero(tab_counts != tabs)
        if len(wrong) or len(ids) != count or not all(map(bytes.isdigit, ids)):
            hits = _check_lines(block, starts, ends, tabs, id_at, wanted, name, line_no, bad)
            ids = None
        else:
            hits = compress(range(count), map(is_wanted, ids))
        for i in hits:
            line = block[starts[i] + 1 : ends[i]]
            photo = ids[i] if ids is not None else line.split(b"\t", id_at + 1)[id_at]
            if photo in seen:
                bad.add("yfcc_duplicate", name, line_no + i + 1, photo)
                continue
            record = _decode_line(line, tabs, tags_at, title_at, name, line_no + i + 1, bad)
            if record is not None:
                seen.add(photo)
                yield YfccPhoto(int(photo), *record, line_no + i + 1)
        line_no += count


def _check_lines(block: bytes, starts, ends, tabs: int, id_at: int, wanted: set, name: str, first: int,
                 bad: BadRows) -> list:
    """Slow path for a block with an anomaly: checks each line, counts bad ones, returns hit indices."""
    hits = []
    for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
        line = block[start + 1 : end]
        if line.count(b"\t") != tabs:
            bad.add("yfcc_field_count" if line.strip() else "yfcc_blank_line", name, first + i + 1, line)
            continue
        photo = line.split(b"\t", id_at + 1)[id_at]
        if not photo.isdigit():
            bad.add("yfcc_bad_id", name, first + i + 1, photo)
        elif photo in wanted:
            hits.append(i)
    return hits


def _decode_line(line: bytes, tabs: int, tags_at: int, title_at: int, name: str, line_no: int, bad: BadRows):
    if line.count(b"\t") != tabs:
        bad.add("yfcc_field_count", name, line_no, line)
        return None
    try:
        fields = line.decode("utf-8").split("\t")
    except UnicodeDecodeError:
        bad.add("yfcc_non_utf8", name, line_no, line)
        return None
    try:
        return tuple(decode_tags(fields[tags_at])), decode_field(fields[title_at])
    except TagDecodeError as err:
        bad.add(f"yfcc_{err.reason}", name, line_no, err.value)
        return None


def read_keyed_tsv(path: str | Path, wanted: Optional[set], bad: BadRows, kind: str) -> Iterator[tuple]:
    """Streams `photo_id<TAB>value` lines, yielding `(photo_id, value, line_no)` for wanted ids."""
    path = Path(path)
    name = str(path)
    line_no = 0
    for lines in _iter_lines(path, None):
        for line in lines:
            line_no += 1
            photo, sep, value = line.partition(b"\t")
            if not sep or b"\t" in value or not photo.isdigit():
                bad.add(f"{kind}_malformed", name, line_no, line)
                continue
            if wanted is not None and photo not in wanted:
                continue
            try:
                yield int(photo), value.decode("utf-8"), line_no
            except UnicodeDecodeError:
                bad.add(f"{kind}_non_utf8", name, line_no, line)


def read_extra_tags(path: str | Path, wanted: Optional[set], bad: BadRows) -> Iterator[tuple[int, tuple]]:
    """Reads the extra-tags TSV (`flickr_id<TAB>user_tags`, YFCC encoding) as `(photo_id, tags)`."""
    for photo, value, line_no in read_keyed_tsv(path, wanted, bad, "extra_tags"):
        try:
            yield photo, tuple(decode_tags(value))
        except TagDecodeError as err:
            bad.add(f"extra_tags_{err.reason}", str(path), line_no, err.value)


def read_autotags(path: str | Path, wanted: Optional[set], bad: BadRows) -> Iterator[tuple[int, dict]]:
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
