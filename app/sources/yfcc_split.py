"""The weakly labelled `yfcc` split: which YFCC100M photos outside Open Images it holds, and their keys.

**Selection**: among the photos of the
YFCC100M file (videos excluded, by the photo/video marker, its last field) whose Flickr id is not
in the Open Images image lists, the `size` photos with the smallest `mix64(photo id)`. It does not
depend on the order of the file, and a larger size keeps every photo of a smaller one. It is made
in one pass (`BottomK`) holding only the ids of the selection (8 bytes each, twice while it runs).

A photo of the split is keyed `yfcc-<photo id>`, as its image in an images folder.
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np

from app.sources.buckets import mix64, swap_halves

SPLIT = "yfcc"
_KEY_RE = re.compile(r"yfcc-([0-9]{1,19})\Z")


def yfcc_key(photo_id: int) -> str:
    """The key (`image_id`) of a YFCC100M photo outside Open Images: `yfcc-<photo id>`."""
    return f"yfcc-{int(photo_id)}"


def parse_yfcc_key(key: str) -> Optional[int]:
    """The photo id of a `yfcc-<photo id>` key, or None for any other key."""
    match = _KEY_RE.match(key)
    return int(match.group(1)) if match and int(match.group(1)) < 1 << 64 else None


def order_keys(photo_ids: np.ndarray) -> np.ndarray:
    """The split's record order: the selection hash with its halves swapped, so that the selected
    photos (the smallest hashes) spread evenly over buckets (`app.sources.buckets.bucket_of`)."""
    return swap_halves(mix64(photo_ids))


class BottomK:
    """Streams ids and keeps the `size` distinct ones with the smallest `mix64(id)`.

    Args:
        size: how many to keep (0 keeps none).
    """

    def __init__(self, size: int):
        if size < 0:
            raise ValueError(f"size must be >= 0. Received: {size}")
        self.size = size
        self.offered = 0
        self._hashes = np.zeros(0, dtype=np.uint64)
        self._ids = np.zeros(0, dtype=np.uint64)
        self._pending: list = []
        self._pending_rows = 0
        self._limit = np.uint64(2**64 - 1)

    def offer(self, ids: np.ndarray) -> np.ndarray:
        """Offers ids (uint64); returns a mask of those that may be kept (their hash is not above the
        current cut), a superset of the final selection among them."""
        ids = np.asarray(ids, dtype=np.uint64)
        self.offered += len(ids)
        if self.size == 0:
            return np.zeros(len(ids), dtype=bool)
        hashes = mix64(ids)
        keep = hashes <= self._limit
        self._pending.append((hashes[keep], ids[keep]))
        self._pending_rows += int(keep.sum())
        if self._pending_rows > self.size:
            self._compact()
        return keep

    def merge(self, ids: np.ndarray, offered: int) -> None:
        """Adds the selection of another `BottomK` of the same size, made from `offered` ids (a span
        of the file): the bottom K of the union of bottom Ks is the bottom K of every id."""
        self.offer(ids)
        self.offered += offered - len(ids)

    def _compact(self) -> None:
        hashes = np.concatenate([self._hashes, *(h for h, _ in self._pending)])
        ids = np.concatenate([self._ids, *(i for _, i in self._pending)])
        hashes, first = np.unique(hashes, return_index=True)  # sorted; mix64 is a bijection, so ids repeat here
        self._hashes, self._ids = hashes[: self.size], ids[first][: self.size]
        self._pending, self._pending_rows = [], 0
        if self.size and len(self._hashes) == self.size:
            self._limit = self._hashes[-1]

    def selected(self) -> np.ndarray:
        """The kept ids, sorted (call once the stream has ended)."""
        self._compact()
        return np.sort(self._ids)
