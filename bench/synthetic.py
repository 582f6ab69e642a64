"""Synthetic datasets at the study's scale for benchmarks: a real dataset folder (shards, marker,
metadata) with Zipfian tags over a large vocabulary and a few labels per photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app import resources
from app.records import schema
from app.records.dataset import DatasetInfo, DatasetWriter
from app.sources.oid import read_classes
from app.text.tags import Vocabulary


def photos(count: int, tokens: list, num_classes: int, seed: int = 0, start: int = 0):
    """`count` records with Zipfian tag counts and tags, and 1-3 verified positive labels."""
    rng = np.random.default_rng(seed)
    for i in range(start, start + count):
        n = int(min(rng.zipf(1.6), 60))
        tags = list(dict.fromkeys(tokens[min(int(rng.zipf(1.1)) - 1, len(tokens) - 1)] for _ in range(n)))
        labels = sorted(set(rng.integers(0, num_classes, 3).tolist()))
        yield schema.PhotoRecord(f"{i:016x}", i, tags, "en", "yfcc", label_ids=labels,
                                  label_targets=[1.0] * len(labels), verified_pos=labels)


def write_dataset(folder: Path, sizes: dict, vocab_size: int = 110_000, limit: int = 20, per_shard: int = 8192,
                  min_shards: int = 4, num_classes: int = 500) -> DatasetInfo:
    """Writes a complete dataset folder with `sizes[split]` synthetic photos per split."""
    tokens = [f"tag{i}" for i in range(vocab_size - 2)]
    with DatasetWriter(folder) as writer:
        start = 0
        for seed, (split, count) in enumerate(sizes.items()):
            shards = schema.shard_count(count, per_shard, min_shards)
            writer.add_shards(schema.write_shards(photos(count, tokens, num_classes, seed, start), writer.path, split,
                                                   shards))
            start += count
        writer.write_metadata(read_classes(resources.CHALLENGE_CLASSES_CSV)[:num_classes],
                              resources.HIERARCHY_JSON.read_text(encoding="utf-8"),
                              Vocabulary(tokens, list(range(len(tokens), 0, -1)), limit, 1))
        writer.write_stats({"config": {"lowercase": False}, "splits": {s: {"images": n} for s, n in sizes.items()}})
        writer.commit()
    return DatasetInfo.load(folder)
