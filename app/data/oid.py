"""Streaming readers for the Open Images V5 CSV files (real names, real formats)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from app.data.badrows import BadRows
from app.data.sources import open_text

SPLITS = ("train", "validation", "test")
IMAGE_ID_RE = re.compile(r"[0-9a-f]{16}\Z")
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
LABEL_COLUMNS = ("ImageID", "Source", "LabelName", "Confidence")


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


def read_classes(path: str | Path) -> list[tuple[str, str]]:
    """Reads `MID,DisplayName` rows (no header), e.g. `challenge-2019-classes-description-500.csv`."""
    out = []
    with open(path, encoding="utf-8", newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if len(row) != 2 or not row[0].startswith("/m/"):
                raise ValueError(f"{path}:{line_no}: expected 'MID,DisplayName', got {row!r}")
            out.append((row[0], row[1]))
    return out


def _dict_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    handle = io.TextIOWrapper(open_text(path), encoding="utf-8", errors="strict", newline="")
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}:1: header is not UTF-8: {err}") from err
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}:1: missing columns {missing}; header is {header}")
        index = {name: header.index(name) for name in header}
        width = len(header)
        line_no = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (UnicodeDecodeError, csv.Error) as err:
                raise ValueError(f"{path}:{reader.line_num}: unreadable row: {err}") from err
            line_no = reader.line_num
            yield line_no, (row if len(row) != width else {k: row[i] for k, i in index.items()})


def read_images(path: str | Path, bad: BadRows) -> Iterator[OidImage]:
    """Streams an image-metadata file (`*-images-*with-rotation.csv`).

    Rows with a wrong field count, a malformed ImageID or no Flickr id in OriginalURL are counted
    in `bad` and skipped.
    """
    path = Path(path)
    for line_no, row in _dict_rows(path, IMAGE_COLUMNS):
        if isinstance(row, list):
            bad.add("oid_field_count", str(path), line_no, ",".join(row))
            continue
        if not IMAGE_ID_RE.match(row["ImageID"]):
            bad.add("oid_bad_image_id", str(path), line_no, row["ImageID"])
            continue
        flickr_id = flickr_id_from_url(row["OriginalURL"])
        if flickr_id is None:
            bad.add("oid_no_flickr_id", str(path), line_no, row["OriginalURL"])
            continue
        rotation_text = row.get("Rotation", "") or "0"
        try:
            rotation = float(rotation_text)
        except ValueError:
            bad.add("oid_bad_rotation", str(path), line_no, rotation_text)
            continue
        yield OidImage(row["ImageID"], row.get("Subset", ""), flickr_id, row["OriginalURL"],
                       row["OriginalMD5"], rotation, line_no, row.get("Thumbnail300KURL", ""))


def read_labels(path: str | Path, bad: BadRows, machine: bool = False) -> Iterator[tuple[str, str, float]]:
    """Streams an image-level label file as `(image_id, mid, confidence)`.

    Human-verified files need Confidence 0 or 1; machine files a confidence in [0, 1].
    """
    path = Path(path)
    kind = "machine" if machine else "human"
    for line_no, row in _dict_rows(path, LABEL_COLUMNS):
        if isinstance(row, list):
            bad.add(f"{kind}_label_field_count", str(path), line_no, ",".join(row))
            continue
        try:
            confidence = float(row["Confidence"])
        except ValueError:
            bad.add(f"{kind}_label_bad_confidence", str(path), line_no, row["Confidence"])
            continue
        valid = 0.0 <= confidence <= 1.0 if machine else confidence in (0.0, 1.0)
        if not valid or not row["LabelName"].startswith("/m/"):
            bad.add(f"{kind}_label_bad_value", str(path), line_no, ",".join(row.values()))
            continue
        yield row["ImageID"], row["LabelName"], confidence
