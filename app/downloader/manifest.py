"""Writing downloaded photos: their files, and the manifest of one CSV row per download attempt.

A photo is written atomically as `IMAGES_DIR/ab/ImageID.jpg` (`relative_path`), through a temporary
file in `IMAGES_DIR/.partial/`, emptied when the next run starts; then its row is appended to the
manifest, so an `ok` row always names a complete file.

`IMAGES_DIR/manifest.csv` (or `manifest-{NNNNN}.csv` for shard NNNNN of a download on Ray) has the columns
`ImageID,status,reason,path,url,bytes,md5_verified,width,height,detail`. `status` is `ok` or
`failed`; a re-run appends rows, and the last row of an image wins. A `kill -9` can leave a
last line without its newline: readers ignore it and the next writer cuts it off, so the image is
simply tried again.
"""

from __future__ import annotations

import csv
import fcntl
import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from app.downloader.images import DownloadFailure
from app.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

COLUMNS = ("ImageID", "status", "reason", "path", "url", "bytes", "md5_verified", "width", "height", "detail")
HEADER = ",".join(COLUMNS) + "\n"
OK, FAILED = "ok", "failed"
# Failures that a re-run does not retry (unless asked to): the photo is gone, or its row cannot work.
PERMANENT = frozenset({"http_404", "http_410", "unavailable", "no_url", "bad_url", "bad_key"})
KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


