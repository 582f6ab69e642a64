"""Checking a collection's ids: no id twice, above all not in two splits (a train/test leak).

Memory is 20 bytes a photo (a 64-bit hash of the id; its line, file and split as 32-bit numbers),
not the ids; `check` needs about 50 more a photo while it sorts (measured in bench/manifest_scale.py).
Two different ids share a 64-bit hash with odds of about n²/2⁶⁵ (3e-8 at 1M photos): a false
"duplicate" error, never a missed one.
"""

from __future__ import annotations

import hashlib

import numpy as np

from app.sources.photo import ALL_SPLITS, UNLABELLED
from app.errors import InputError


def id_hash(image_id: str) -> int:
    """A 64-bit hash of an id (BLAKE2b)."""
    return int.from_bytes(hashlib.blake2b(image_id.encode("utf-8"), digest_size=8).digest(), "little")


class IdLedger:
    """Collects each photo's id hash and place; `check` raises on the first repeated id."""

    def __init__(self):
        self.files: list = []
        self._chunks: list = []
        self._hashes: list = []
        self._rows: list = []

    def add(self, image_id: str, where: str, split: str) -> None:
        """Notes a photo at `where` (`file:line`) in `split`."""
        path, line = where.rsplit(":", 1)
        if not self.files or self.files[-1] != path:
            if path not in self.files:
                self.files.append(path)
        self._hashes.append(id_hash(image_id))
        self._rows.append((int(line), self.files.index(path), ALL_SPLITS.index(split)))
        if len(self._hashes) >= 1 << 16:
            self._flush()

    def _flush(self) -> None:
        if self._hashes:
            rows = np.array(self._rows, dtype=np.uint32).reshape(-1, 3)
            self._chunks.append((np.array(self._hashes, dtype=np.uint64), rows))
            self._hashes, self._rows = [], []

    def check(self, ids_of: "callable") -> None:
        """Raises for the first repeat (in reading order).

        Args:
            ids_of: `(file, line) -> id`, to name the id in the message (read back from the source).

        Raises:
            InputError: `file:line: id 'x' is in two splits (train at file:line)` or `... repeats ...`.
        """
        self._flush()
        if not self._chunks:
            return
        hashes = np.concatenate([h for h, _ in self._chunks])
        rows = np.concatenate([r for _, r in self._chunks])
        order = np.argsort(hashes, kind="stable")
        same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
        if not len(same):
            return
        later = order[same + 1]
        second = int(later.min())  # reading order: the earliest repeat
        first = int(order[np.flatnonzero(hashes[order] == hashes[second])[0]])
        (line_a, file_a, split_a), (line_b, file_b, split_b) = rows[first].tolist(), rows[second].tolist()
        image_id = ids_of(self.files[file_b], line_b)
        if split_a != split_b:
            here, there = (_split_name(ALL_SPLITS[s]) for s in (split_b, split_a))
            raise InputError(f"{self.files[file_b]}:{line_b}: id {image_id!r} is in two splits ({here} here, {there} "
                             f"at {self.files[file_a]}:{line_a}): a train/test leak")
        raise InputError(f"{self.files[file_b]}:{line_b}: duplicate id {image_id!r} (first at "
                         f"{self.files[file_a]}:{line_a})")


def _split_name(split: str) -> str:
    return "unlabelled" if split == UNLABELLED else split
