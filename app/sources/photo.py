"""The common photo record of every source (`app.sources.base.Source`), and the deterministic hash split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional

from app.errors import InputError

SPLITS = ("train", "validation", "test")
UNLABELLED = "yfcc"  # the dataset split of photos without verified labels (weak targets, a teacher's material)
ALL_SPLITS = (*SPLITS, UNLABELLED)


@dataclass
class CollectionPhoto:
    """One photo as a source yields it: what the dataset builder turns into a record.

    A collection reader (manifest, NUS-WIDE, COCO) fills the first nine fields; the Open Images ⋈
    YFCC100M join also the last four.

    Args:
        image_id: the photo's id (any non-empty string).
        where: `file:line` of the photo's row, for messages.
        image: a path relative to the images folder, a URL, or "" (none).
        tags: the user's tags, raw.
        text: free text such as a caption ("" for none).
        labels: positive class indices (verified, or weak targets in the unlabelled split).
        negatives: verified negative class indices (`--labels partial`), or None.
        split: `train`, `validation`, `test`, `yfcc` (`UNLABELLED`), or None (the hash split decides).
        flickr_id: the Flickr photo id when known, else 0.
        md5: the image's expected `OriginalMD5` ("" for none).
        tag_source: where the tags came from (`yfcc`, `extra`, `none`); "" for the photo's own tags.
        scores: machine labels `{class index: confidence}`: training targets where no label is verified.
        autotags: autotag scores `{class index: score}`: an unlabelled photo's training targets.
    """

    image_id: str
    where: str
    image: str = ""
    tags: list = field(default_factory=list)
    text: str = ""
    labels: list = field(default_factory=list)
    negatives: Optional[list] = None
    split: Optional[str] = None
    flickr_id: int = 0
    md5: str = ""
    tag_source: str = ""
    scores: dict = field(default_factory=dict)
    autotags: dict = field(default_factory=dict)


def unit_hash(image_id: str) -> float:
    """A number in [0, 1) fixed by the id (the first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(image_id.encode("utf-8")).digest()[:8], "big") / 2.0**64


@dataclass(frozen=True)
class HashSplit:
    """Splits photos by a hash of their id: `test` below `test`, then `validation` below
    `test + validation`, the rest `train`. Validation is cut from the photos the test split leaves,
    so changing the validation fraction never moves a test photo. Another seed draws another split
    (seed 0 hashes the id alone).

    Args:
        test: the fraction of photos in `test`.
        validation: the fraction of photos in `validation`.
        seed: the split's seed.
    """

    test: float = 0.2
    validation: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if not (0 <= self.test < 1 and 0 <= self.validation < 1 and self.test + self.validation < 1):
            raise InputError(f"split fractions must be in [0, 1) with test + validation < 1. Received: "
                             f"test {self.test}, validation {self.validation}")

    def __call__(self, image_id: str) -> str:
        u = unit_hash(f"{self.seed}/{image_id}" if self.seed else image_id)
        return "test" if u < self.test else "validation" if u < self.test + self.validation else "train"
