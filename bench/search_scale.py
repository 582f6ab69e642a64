"""Photo search at scale: build time, peak memory, single-query latency and recall@10 of the index.

    python bench/search_scale.py                          # 10^5 and 10^6 photos, exact and hnsw
    python bench/search_scale.py --sizes 10000 --kinds hnsw   # a smoke run

The photos are random unit vectors of 512 dimensions (the bundled text encoder's width), the
queries other random unit vectors: the worst case for a graph index, since every photo is about as
far from a query as every other (the true top 10 are barely nearer than the rest). With `--topics T`,
photos and queries lie around T random topic centres (cosine about 0.5 between two photos of a
topic), as the mean tag vectors of photos that share tags do. Each (size, kind) runs in its own process, so that its peak memory
(ru_maxrss, measured once the index is built, saved, loaded back and queried) is its own. The index
is `app.retrieval.vector_index.VectorIndex`, fed batches of `search.py index`'s default size, then
saved and loaded back as a query does; each query is timed alone, on one thread, as `search.py
query` answers it. Recall@10 is against brute force over the same vectors, generated again batch by
batch afterwards (they are never all held beside the index). One JSON line per run on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

DIM = 512
BATCH = 512  # photos added at a time (SearchConfig.batch_size)
K = 10
QUERY_STREAM = 1 << 30  # the queries' random stream, apart from every photo batch's
CENTRE_STREAM = 1 << 31  # the topic centres' stream


def photo_batches(size: int, seed: int, topics: int = 0):
    """`(first row, unit vectors)` batches of `size` photos, the same for the same seed: isotropic random
    vectors, or with `topics`, each a random topic's centre plus as much random noise (`around`)."""
    centres = topic_centres(topics, seed)
    for number, start in enumerate(range(0, size, BATCH)):
        rng = np.random.default_rng([seed, number])
        yield start, around(centres, min(BATCH, size - start), rng)


def topic_centres(topics: int, seed: int) -> np.ndarray | None:
    """`[topics, DIM]` random unit centres, or None for isotropic photos."""
    return unit(np.random.default_rng([seed, CENTRE_STREAM]).standard_normal((topics, DIM), np.float32)) if topics else None


def around(centres: np.ndarray | None, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` unit vectors: random, or a random centre's plus a random unit vector, normalised (cosine about
    0.71 to their centre, 0.5 to another photo of the topic: photos that share tags are near, as tag vectors are)."""
    noise = unit(rng.standard_normal((count, DIM), np.float32))
    return noise if centres is None else unit(centres[rng.integers(0, len(centres), count)] + noise)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def exact_top(queries: np.ndarray, size: int, seed: int, topics: int = 0) -> np.ndarray:
    """Each query's `K` nearest photo rows by brute force, merged batch by batch."""
    from app.retrieval.vector_index import exact_neighbours

    best_rows = np.zeros((len(queries), 0), np.int64)
    best_scores = np.zeros((len(queries), 0), np.float32)
    for start, rows in photo_batches(size, seed, topics):
        top = exact_neighbours(rows, queries, K)
        best_rows = np.concatenate([best_rows, top + start], axis=1)
        best_scores = np.concatenate([best_scores, np.take_along_axis(queries @ rows.T, top, axis=1)], axis=1)
        keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :K]
        best_rows, best_scores = np.take_along_axis(best_rows, keep, axis=1), np.take_along_axis(best_scores, keep, axis=1)
    return best_rows


def one_run(args: argparse.Namespace) -> list[dict]:
    """Builds, saves, loads back and queries one index (at each `--ef-search` for hnsw); returns its figures."""
    import faiss

    from app.retrieval.vector_index import VectorIndex

    faiss.omp_set_num_threads(args.threads)
    started = time.perf_counter()
    index = VectorIndex(DIM, args.kind, {"vectors": "bench"}, ef_search=args.ef_search[0])
    for start, rows in photo_batches(args.size, args.seed, args.topics):
        index.add([f"p{start + i}" for i in range(len(rows))], rows)
    if args.tmp:
        args.tmp.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        index.save(Path(tmp) / "index")
        build_s = time.perf_counter() - started
        index = VectorIndex.load(Path(tmp) / "index")
    queries = around(topic_centres(args.topics, args.seed), args.queries, np.random.default_rng([args.seed, QUERY_STREAM]))
    faiss.omp_set_num_threads(1)  # one query at a time, as `search.py query` answers
    runs = []
    for ef in args.ef_search if args.kind == "hnsw" else [None]:
        if ef is not None:
            index.faiss_index.hnsw.efSearch = ef
        latencies, found = [], []
        for query in queries:
            timer = time.perf_counter()
            found.append(index.search(query[None], K)[0])
            latencies.append(1000 * (time.perf_counter() - timer))
        runs.append({"size": args.size, "topics": args.topics, "kind": args.kind, "ef_search": ef, "build_threads": args.threads,
                     "build_s": round(build_s, 1), "p50_ms": round(float(np.percentile(latencies, 50)), 3),
                     "p95_ms": round(float(np.percentile(latencies, 95)), 3), "found": found})
    truth = exact_top(queries, args.size, args.seed, args.topics)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for run in runs:
        found = run.pop("found")
        run["recall_at_10"] = round(float(np.mean([len({f"p{r}" for r in rows} & {photo for photo, _ in hits}) / K
                                                   for rows, hits in zip(truth, found)])), 4)
        run.update(peak_rss_mb=round(peak_mb), load_avg_1m=round(os.getloadavg()[0], 1))
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="photos in the index")
    p.add_argument("--kinds", nargs="+", choices=("exact", "hnsw"), default=["exact", "hnsw"])
    p.add_argument("--ef-search", type=int, nargs="+", default=[96],
                   help="hnsw: candidates kept while searching (several: each measured on the same index)")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--topics", type=int, default=0,
                   help="photos and queries around this many random topic centres (0: isotropic, the worst case)")
    p.add_argument("--threads", type=int, default=2, help="faiss threads while building")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", type=Path, help="where each index is saved and loaded back [default: the system's]")
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)  # one run, in a child process
    p.add_argument("--kind", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.size:
        for run in one_run(args):
            print(json.dumps(run), flush=True)
        return
    for size in args.sizes:
        for kind in args.kinds:
            child = [sys.executable, __file__, "--size", str(size), "--kind", kind, "--ef-search", *map(str, args.ef_search),
                     "--queries", str(args.queries), "--topics", str(args.topics), "--threads", str(args.threads), "--seed", str(args.seed)]
            subprocess.run(child + (["--tmp", str(args.tmp)] if args.tmp else []), check=True)


if __name__ == "__main__":
    main()
