"""Manifest photos given by URL: what `download.py --manifest` fetches, and the key it stores them under.

`download.py --manifest photos.csv --out IMAGES_DIR` fetches every URL of the `image` column with
the Open Images downloader's checks, retries and `manifest.csv` (no MD5 exists, so none is
checked); `prepare.py --manifest photos.csv --images IMAGES_DIR` then finds each URL photo there by
its key. A key is the photo id when it is 1-64 letters, digits, `_` or `-` (a file name as is),
else `h-` and 32 hex digits of the id's BLAKE2b hash.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

from app.sources.classes import ClassList
from app.sources.manifest import ManifestReader, check_types
from app.text.normalize import normalize_text
from app.downloader.download import KEY_RE, DownloadItem

URL_PREFIXES = ("http://", "https://")


def is_url(image: str) -> bool:
    """Whether a manifest's image value is an http(s) URL."""
    return image.lower().startswith(URL_PREFIXES)


def download_key(image_id: str) -> str:
    """The key (file name and download-manifest id) of a photo id."""
    if KEY_RE.match(image_id):
        return image_id
    return "h-" + hashlib.blake2b(image_id.encode("utf-8"), digest_size=16).hexdigest()


def manifest_download_items(path: str | Path) -> Iterator[DownloadItem]:
    """The URL photos of a photo manifest as download items (labels are not read)."""
    reader = ManifestReader(path, ClassList([], []))
    for line, row in reader.rows():
        check_types(row, f"{path}:{line}")  # and the id by the text rule: the key prepare looks the photo up by
        image, image_id = (row.get("image") or "").strip(), normalize_text(str(row.get("id") or ""))
        if image_id and is_url(image):
            yield DownloadItem(download_key(image_id), image)
