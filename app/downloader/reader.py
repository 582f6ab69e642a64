"""What to download, as `DownloadItem`s: Open Images image-CSV rows, the `yfcc` split's photos, and
the URL photos of a photo manifest.

`--only-tagged` keeps the Open Images photos with user tags (after cleaning, as prepare counts them)
in YFCC100M, or, for photos missing from YFCC100M, in the extra-tags file: the study's dataset.

A photo manifest's URL photos (`download.py --manifest photos.csv`) are fetched with the same checks,
retries and `manifest.csv` (no MD5 exists, so none is checked); `prepare.py --manifest photos.csv
--images IMAGES_DIR` then finds each one there by its key. A key is the photo id when it is 1-64
letters, digits, `_` or `-` (a file name as is), else `h-` and 32 hex digits of the id's BLAKE2b hash.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from tqdm import tqdm

from app.badrows import BadRows
from app.downloader.manifest import KEY_RE
from app.sources import oid, yfcc
from app.sources.classes import ClassList
from app.sources.manifest import ManifestReader
from app.sources.yfcc_split import BottomK, yfcc_key
from app.text.tags import clean_tags

SOURCES = ("original", "thumbnail")
URL_PREFIXES = ("http://", "https://")


@dataclass(frozen=True)
class DownloadItem:
    """One photo to download.

    Args:
        image_id: the key and file name (Open Images ImageID).
        url: where to fetch it (empty: recorded as `no_url`).
        md5: base64 MD5 digest the body must have, or None to skip the check.
        rotation: counter-clockwise degrees (0, 90, 180, 270; NaN counts as 0).
    """

    image_id: str
    url: str
    md5: Optional[str] = None
    rotation: float = 0.0


@dataclass(frozen=True)
class OidSelection:
    """Which Open Images photos to download, and from which URL.

    Args:
        files: split -> image-metadata CSV.
        source: `original` (OriginalURL, MD5-checked, Rotation applied) or `thumbnail`
            (Thumbnail300KURL: no MD5 exists for it; Flickr renders it upright, so Rotation is not applied).
        tagged: Flickr ids to keep, or None for all photos.
    """

    files: dict
    source: str = "original"
    tagged: Optional[frozenset] = None


def find_image_files(oid_dir: str | Path, splits: tuple) -> dict:
    """split -> image-metadata CSV in `oid_dir`, by real Open Images names.

    Raises:
        FileNotFoundError: a split has none.
    """
    files = {split: oid.find_first(oid_dir, oid.IMAGE_FILES, split) for split in splits}
    missing = [split for split, path in files.items() if path is None]
    if missing:
        names = ", ".join(name.format(split=missing[0]) for name in oid.IMAGE_FILES)
        raise FileNotFoundError(f"{oid_dir}: no Open Images image CSV for {', '.join(missing)} (looked for {names})")
    return files


def oid_items(selection: OidSelection, bad: BadRows) -> Iterator[DownloadItem]:
    """Streams the selected photos of the image CSVs as download items.

    Args:
        selection: files, URL source and filters.
        bad: receives the CSVs' bad rows (as prepare counts them).
    """
    for path in selection.files.values():
        for row in oid.read_images(path, bad):
            if selection.tagged is not None and row.flickr_id not in selection.tagged:
                continue
            if selection.source == "thumbnail":
                yield DownloadItem(row.image_id, row.thumbnail_url, None, 0.0)
            else:
                yield DownloadItem(row.image_id, row.url, row.md5 or None, row.rotation)


def yfcc_split_items(oid_dir: str | Path, dataset: Path, size: int, bad: BadRows,
                     progress: bool = True) -> tuple[int, Iterator[DownloadItem]]:
    """The photos of the weakly labelled `yfcc` split, chosen exactly as prepare chooses them
    (`app.sources.yfcc_split`: the YFCC100M photos outside every Open Images image list of `oid_dir`,
    at most `size`), each from its YFCC100M download URL, keyed `yfcc-<photo id>`. YFCC100M gives
    no checksum of the photo's bytes, so the other checks alone apply.

    Returns:
        `(photos, items)`: how many photos the split holds, found by a first scan of
        the YFCC100M file, and the download items, streamed by a second scan (for the URLs).
    """
    lists = [oid.find_first(oid_dir, oid.IMAGE_FILES, split) for split in oid.SPLITS]
    if not any(lists):
        raise FileNotFoundError(f"{oid_dir}: no Open Images image list (looked for {', '.join(oid.IMAGE_FILES)}): "
                                f"the yfcc split is the YFCC100M photos outside them, so they are needed")
    if not Path(dataset).is_file():
        raise FileNotFoundError(f"{dataset}: no such YFCC100M file")
    oid_ids = yfcc.id_array([row.flickr_id for path in lists if path for row in oid.read_images(path, BadRows())])
    selection = BottomK(size)
    with tqdm(total=os.path.getsize(dataset), desc="scan YFCC100M", unit="B", unit_scale=True,
              disable=not progress) as bar:
        for _ in yfcc.scan_dataset(dataset, oid_ids, bad, progress=bar.update, outside=selection.offer):
            pass
    selected = selection.selected()

    def items() -> Iterator[DownloadItem]:
        for photo in yfcc.scan_dataset(dataset, selected, BadRows()):
            yield DownloadItem(yfcc_key(photo.photo_id), photo.download_url, None, 0.0)

    return len(selected), items()


def tagged_flickr_ids(files: dict, dataset: Path, extra_tags: Optional[Path], bad: BadRows,
                      progress: bool = True) -> frozenset:
    """Flickr ids of the photos in the image CSVs that have user tags.

    Args:
        files: split -> image-metadata CSV.
        dataset: the YFCC100M dataset file (scanned as prepare scans it).
        extra_tags: `flickr_id<TAB>user_tags` for photos missing from YFCC100M, or None.
        bad: receives bad rows of all three sources.
        progress: show a progress bar over the YFCC100M file.
    """
    wanted = {str(row.flickr_id).encode() for path in files.values() for row in oid.read_images(path, BadRows())}
    found, tagged = set(), set()
    with tqdm(total=os.path.getsize(dataset), desc="scan YFCC100M", unit="B", unit_scale=True,
              disable=not progress) as bar:
        for photo in yfcc.scan_dataset(dataset, wanted, bad, progress=bar.update):
            found.add(photo.photo_id)
            if clean_tags(photo.user_tags):
                tagged.add(photo.photo_id)
    if extra_tags is not None:
        missing = {photo for photo in wanted if int(photo) not in found}
        for photo_id, tags in yfcc.read_extra_tags(extra_tags, missing, bad):
            if clean_tags(tags):
                tagged.add(photo_id)
    return frozenset(tagged)


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
    for _, row in reader.rows():
        image, image_id = str(row.get("image") or "").strip(), str(row.get("id") or "").strip()
        if image_id and is_url(image):
            yield DownloadItem(download_key(image_id), image)
