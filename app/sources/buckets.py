"""On-disk buckets: rows of many sources partitioned by a hash of their photo, read back bucket by bucket.

At Open Images scale the join cannot hold every photo's rows in memory, so each source is streamed
once into bucket files (`BucketFiles`); a bucket then holds every row of the photos whose order key
falls into its range, and is read back alone.

Order keys: `mix64` scrambles a 64-bit key (an ImageID's number, a Flickr id) by a bijection, so
distinct keys have distinct order keys. Buckets are equal ranges of the order key (`bucket_of`), and
the join sorts each bucket's photos by order key: photos come out in order-key order whatever the
number of buckets.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional

import numpy as np

def mix64(keys: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, vectorised: a bijection of uint64 that scrambles every bit."""
    z = np.array(keys, dtype=np.uint64, ndmin=1)  # arrays wrap on overflow, as the mixer expects
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def swap_halves(keys: np.ndarray) -> np.ndarray:
    """The 64-bit keys with their 32-bit halves swapped (a bijection)."""
    keys = np.asarray(keys, dtype=np.uint64)
    return (keys << np.uint64(32)) | (keys >> np.uint64(32))


def bucket_of(order: np.ndarray, count: int) -> np.ndarray:
    """The bucket of each order key: `count` equal ranges of the uint64 space, in key order."""
    if not 1 <= count < 1 << 32:
        raise ValueError(f"bucket count must be in [1, 2**32). Received: {count}")
    high = np.asarray(order, dtype=np.uint64) >> np.uint64(32)
    return ((high * np.uint64(count)) >> np.uint64(32)).astype(np.int64)


def take(column, rows: np.ndarray):
    """`column[rows]` for a numpy array or a list."""
    if isinstance(column, np.ndarray):
        return column[rows]
    return [column[i] for i in rows.tolist()]


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """A mask of the first row of each distinct key, in row order."""
    _, first = np.unique(keys, return_index=True)
    mask = np.zeros(len(keys), dtype=bool)
    mask[first] = True
    return mask


class BucketFiles:
    """Rows of named streams, appended into `count` bucket files per stream and read back per bucket.

    Each stream has fixed columns: numpy dtypes, or `list` for Python values. `add` buffers pickled
    chunks in memory up to `buffer_bytes`, then appends them to their files; a bucket's rows come
    back in the order they were added.

    Args:
        root: a new folder for the files (removed by `remove`).
        count: the number of buckets.
        streams: `{stream: {column: numpy dtype or list}}`.
        buffer_bytes: pickled bytes held before writing.
    """

    def __init__(self, root: str | Path, count: int, streams: Mapping[str, Mapping[str, object]],
                 buffer_bytes: int = 4 << 20):
        self.root = Path(root)
        self.count = count
        self.streams = {name: dict(columns) for name, columns in streams.items()}
        self.buffer_bytes = buffer_bytes
        self._buffers: dict = {}
        self._buffered = 0
        for name in self.streams:
            (self.root / name).mkdir(parents=True)

    def add(self, stream: str, buckets: np.ndarray, columns: Mapping[str, object]) -> None:
        """Appends rows: `buckets[i]` is row i's bucket, `columns[name][i]` its values."""
        if set(columns) != set(self.streams[stream]):
            raise ValueError(f"{stream}: expected columns {sorted(self.streams[stream])}, got {sorted(columns)}")
        buckets = np.asarray(buckets, dtype=np.int64)
        if not len(buckets):
            return
        order = np.argsort(buckets, kind="stable")
        ordered = buckets[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        for start, end in zip(starts.tolist(), np.r_[starts[1:], len(order)].tolist()):
            rows = order[start:end]
            chunk = pickle.dumps({name: take(values, rows) for name, values in columns.items()},
                                 protocol=pickle.HIGHEST_PROTOCOL)
            self._buffers.setdefault((stream, int(ordered[start])), []).append(chunk)
            self._buffered += len(chunk)
        if self._buffered > self.buffer_bytes:
            self.flush()

    def flush(self) -> None:
        """Appends every buffered chunk to its bucket file."""
        for (stream, bucket), chunks in sorted(self._buffers.items()):
            with open(self._path(stream, bucket), "ab") as handle:
                handle.writelines(chunks)
        self._buffers.clear()
        self._buffered = 0

    def append_files(self, folder: str | Path, stream: str) -> None:
        """Appends the bucket files of another `BucketFiles`' stream (`folder`: its stream folder, with
        as many buckets) after this one's rows, bucket by bucket."""
        self.flush()
        for path in sorted(Path(folder).glob("*.pickle")):
            with open(path, "rb") as source, open(self.root / stream / path.name, "ab") as target:
                shutil.copyfileobj(source, target, 1 << 20)

    def iter_chunks(self, stream: str, bucket: int,
                    keep: Optional[Callable[[dict], np.ndarray]] = None) -> Iterator[dict]:
        """A bucket's chunks of one stream, in the order added (flush first).

        Args:
            stream: the stream.
            bucket: the bucket.
            keep: given a chunk, a mask of the rows to keep (the others are dropped at once).
        """
        path = self._path(stream, bucket)
        if not path.exists():
            return
        with open(path, "rb") as handle:
            while True:
                try:
                    chunk = pickle.load(handle)
                except EOFError:
                    return
                if keep is not None:
                    rows = np.flatnonzero(keep(chunk))
                    chunk = {name: take(values, rows) for name, values in chunk.items()}
                yield chunk

    def read(self, stream: str, bucket: int, keep: Optional[Callable[[dict], np.ndarray]] = None) -> dict:
        """A bucket's rows of one stream as whole columns (empty columns when it has none)."""
        chunks = list(self.iter_chunks(stream, bucket, keep))
        out = {}
        for name, kind in self.streams[stream].items():
            parts = [chunk[name] for chunk in chunks]
            if kind is list:
                out[name] = [value for part in parts for value in part]
            else:
                out[name] = np.concatenate(parts) if parts else np.zeros(0, dtype=kind)
        return out

    def remove(self) -> None:
        """Deletes the files."""
        self._buffers.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def _path(self, stream: str, bucket: int) -> Path:
        return self.root / stream / f"{bucket:06d}.pickle"
