"""Where prepare finds each photo's image: a download manifest, or `ImageID.jpg` files.

With a manifest (`manifest*.csv`, written by `app/download.py`), a photo's image is the file its
last `ok` row names: verified against `OriginalMD5` at download time, then possibly turned and
shrunk, so its bytes are not compared with the MD5 again. Photos whose download failed, or that
have no row, stay in the dataset without an image. Without a manifest, `IMAGES_DIR/ImageID.jpg`
must match `OriginalMD5`.

Either way an image is stored only if it is a complete JPEG or PNG that decodes
(`app.data.images.verify_image`); otherwise it is a bad row `image_<reason>` with its ImageID.
Every photo without an image is counted by reason in `without_image`.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Optional

from app.data import images
from app.data.badrows import BadRows
from app.data.download import DownloadFailure, relative_path
from app.data.manifest import OK, manifest_files, read_manifest
from app.data.oid import OidImage

log = logging.getLogger(__name__)


class ImageFolder:
    """Loads checked image bytes for prepare.

    Args:
        folder: the `--images` folder.
        bad: receives unreadable manifest lines.
    """

    def __init__(self, folder: str | Path, bad: BadRows):
        self.folder = Path(folder)
        self.manifests = manifest_files(self.folder)
        self.without = BadRows()
        self.unverified = 0
        # image id -> (manifest index, line, failure reason or "", path if not the default one)
        self.entries: Optional[dict] = self._read(bad) if self.manifests else None
        if self.entries is None:
            log.info("images: no manifest in %s; reading ImageID.jpg files, checked against OriginalMD5", self.folder)

    def _read(self, bad: BadRows) -> dict:
        entries: dict = {}
        for index, manifest in enumerate(self.manifests):
            on_bad = functools.partial(bad.add, "manifest_bad_line", str(manifest))
            for line_no, row in read_manifest(manifest, on_bad_line=on_bad):
                before = entries.get(row.image_id)
                if before is not None and before[0] != index and not before[2] and row.status != OK:
                    continue  # an image that another shard's manifest has ok stays ok
                reason = "" if row.status == OK else row.reason or "unknown"
                path = row.path if row.status == OK and row.path != _default_path(row.image_id) else None
                entries[row.image_id] = (index, line_no, reason, path, row.md5_verified)
        ok = sum(1 for entry in entries.values() if not entry[2])
        log.info("images: %d photos in %s (%d ok, %d failed)", len(entries),
                 ", ".join(m.name for m in self.manifests), ok, len(entries) - ok)
        return entries

    def load(self, image: OidImage, bad: BadRows) -> bytes:
        """The photo's checked image bytes, or b"" (counted in `without` and, if broken, in `bad`)."""
        if self.entries is None:
            path = self.folder / f"{image.image_id}.jpg"
            return self._checked(path, image, bad, str(path), 0, image.md5)
        entry = self.entries.get(image.image_id)
        if entry is None:
            self.without.add("not_downloaded", str(self.folder), 0, image.image_id)
            return b""
        index, line_no, reason, path, verified = entry
        manifest = str(self.manifests[index])
        if reason:
            self.without.add(f"download_{reason}", manifest, line_no, image.image_id)
            return b""
        self.unverified += not verified
        path = self.folder / (path or relative_path(image.image_id))
        return self._checked(path, image, bad, manifest, line_no, None)

    def _checked(self, path: Path, image: OidImage, bad: BadRows, where: str, line_no: int,
                 md5: Optional[str]) -> bytes:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return self._refuse("image_missing", bad, where, line_no, f"{image.image_id}: no file {path}")
        if md5:
            digest = images.md5_base64(data)
            if digest != md5:
                return self._refuse("image_md5_mismatch", bad, where, line_no,
                                    f"{image.image_id}: {digest} != OriginalMD5 {md5}")
        try:
            images.verify_image(data)
        except images.BadImage as err:
            return self._refuse(f"image_{err.reason}", bad, where, line_no, f"{image.image_id}: {err.detail}")
        return data

    def _refuse(self, reason: str, bad: BadRows, where: str, line_no: int, value: str) -> bytes:
        bad.add(reason, where, line_no, value)
        self.without.add(reason, where, line_no, value)
        return b""

    def stats(self) -> dict:
        """For stats.json: the manifests read, photos without an image by reason, unverified images."""
        return {"manifests": [m.name for m in self.manifests], "without_image": self.without.to_dict(),
                "unverified_images": self.unverified}


def _default_path(image_id: str) -> Optional[str]:
    try:
        return relative_path(image_id)
    except DownloadFailure:
        return None
