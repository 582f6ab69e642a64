"""Search at scale: build time, peak memory, p50/p95 query latency and recall@10 against exact search.

    python bench/search_scale.py --sizes 100000 1000000 --kind hnsw [--threads 2] [--mirflickr DIR]

Photo vectors are realistic, not isotropic noise: each is the mean of the text encoder's vectors of
one real MIRFLICKR-25K photo's tags (a tag set drawn at random from the 20,015), plus a little noise
so that no two photos are the same; queries are encoded MIRFLICKR tags and class names. The index is
built by the library (`VectorIndex`, batches of 50,000 as `search.py index` streams them), saved and
loaded back; recall@10 is against brute force over the same vectors. Each size runs in its own
process so that peak memory (ru_maxrss) is that size's. Writes one JSON line per size to stdout.
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

MIRFLICKR = Path(__file__).resolve().parents[3] / "shared" / "reference" / "mirflickr25k"
BATCH = 50_000
QUERIES = 200


def word_table(mirflickr: Path, cache: Path) -> tuple[list, np.ndarray]:
    """The MIRFLICKR tag list and its encoder vectors (cached in `cache`)."""
    from app.retrieval.text_encoder import load_encoder

    words = mirflickr.joinpath("TagList.txt").read_text(encoding="utf-8").split()
    if not cache.exists():
        np.save(cache, load_encoder().encode(words))
    return words, np.load(cache)


def photo_batches(tag_sets: list, vectors: np.ndarray, size: int, seed: int):
    """`size` photo vectors in batches: a random real tag set's mean vector plus noise, normalised."""
    rng = np.random.default_rng(seed)
    for start in range(0, size, BATCH):
        n = min(BATCH, size - start)
        rows = np.stack([vectors[tag_sets[i]].mean(axis=0) for i in rng.integers(0, len(tag_sets), n)])
        rows += rng.standard_normal(rows.shape).astype(np.float32) * (0.3 / np.sqrt(rows.shape[1]))
        yield [f"p{start + i}" for i in range(n)], rows / np.linalg.norm(rows, axis=1, keepdims=True)


def one_size(args) -> dict:
    import faiss

    from app.retrieval.vector_index import VectorIndex

    faiss.omp_set_num_threads(args.threads)
    words, vectors = word_table(args.mirflickr, args.cache)
    index_of = {w: i for i, w in enumerate(words)}
    lines = args.mirflickr.joinpath("all_tags.txt").read_text(encoding="utf-8").splitlines()
    tag_sets = [[index_of[t] for t in line.split(",") if t in index_of] for line in lines]
    tag_sets = [s for s in tag_sets if s]
    start = time.perf_counter()
    kind = VectorIndex.choose_kind(args.kind, args.size, 20_000)
    index = VectorIndex(vectors.shape[1], kind, {"vectors": "bench"}, ef_search=args.ef_search)
    kept = np.zeros((args.size, vectors.shape[1]), np.float32) if args.recall else None
    for ids, rows in photo_batches(tag_sets, vectors, args.size, args.seed):
        index.add(ids, rows)
        if kept is not None:
            kept[int(ids[0][1:]):int(ids[0][1:]) + len(ids)] = rows
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        index.save(Path(tmp) / "idx")
        build = time.perf_counter() - start
        index = VectorIndex.load(Path(tmp) / "idx")
    rng = np.random.default_rng(args.seed + 1)
    queries = vectors[rng.integers(0, len(vectors), QUERIES)]
    faiss.omp_set_num_threads(1)  # one query at a time, as `search.py query` answers
    latencies = []
    for q in queries:
        t = time.perf_counter()
        index.search(q[None], 10)
        latencies.append(1000 * (time.perf_counter() - t))
    out = {"size": args.size, "kind": index.kind, "threads": args.threads, "build_s": round(build, 1),
           "p50_ms": round(float(np.percentile(latencies, 50)), 3), "p95_ms": round(float(np.percentile(latencies, 95)), 3),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "settings": index.settings,
           "load_avg_1m": round(os.getloadavg()[0], 1)}
    if kept is not None:
        from app.retrieval.vector_index import exact_neighbours

        truth = np.concatenate([exact_neighbours(kept, queries[i:i + 50], 10) for i in range(0, QUERIES, 50)])
        found = index.search(queries, 10)
        out["recall_at_10"] = round(float(np.mean([len({f"p{r}" for r in t} & {i for i, _ in f}) / 10
                                                   for t, f in zip(truth, found)])), 4)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)  # one size, in a child process
    p.add_argument("--kind", default="auto", choices=("auto", "exact", "hnsw"))
    p.add_argument("--ef-search", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-recall", dest="recall", action="store_false", help="skip brute force (its memory)")
    p.add_argument("--mirflickr", type=Path, default=MIRFLICKR)
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "mirflickr_tag_vectors.npy")
    p.add_argument("--tmp", type=Path, default=None, help="where the index is saved and loaded back")
    args = p.parse_args()
    if args.size:
        print(json.dumps(one_size(args)), flush=True)
        return
    word_table(args.mirflickr, args.cache)  # encode once, before the timed children
    for size in args.sizes:
        child = [sys.executable, __file__, "--size", str(size), "--kind", args.kind, "--ef-search",
                 str(args.ef_search), "--threads", str(args.threads), "--seed", str(args.seed), "--mirflickr",
                 str(args.mirflickr), "--cache", str(args.cache)]
        child += ([] if args.recall else ["--no-recall"]) + (["--tmp", str(args.tmp)] if args.tmp else [])
        subprocess.run(child, check=True)


if __name__ == "__main__":
    main()