class ManifestError(ValueError):
    """A manifest that cannot be used (wrong header, or in use by another download)."""


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row; `path` is relative to the images folder (empty when failed)."""

    image_id: str
    status: str
    reason: str = ""
    path: str = ""
    url: str = ""
    bytes: int = 0
    md5_verified: bool = False
    width: int = 0
    height: int = 0
    detail: str = ""

    def fields(self) -> list:
        detail = " ".join(self.detail.split())[:300]
        return [self.image_id, self.status, self.reason, self.path, self.url, self.bytes,
                int(self.md5_verified), self.width, self.height, detail]


def relative_path(image_id: str) -> str:
    """`ab/ImageID.jpg`: 256 sub-folders keep folders small at 1.9M photos; a YFCC100M photo outside
    Open Images goes to `yfcc-NN/yfcc-ID.jpg` (NN: the id's last two digits, 100 folders).

    Raises:
        DownloadFailure: `bad_key`, an id that is not a safe file name.
    """
    if not KEY_RE.match(image_id):
        raise DownloadFailure("bad_key", f"image id {image_id!r} is not 1-64 letters, digits, '_' or '-'")
    if image_id.startswith("yfcc-"):
        return f"yfcc-{image_id[-2:]}/{image_id}.jpg"
    return f"{image_id[:2].lower()}/{image_id}.jpg"


def store_photo(out_dir: Path, rel: str, data: bytes, tmp_dir: Path) -> None:
    """Writes a photo's bytes to `out_dir/rel` atomically, through a temporary file in `tmp_dir`."""
    atomic_write_bytes(out_dir / rel, data, tmp_dir=tmp_dir)


def manifest_name(shard: Optional[str] = None) -> str:
    """`manifest.csv`, or `manifest-{shard}.csv` for a shard of a download on Ray."""
    return "manifest.csv" if shard is None else f"manifest-{shard}.csv"


def manifest_files(folder: str | Path) -> list[Path]:
    """The manifests in an images folder (one, or one per shard), in name order."""
    return sorted(Path(folder).glob("manifest*.csv"))


class ManifestWriter:
    """Appends rows to a manifest, holding an exclusive lock on it while open.

    Args:
        path: the manifest; created with its header if missing.

    Raises:
        ManifestError: another process holds the manifest, or its header is not ours.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._raw = open(self.path, "a+b")
        try:
            fcntl.flock(self._raw.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            self._raw.close()
            raise ManifestError(f"{self.path}: in use by another download") from err
        self.lines = self._repair()
        self._text = io.TextIOWrapper(self._raw, encoding="utf-8", newline="")
        self._csv = csv.writer(self._text, lineterminator="\n")

    def _repair(self) -> int:
        """Checks the header, cuts off a torn last line, and returns the number of lines."""
        self._raw.seek(0)
        content_head = self._raw.read(len(HEADER))
        if not content_head:
            self._raw.write(HEADER.encode())
            self._raw.flush()
            return 1
        if content_head.decode("utf-8", "replace") != HEADER:
            self._raw.close()
            raise ManifestError(f"{self.path}:1: expected header {HEADER.strip()!r}, got {content_head!r}")
        self._raw.seek(0)
        lines, kept = 0, 0
        for line in self._raw:
            if line.endswith(b"\n"):
                lines += 1
                kept += len(line)
        self._raw.truncate(kept)
        self._raw.seek(kept)
        return lines

    def write(self, row: ManifestRow) -> int:
        """Appends and flushes one row; returns its line number."""
        self._csv.writerow(row.fields())
        self._text.flush()
        self.lines += 1
        return self.lines

    def close(self) -> None:
        """Flushes to disk and releases the lock."""
        if self._raw.closed:
            return
        self._text.flush()
        os.fsync(self._raw.fileno())
        self._text.close()

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DownloadLock:
    """Holds `IMAGES_DIR/.download.lock` while a download writes into the folder (in this process or
    on Ray), so that two jobs never write one folder.

    Raises:
        ManifestError: another download holds it.
    """

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / ".download.lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a+")
        try:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "?"
            self._handle.close()
            raise ManifestError(f"{folder}: in use by another download (pid {holder}); wait for it to end, "
                                f"or write elsewhere") from err
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(str(os.getpid()))
        self._handle.flush()

    def __enter__(self) -> "DownloadLock":
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()


def read_manifest(path: str | Path, on_bad_line=None) -> Iterator[tuple[int, ManifestRow]]:
    """Streams `(line_no, row)` from a manifest, skipping a torn last line.

    Args:
        path: the manifest.
        on_bad_line: called as `(line_no, text)` for a complete line that is not a valid row.

    Raises:
        ManifestError: the header is not the manifest's.
    """
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        header = handle.readline()
        if header != HEADER:
            raise ManifestError(f"{path}:1: expected header {HEADER.strip()!r}, got {header[:200]!r}")
        for line_no, line in enumerate(handle, start=2):
            if not line.endswith("\n"):
                return  # torn by a kill: the download will try this image again
            row = _parse(line)
            if row is None:
                if on_bad_line is not None:
                    on_bad_line(line_no, line.rstrip("\n"))
                continue
            yield line_no, row


def _parse(line: str) -> Optional[ManifestRow]:
    fields = next(csv.reader([line]), [])
    if len(fields) != len(COLUMNS) or fields[1] not in (OK, FAILED) or fields[6] not in ("0", "1"):
        return None
    try:
        numbers = [int(fields[i]) for i in (5, 7, 8)]
    except ValueError:
        return None
    return ManifestRow(fields[0], fields[1], fields[2], fields[3], fields[4], numbers[0], fields[6] == "1",
                       numbers[1], numbers[2], fields[9])


def previous_results(path: Path, retry_permanent: bool) -> dict:
    """From a manifest: image id -> relative path of an `ok` photo, or None for a permanent failure."""
    if not path.exists():
        return {}
    bad_lines = []
    last: dict = {}
    for _, row in read_manifest(path, on_bad_line=lambda n, text: bad_lines.append(n)):
        if row.status == OK:
            last[row.image_id] = row.path
        elif row.reason in PERMANENT and not retry_permanent:
            last[row.image_id] = None
        else:
            last.pop(row.image_id, None)
    if bad_lines:
        log.warning("%s: %d unreadable lines ignored (e.g. line %d); their photos are tried again",
                    path, len(bad_lines), bad_lines[0])
    return last
