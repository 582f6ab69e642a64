"""Where prepare finds each photo's image: a download manifest, or `ImageID.jpg` files.

With a manifest (`manifest*.csv`, written by `app/download.py`), a photo's image is the file its
last `ok` row names: verified against `OriginalMD5` at download time, then possibly turned and
shrunk, so its bytes are not compared with the MD5 again. Photos whose download failed, or that
have no row, stay in the dataset without an image. Without a manifest, `IMAGES_DIR/ImageID.jpg`
must match `OriginalMD5`. A YFCC100M photo outside Open Images (the `yfcc` split) is keyed
`yfcc-<photo id>` and has no MD5: only the checks below apply to it.

Either way an image is stored only if it is a complete JPEG or PNG that decodes
(`app.downloader.images.verify_image`); otherwise it is a bad row `image_<reason>` with its ImageID.
Every photo without an image is counted by reason in `without_image`.
"""

from __future__ import annotations

import collections
import concurrent.futures as futures
import functools
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Optional

from app.downloader import images
from app.badrows import BadRows
from app.downloader.images import DownloadFailure
from app.downloader.manifest import OK, manifest_files, read_manifest, relative_path
from app.errors import InputError

log = logging.getLogger(__name__)


class ManifestEntry(NamedTuple):
    """A manifest row as prepare uses it: `reason` is empty for an `ok` photo, and `path` is None
    when the photo is at its default place (`app.downloader.manifest.relative_path`)."""

    image_id: str
    manifest: int
    line: int
    reason: str
    path: Optional[str]
    verified: bool


def resolve_entries(entries: Iterable[ManifestEntry]) -> dict:
    """`{image id: entry}` from entries in manifest and line order: the last row of a photo wins,
    except that a photo `ok` in one manifest stays `ok` despite a failure in another."""
    out: dict = {}
    for entry in entries:
        before = out.get(entry.image_id)
        if before is not None and before.manifest != entry.manifest and not before.reason and entry.reason:
            continue
        out[entry.image_id] = entry
    return out


class ImageFolder:
    """Loads checked image bytes for prepare.

    Args:
        folder: the `--images` folder.
        bad: receives unreadable manifest lines.
        index: read the manifests now into `entries`; with False, `manifest_entries` streams them
            and `use_entries` sets the entries of the photos about to be loaded (prepare does this
            bucket by bucket, so that memory does not grow with the number of photos).
    """

    def __init__(self, folder: str | Path, bad: BadRows, index: bool = True):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"{self.folder}: --images must be a folder (from app/download.py, or of ImageID.jpg "
                             f"files)")
        self.manifests = manifest_files(self.folder)
        self.without = BadRows()
        self.unverified = 0
        self.entries: dict = {}
        if not self.manifests:
            log.info("images: no manifest in %s; reading ImageID.jpg files, checked against OriginalMD5", self.folder)
        elif index:
            self.use_entries(self.manifest_entries(bad))

    def manifest_entries(self, bad: BadRows) -> Iterator[ManifestEntry]:
        """Streams every manifest's rows in order; unreadable lines and paths outside the folder are
        counted in `bad` as `manifest_bad_line`."""
        for index, manifest in enumerate(self.manifests):
            on_bad = functools.partial(bad.add, "manifest_bad_line", str(manifest))
            rows = 0
            for line_no, row in read_manifest(manifest, on_bad_line=on_bad):
                if row.path.startswith("/") or ".." in Path(row.path).parts:
                    on_bad(line_no, f"path outside the images folder: {row.path}")
                    continue
                reason = "" if row.status == OK else row.reason or "unknown"
                path = row.path if row.status == OK and row.path != _default_path(row.image_id) else None
                rows += 1
                yield ManifestEntry(row.image_id, index, line_no, reason, path, row.md5_verified)
            log.info("images: %d rows in %s", rows, manifest)

    def use_entries(self, entries: Iterable[ManifestEntry]) -> None:
        """Sets the manifest entries that `iter_load` looks photos up in (see `resolve_entries`)."""
        self.entries = resolve_entries(entries)

    def iter_load(self, photos: Iterable, bad: BadRows, workers: Optional[int] = None) -> Iterator[bytes]:
        """Each photo's checked image bytes, in order; b"" for a photo without a (good) image.

        A photo is anything with an `image_id` (an ImageID, or `yfcc-<id>` for a YFCC100M photo
        outside Open Images) and an `md5` (`OriginalMD5`, or empty when there is none).

        A photo without an image is counted in `without` by reason and, if its file is broken, in
        `bad` as `image_<reason>` with its ImageID. Files are read and checked `workers` at a time
        (Pillow decodes outside the GIL); counting happens here, in order, so the reports do not
        depend on thread timing.
        """
        workers = workers or min(16, os.cpu_count() or 1)
        with futures.ThreadPoolExecutor(workers, thread_name_prefix="image-check") as pool:
            window: collections.deque = collections.deque()
            for image in photos:
                window.append(pool.submit(self._check, image))
                if len(window) > 4 * workers:
                    yield self._record(window.popleft().result(), bad)
            while window:
                yield self._record(window.popleft().result(), bad)

    def _check(self, image) -> tuple:
        """`(data, refusal or None, unverified)`; touches no counter, so it may run in any thread."""
        if not self.manifests:
            path = self.folder / f"{image.image_id}.jpg"
            return *_read_checked(path, image, str(path), 0, image.md5), False
        entry = self.entries.get(image.image_id)
        if entry is None:
            return b"", ("not_downloaded", str(self.folder), 0, image.image_id, False), False
        _, index, line_no, reason, path, verified = entry
        manifest = str(self.manifests[index])
        if reason:
            return b"", (f"download_{reason}", manifest, line_no, image.image_id, False), False
        path = self.folder / (path or relative_path(image.image_id))
        return *_read_checked(path, image, manifest, line_no, None), not verified

    def _record(self, outcome: tuple, bad: BadRows) -> bytes:
        data, refusal, unverified = outcome
        if refusal is not None:
            reason, where, line_no, value, broken = refusal
            if broken:
                bad.add(reason, where, line_no, value)
            self.without.add(reason, where, line_no, value)
        self.unverified += bool(data) and unverified
        return data

    def stats(self) -> dict:
        """For stats.json: the manifests read, photos without an image by reason, unverified images."""
        return {"manifests": [m.name for m in self.manifests], "without_image": self.without.to_dict(),
                "unverified_images": self.unverified}


def _default_path(image_id: str) -> Optional[str]:
    try:
        return relative_path(image_id)
    except DownloadFailure:
        return None


def _read_checked(path: Path, image, where: str, line_no: int, md5: Optional[str]) -> tuple:
    """`(data, None)` for a complete, decodable image (matching `md5` if given), else `(b"", refusal)`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b"", ("image_missing", where, line_no, f"{image.image_id}: no file {path}", True)
    except OSError as err:  # a folder, a device, no permission: that photo goes without its image
        return b"", ("image_unreadable", where, line_no, f"{image.image_id}: {path}: {err.strerror}", True)
    if md5:
        digest = images.md5_base64(data)
        if digest != md5:
            return b"", ("image_md5_mismatch", where, line_no, f"{image.image_id}: {digest} != OriginalMD5 {md5}", True)
    try:
        images.verify_image(data)
    except images.BadImage as err:
        return b"", (f"image_{err.reason}", where, line_no, f"{image.image_id}: {err.detail}", True)
    return data, None
