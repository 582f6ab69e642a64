"""A nearest-neighbour index of unit vectors (faiss), kept as a folder that is read only when complete.

    INDEX/vectors.faiss   the faiss index: inner product, which is the cosine on unit vectors
    INDEX/ids.jsonl       the id of each vector, in index order (one JSON string a line)
    INDEX/index.json      the marker, written last: kind, size, dimension, the fingerprint of what the
                          vectors were made from, and the size and SHA-256 of both files (the sizes
                          are checked at every load)

Two kinds behind one API, both taking `add` after they are built (photos added later need no
rebuild): `exact` (`IndexFlatIP`: every vector compared) and `hnsw` (`IndexHNSWFlat`: a navigable
small-world graph, approximate, fast at millions). An index is saved into a temporary sibling folder
(`app.fileio.atomic_folder`) that is swapped in only once its marker is written: a save killed at any
point, even by `kill -9`, leaves the old index or none. A folder without its marker, or with a file
missing or not of the size its marker records, is refused. One `index` run writes a folder at a time
(a lock file beside it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from app.errors import InputError
from app.fileio import atomic_folder, atomic_write_json, read_folder_marker
from app.records.dataset import file_sha256

MARKER = "index.json"
VECTORS = "vectors.faiss"
IDS = "ids.jsonl"
FORMAT = 1
KINDS = ("exact", "hnsw")
HNSW_LINKS = 32  # graph neighbours per vector (faiss's M)
HNSW_EF_CONSTRUCTION = 80  # candidates kept while the graph is built
REBUILD_IT = "make it again with `python app/search.py index --rebuild`"


class SearchIndexError(InputError):
    """An index folder that is missing, incomplete, changed, or made from something else."""


def choose_kind(kind: str, photos: int, exact_limit: int) -> str:
    """`kind` (`auto`, `exact` or `hnsw`) with `auto` resolved: exact up to `exact_limit` photos, else hnsw."""
    if kind != "auto":
        return kind
    return "exact" if photos <= exact_limit else "hnsw"


class VectorIndex:
    """Unit vectors and their ids, searched by inner product (cosine).

    Args:
        dim: the vectors' width.
        kind: `exact` or `hnsw`.
        fingerprint: what the vectors were made from (a JSON-able dict, saved in the marker).
        ef_search: hnsw: candidates kept while searching (recall against time).
    """

    def __init__(self, dim: int, kind: str, fingerprint: dict, ef_search: int = 96):
        import faiss

        if kind not in KINDS:
            raise ValueError(f"index kind must be one of {', '.join(KINDS)}. Received: {kind!r}")
        self.dim, self.kind, self.fingerprint, self.ef_search = dim, kind, dict(fingerprint), ef_search
        if kind == "exact":
            self.faiss_index = faiss.IndexFlatIP(dim)
        else:
            self.faiss_index = faiss.IndexHNSWFlat(dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
            self.faiss_index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            self.faiss_index.hnsw.efSearch = ef_search
        self.ids: list[str] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        """Adds unit vectors `[n, dim]` under their ids (a batch; nothing for an empty one)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected {len(ids)} vectors of width {self.dim}. Received: shape {vectors.shape}")
        if len(ids):
            self.faiss_index.add(vectors)
            self.ids.extend(ids)

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """The `k` vectors nearest each query (unit vectors `[q, dim]`): `(id, cosine)`, best first."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self))
        if k == 0:
            return [[] for _ in queries]
        scores, rows = self.faiss_index.search(queries, k)
        return [[(self.ids[r], float(s)) for r, s in zip(found, found_scores) if r >= 0]
                for found, found_scores in zip(rows, scores)]

    def save(self, folder: str | Path) -> None:
        """Writes the index as `folder`, replacing any index there, whole or not at all."""
        import faiss

        with atomic_folder(folder) as tmp:
            faiss.write_index(self.faiss_index, str(tmp / VECTORS))
            with open(tmp / IDS, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(i, ensure_ascii=False) + "\n" for i in self.ids)
            files = {name: {"bytes": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)}
                     for name in (VECTORS, IDS)}
            atomic_write_json(tmp / MARKER, {"format": FORMAT, "kind": self.kind, "dim": self.dim, "size": len(self),
                                             "ef_search": self.ef_search, "fingerprint": self.fingerprint,
                                             "files": files})

    @classmethod
    def load(cls, folder: str | Path) -> "VectorIndex":
        """Reads a complete index folder.

        Raises:
            SearchIndexError: no such folder; no marker (a save that never finished); a file missing or
                not the one the marker describes; another format.
        """
        import faiss

        folder = Path(folder)
        marker = read_marker(folder)
        try:
            _check_files(folder, marker["files"])
            index = cls(marker["dim"], marker["kind"], marker["fingerprint"], marker["ef_search"])
            index.faiss_index = faiss.read_index(str(folder / VECTORS))
            if index.kind == "hnsw":
                index.faiss_index.hnsw.efSearch = index.ef_search
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            if isinstance(err, SearchIndexError):
                raise
            what = str(err).strip().splitlines()[-1] if str(err).strip() else ""
            raise SearchIndexError(f"{folder}: unreadable search index ({type(err).__name__}: {what[:200]}); "
                                   f"{REBUILD_IT}") from None
        index.ids = list(_read_ids(folder / IDS))
        if not len(index.ids) == index.faiss_index.ntotal == marker["size"] or index.faiss_index.d != index.dim:
            raise SearchIndexError(f"{folder}: {len(index.ids)} ids and {index.faiss_index.ntotal} vectors of width "
                                   f"{index.faiss_index.d}, its {MARKER} says {marker['size']} of {index.dim}; "
                                   f"{REBUILD_IT}")
        return index


def is_index(folder: str | Path) -> bool:
    """Whether `folder` holds an index marker (a finished save); not checked further."""
    return (Path(folder) / MARKER).is_file()


def read_marker(folder: str | Path) -> dict:
    """The marker of a finished index folder (`index.json`).

    Raises:
        SearchIndexError: no folder, no marker (a build that did not finish), not JSON, another format.
    """
    folder = Path(folder)
    if not folder.exists():
        raise SearchIndexError(f"{folder}: no such search index; make one with `python app/search.py index --data "
                               f"DATA --out {folder}`")
    if folder.is_dir() and not (folder / MARKER).exists() and not (folder / VECTORS).exists():
        raise SearchIndexError(f"{folder}: not a search index (no {MARKER}); give the --out of `python app/search.py "
                               f"index`")
    return read_folder_marker(folder, MARKER, FORMAT, "search index", "the build that wrote it did not finish",
                              REBUILD_IT, SearchIndexError)


def _check_files(folder: Path, files: dict) -> None:
    """Each file is there at its recorded size (its SHA-256 is recorded too, but not read at every query:
    at 10^6 photos that is 2 GB to hash)."""
    for name, expected in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != expected["bytes"]:
            raise SearchIndexError(f"{path}: missing or changed since the index was written (its {MARKER} says "
                                   f"{expected['bytes']} bytes, SHA-256 {expected['sha256'][:12]}…); {REBUILD_IT}")


def _read_ids(path: Path) -> Iterator[str]:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                photo = json.loads(line.decode("utf-8"))
            except ValueError:  # not UTF-8, not JSON
                photo = None
            if not isinstance(photo, str):
                raise SearchIndexError(f"{path}:{number}: not a JSON string photo id: {line.strip()[:80]!r}; "
                                       f"{REBUILD_IT}")
            yield photo


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of each query's `k` highest inner products with `vectors`, best first, by brute force
    in numpy (the reference that bench/search_scale.py measures recall against)."""
    scores = np.atleast_2d(queries) @ vectors.T
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)
