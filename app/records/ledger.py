"""Checking a collection's ids: no id twice, above all not in two splits (a train/test leak); and
its images: one image's bytes under ids in two splits is a leak by content.

Memory is 20 bytes a photo (a 64-bit hash of the id; its line, file and split as 32-bit numbers),
not the ids; `check` needs about 50 more a photo while it sorts (measured in bench/manifest_scale.py).
Two different ids share a 64-bit hash with odds of about n²/2⁶⁵ (3e-8 at 1M photos): a false
"duplicate" error, never a missed one.
"""

from __future__ import annotations

import hashlib

import numpy as np

from app.badrows import BadRows
from app.sources.photo import ALL_SPLITS, UNLABELLED
from app.errors import InputError


def id_hash(value: str | bytes) -> int:
    """A 64-bit hash of an id or of image bytes (BLAKE2b)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class IdLedger:
    """Collects each photo's id hash and place; `check` raises on the first repeated id."""

    def __init__(self):
        self.files: list = []
        self._chunks: list = []
        self._hashes: list = []
        self._rows: list = []

    def add(self, image_id: str, where: str, split: str) -> None:
        """Notes a photo at `where` (`file:line`) in `split`."""
        self.add_hash(id_hash(image_id), where, split)

    def add_hash(self, key: int, where: str, split: str) -> None:
        """Notes a 64-bit key (an id's or an image's hash) at `where` (`file:line`) in `split`."""
        path, line = where.rsplit(":", 1)
        if not self.files or self.files[-1] != path:
            if path not in self.files:
                self.files.append(path)
        self._hashes.append(key)
        self._rows.append((int(line), self.files.index(path), ALL_SPLITS.index(split)))
        if len(self._hashes) >= 1 << 16:
            self._flush()

    def _flush(self) -> None:
        if self._hashes:
            rows = np.array(self._rows, dtype=np.uint32).reshape(-1, 3)
            self._chunks.append((np.array(self._hashes, dtype=np.uint64), rows))
            self._hashes, self._rows = [], []

    def repeats(self) -> list:
        """Every repeated key in reading order, as `((line, file index, split index) where it was
        first seen, the same where it repeats)`."""
        self._flush()
        if not self._chunks:
            return []
        hashes = np.concatenate([h for h, _ in self._chunks])
        rows = np.concatenate([r for _, r in self._chunks])
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        same = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
        firsts = order[np.searchsorted(ordered, ordered[same], side="left")]
        return sorted(((tuple(rows[a].tolist()), tuple(rows[b].tolist())) for a, b in zip(firsts, order[same])),
                      key=lambda pair: (pair[1][1], pair[1][0]))

    def place(self, row: tuple) -> tuple[str, int, str]:
        """`(file, line, split)` of a row of `repeats`."""
        line, file, split = row
        return self.files[file], line, _split_name(ALL_SPLITS[split])

    def check(self, ids_of: "callable") -> None:
        """Raises for the first repeat (in reading order).

        Args:
            ids_of: `(file, line) -> id`, to name the id in the message (read back from the source).

        Raises:
            InputError: `file:line: id 'x' is in two splits (train at file:line)` or `... repeats ...`.
        """
        repeats = self.repeats()
        if not repeats:
            return
        (file_a, line_a, split_a), (file_b, line_b, split_b) = (self.place(row) for row in repeats[0])
        image_id = ids_of(file_b, line_b)
        if split_a != split_b:
            raise InputError(f"{file_b}:{line_b}: id {image_id!r} is in two splits ({split_b} here, {split_a} "
                             f"at {file_a}:{line_a}): a train/test leak")
        raise InputError(f"{file_b}:{line_b}: duplicate id {image_id!r} (first at {file_a}:{line_a})")


class ImageLedger:
    """One image's bytes under several ids: in two splits a leak by content (an error), within a
    split a counted `image_repeated`. Memory is as `IdLedger`'s: a 64-bit hash of the bytes a photo."""

    def __init__(self):
        self._ledger = IdLedger()

    def add(self, data: bytes, where: str, split: str) -> None:
        """Notes a photo's image bytes (nothing for a photo without an image)."""
        if data:
            self._ledger.add_hash(id_hash(data), where, split)

    def check(self, ids_of: "callable", bad: BadRows) -> None:
        """Counts repeats within a split in `bad`; raises for one image in two splits.

        Raises:
            InputError: `file:line: photo 'b' has the same image as photo 'a' (train at file:line): a
                train/test leak by content`.
        """
        for first, repeat in self._ledger.repeats():
            (file_a, line_a, split_a), (file_b, line_b, split_b) = (self._ledger.place(row) for row in (first, repeat))
            if split_a != split_b:
                raise InputError(f"{file_b}:{line_b}: photo {ids_of(file_b, line_b)!r} ({split_b}) has the same image "
                                 f"bytes as photo {ids_of(file_a, line_a)!r} ({split_a} at {file_a}:{line_a}): a "
                                 f"train/test leak by content")
            bad.add("image_repeated", file_b, line_b, f"the same image bytes as {file_a}:{line_a} ({split_a})")


def _split_name(split: str) -> str:
    return "unlabelled" if split == UNLABELLED else split
