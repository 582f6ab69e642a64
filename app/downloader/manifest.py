"""The download manifest: one CSV row per download attempt, appended and flushed row by row.

`IMAGES_DIR/manifest.csv` (or `manifest-{i}-of-{N}.csv` for shard i of N) has the columns
`ImageID,status,reason,path,url,bytes,md5_verified,width,height,detail`. `status` is `ok` or
`failed`; a re-run appends rows, and the last row of an image wins. A `kill -9` can leave a
last line without its newline: readers ignore it and the next writer cuts it off, so the image is
simply tried again.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

COLUMNS = ("ImageID", "status", "reason", "path", "url", "bytes", "md5_verified", "width", "height", "detail")
HEADER = ",".join(COLUMNS) + "\n"
OK, FAILED = "ok", "failed"


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


def manifest_name(shard: Optional[tuple[int, int]] = None) -> str:
    """`manifest.csv`, or `manifest-{i}-of-{N}.csv` for shard i of N."""
    return "manifest.csv" if shard is None else f"manifest-{shard[0]:05d}-of-{shard[1]:05d}.csv"


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
