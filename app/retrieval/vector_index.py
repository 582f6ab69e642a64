"""A nearest-neighbour index of unit vectors (faiss), saved as a folder that is read only when complete.

    INDEX/vectors.faiss   the faiss index (inner product = cosine on unit vectors)
    INDEX/ids.jsonl       one JSON string per line: the id of each vector, in index order
    INDEX/index.json      completion marker, written last: kind, size, dim, the fingerprint of what
                          the vectors were made from, and the size and SHA-256 of both files

Why faiss (faiss-cpu): it installs from one wheel beside TensorFlow 2.21 with only numpy as a
dependency (ScaNN 1.4's TensorFlow ops pin TensorFlow 2.20; usearch pulls in a second SIMD
library), it has an exact index (`IndexFlatIP`) and a graph index (`IndexHNSWFlat`) behind one
API, both take `add` after they are built (photos added later need no rebuild), and it measured
within the goals on 2 cores (bench/search_scale.py, bench/RESULTS.md).

A folder is written beside its target under a temporary name and swapped in whole, after the
marker: a build killed at any point (even `kill -9`) leaves either the old index or none, and a
folder without its marker, or with a file that does not match it, is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from app.errors import InputError
from app.fileio import atomic_write_json, swap_in_folder
from app.records.dataset import file_sha256

MARKER = "index.json"
VECTORS = "vectors.faiss"
IDS = "ids.jsonl"
FORMAT = 1
KINDS = ("auto", "exact", "hnsw")


class SearchIndexError(InputError):
    """An index folder that is missing, incomplete, corrupt or made from something else."""


def _faiss():
    import faiss

    return faiss


class VectorIndex:
    """Unit vectors and their ids, searchable by inner product (cosine).

    Args:
        dim: the vectors' width.
        kind: `exact` (every vector compared; exact results) or `hnsw` (a navigable small-world graph:
            approximate, fast at millions).
        fingerprint: what the vectors were made from (model run, dataset, encoder): a dict, compared
            whole by `require`.
        hnsw_m: graph degree for `hnsw`.
        ef_construction: candidate list while building `hnsw`.
        ef_search: candidate list while searching `hnsw` (recall against latency).
    """

    def __init__(self, dim: int, kind: str, fingerprint: dict, hnsw_m: int = 32, ef_construction: int = 80,
                 ef_search: int = 96):
        faiss = _faiss()
        if kind not in ("exact", "hnsw"):
            raise ValueError(f"index kind must be exact or hnsw. Received: {kind!r}")
        self.kind, self.dim, self.fingerprint = kind, dim, dict(fingerprint)
        self.settings = {"hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
        if kind == "exact":
            self.index = faiss.IndexFlatIP(dim)
        else:
            self.index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = ef_construction
            self.index.hnsw.efSearch = ef_search
        self.ids: list = []

    @staticmethod
    def choose_kind(kind: str, expected_size: int, exact_limit: int) -> str:
        """`kind`, with `auto` resolved: exact up to `exact_limit` vectors, else hnsw."""
        if kind not in KINDS:
            raise ValueError(f"index kind must be one of {', '.join(KINDS)}. Received: {kind!r}")
        if kind != "auto":
            return kind
        return "exact" if expected_size <= exact_limit else "hnsw"

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: list, vectors: np.ndarray) -> None:
        """Adds a batch of unit vectors (`[n, dim]`) with their ids."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
            raise ValueError(f"expected {len(ids)} vectors of width {self.dim}, got shape {vectors.shape}")
        if len(ids):
            self.index.add(vectors)
            self.ids.extend(ids)

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """The `k` nearest vectors of each query (`[q, dim]` unit vectors): `(id, cosine)`, best first."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self))
        if k <= 0:
            return [[] for _ in queries]
        scores, rows = self.index.search(queries, k)
        return [[(self.ids[r], float(s)) for r, s in zip(row_ids, row_scores) if r >= 0]
                for row_ids, row_scores in zip(rows, scores)]

    def require(self, expected: dict, where: str) -> None:
        """Refuses an index whose fingerprint differs from `expected` in any key that `expected` gives."""
        differences = [f"{key} {self.fingerprint.get(key)!r} (expected {value!r})" for key, value in expected.items()
                       if self.fingerprint.get(key) != value]
        if differences:
            raise SearchIndexError(f"{where}: this index was built from another " + "; ".join(differences)
                              + ": rebuild it (search.py index --rebuild) or choose another --index")

    def save(self, folder: str | Path) -> None:
        """Writes the index to `folder` atomically (a temporary sibling, the marker last, then swapped in)."""
        faiss = _faiss()
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
        try:
            faiss.write_index(self.index, str(tmp / VECTORS))
            with open(tmp / IDS, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(i, ensure_ascii=False) + "\n" for i in self.ids)
                handle.flush()
                os.fsync(handle.fileno())
            files = {name: {"bytes": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)}
                     for name in (VECTORS, IDS)}
            atomic_write_json(tmp / MARKER, {"format": FORMAT, "kind": self.kind, "dim": self.dim, "size": len(self),
                                             "settings": self.settings, "fingerprint": self.fingerprint,
                                             "files": files})
            os.chmod(tmp, 0o777 & ~_umask())
            swap_in_folder(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def load(cls, folder: str | Path) -> "VectorIndex":
        """Reads a complete index folder.

        Raises:
            SearchIndexError: no folder, no marker (a build that never finished), a file that does not match
                the marker, or another format.
        """
        faiss = _faiss()
        folder = Path(folder)
        marker = _read_marker(folder)
        for name, expected in marker["files"].items():
            path = folder / name
            if not path.is_file() or path.stat().st_size != expected["bytes"] or file_sha256(path) != expected["sha256"]:
                raise SearchIndexError(f"{path}: missing or changed since the index was written (expected "
                                  f"{expected['bytes']} bytes, sha256 {expected['sha256'][:12]}…): rebuild the index")
        index = cls.__new__(cls)
        index.kind, index.dim, index.fingerprint = marker["kind"], marker["dim"], marker["fingerprint"]
        index.settings = marker["settings"]
        index.index = faiss.read_index(str(folder / VECTORS))
        if index.kind == "hnsw":
            index.index.hnsw.efSearch = index.settings["ef_search"]
        index.ids = list(_read_ids(folder / IDS))
        if len(index.ids) != marker["size"] or index.index.ntotal != marker["size"]:
            raise SearchIndexError(f"{folder}: {len(index.ids)} ids and {index.index.ntotal} vectors, the marker says "
                              f"{marker['size']}: rebuild the index")
        return index


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _read_marker(folder: Path) -> dict:
    if not folder.is_dir():
        raise SearchIndexError(f"{folder}: no such index folder (build one with: python app/search.py index ...)")
    path = folder / MARKER
    if not path.is_file():
        raise SearchIndexError(f"{folder}: not a complete index (no {MARKER}: its build did not finish); rebuild it")
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise SearchIndexError(f"{path}: not a valid index marker ({err})") from err
    if not isinstance(marker, dict) or marker.get("format") != FORMAT:
        raise SearchIndexError(f"{path}: index format {marker.get('format') if isinstance(marker, dict) else None!r}, "
                          f"this version reads {FORMAT}: rebuild the index")
    return marker


def is_complete_index(folder: str | Path) -> bool:
    """Whether `folder` holds an index marker (a finished build)."""
    return (Path(folder) / MARKER).is_file()


def _read_ids(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the `k` highest inner products of each query, by brute force in numpy (the reference
    that tests and benchmarks compare the index with)."""
    scores = np.atleast_2d(queries) @ vectors.T
    top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)

