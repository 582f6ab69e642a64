"""ImageIDs of any form (not only Open Images' 16 hex digits) as the uint64 keys the CSV scorer sorts.

The reference evaluator accepts any string as an ImageID. Here the labelled ids of a labels file
are keyed by their rank in code-point order (so the image axis stays in ImageID order, the
metric's tie order, and Open Images ids keep their order), and any other id (a prediction for an
unlabelled photo) gets a key past them, in order of first appearance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.sources.csvread import CsvReader, arrow_to_numpy
from app.sources.oid import LABEL_COLUMNS, ImageIdKeys, image_keys

UNLABELLED = 1 << 62  # keys of ids outside the labels file start here


class AnyImageIds(ImageIdKeys):
    """Keys for ImageIDs of any non-empty form.

    Args:
        labelled: the labelled ImageIDs, distinct and sorted.
    """

    def __init__(self, labelled: pa.Array):
        self.labelled = labelled
        self.others: dict = {}
        self.other_ids: list = []

    @classmethod
    def from_labels(cls, path: str | Path) -> "AnyImageIds":
        """The ImageIDs of an `ImageID,Source,LabelName,Confidence` file (bad lines are left to the
        second, checking read)."""
        seen: set = set()
        for chunk in CsvReader(path, LABEL_COLUMNS, numbers=("Confidence",)):
            seen.update(pc.unique(chunk.columns["ImageID"]).to_pylist())
        seen.discard(None)
        return cls(pa.array(sorted(seen), type=pa.string()))

    def keys(self, column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """`(keys, ok)`: ok is False for an empty id."""
        column = column.cast(pa.string())
        rank = pc.index_in(column, value_set=self.labelled)
        known = rank.is_valid().to_numpy(zero_copy_only=False)
        keys = arrow_to_numpy(rank.fill_null(0).cast(pa.int64()), np.int64).astype(np.uint64)
        unknown = np.flatnonzero(~known)
        if len(unknown):
            encoded = pc.dictionary_encode(column.take(pa.array(unknown)))
            mapped = np.array([self._other_key(i) for i in encoded.dictionary.to_pylist()], dtype=np.uint64)
            keys[unknown] = mapped[arrow_to_numpy(encoded.indices.cast(pa.int64()), np.int64)]
        ok = pc.fill_null(pc.greater(pc.utf8_length(column), 0), False).to_numpy(zero_copy_only=False)
        return keys, ok

    def _other_key(self, image_id: str) -> int:
        if image_id not in self.others:
            self.others[image_id] = UNLABELLED + len(self.other_ids)
            self.other_ids.append(image_id)
        return self.others[image_id]

    def text(self, key: int) -> str:
        """The ImageID of a key."""
        key = int(key)
        return self.other_ids[key - UNLABELLED] if key >= UNLABELLED else self.labelled[key].as_py()


def order_keys(ids: pa.Array) -> np.ndarray:
    """uint64 keys whose order is the ImageIDs' order: the number Open Images ids (16 hex digits)
    spell when every id is one, else each id's rank in byte (code-point) order (equal ids, equal keys).

    Args:
        ids: a pyarrow binary or string array.
    """
    if not len(ids):
        return np.zeros(0, dtype=np.uint64)
    keys, ok = image_keys(ids.cast(pa.binary()))
    if ok.all():
        return keys
    rank = pc.rank(ids.cast(pa.binary()), sort_keys="ascending", tiebreaker="dense")
    return arrow_to_numpy(rank.cast(pa.int64()), np.int64).astype(np.uint64)
