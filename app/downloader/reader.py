"""What to download: Open Images image-CSV rows as `DownloadItem`s, filtered by shard and by tags.

`--shard i/N` keeps the photos whose CRC-32 of the ImageID is i modulo N: the same split on every
machine and Python version, and about the same size per shard.
`--only-tagged` keeps the photos with user tags (after cleaning, as prepare counts them) in
YFCC100M, or, for photos missing from YFCC100M, in the extra-tags file: the study's dataset.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from tqdm import tqdm

from app.sources import oid
from app.sources import yfcc
from app.badrows import BadRows
from app.downloader.download import DownloadItem
from app.text.tags import clean_tags
from app.sources.yfcc_split import BottomK, yfcc_key

SOURCES = ("original", "thumbnail")


@dataclass(frozen=True)
class OidSelection:
    """Which Open Images photos to download, and from which URL.

    Args:
        files: split -> image-metadata CSV.
        source: `original` (OriginalURL, MD5-checked, Rotation applied) or `thumbnail`
            (Thumbnail300KURL: no MD5 exists for it; Flickr renders it upright, so Rotation is not applied).
        shard: `(i, n)`, or None for all photos.
        tagged: Flickr ids to keep, or None for all photos.
    """

    files: dict
    source: str = "original"
    shard: Optional[tuple[int, int]] = None
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


def in_shard(image_id: str, shard: Optional[tuple[int, int]]) -> bool:
    """Whether an image belongs to shard `(i, n)` (always, without a shard)."""
    return shard is None or zlib.crc32(image_id.encode()) % shard[1] == shard[0]


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
            if not in_shard(row.image_id, selection.shard):
                continue
            if selection.source == "thumbnail":
                yield DownloadItem(row.image_id, row.thumbnail_url, None, 0.0)
            else:
                yield DownloadItem(row.image_id, row.url, row.md5 or None, row.rotation)


def yfcc_split_items(oid_dir: str | Path, dataset: Path, size: int, bad: BadRows,
                     shard: Optional[tuple[int, int]] = None,
                     progress: bool = True) -> tuple[int, Iterator[DownloadItem]]:
    """The photos of the weakly labelled `yfcc` split, chosen exactly as prepare chooses them
    (`app.sources.yfcc_split`: the YFCC100M photos outside every Open Images image list of `oid_dir`,
    at most `size`), each from its YFCC100M download URL, keyed `yfcc-<photo id>`. YFCC100M gives
    no checksum of the photo's bytes, so the other checks alone apply.

    Returns:
        `(photos, items)`: how many photos (of the shard) the split holds, found by a first scan of
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
    count = sum(in_shard(yfcc_key(photo), shard) for photo in selected.tolist())

    def items() -> Iterator[DownloadItem]:
        for photo in yfcc.scan_dataset(dataset, selected, BadRows()):
            key = yfcc_key(photo.photo_id)
            if in_shard(key, shard):
                yield DownloadItem(key, photo.download_url, None, 0.0)

    return count, items()


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
