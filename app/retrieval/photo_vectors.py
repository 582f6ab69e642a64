"""Photo vectors in the text encoder's space, from a prepared dataset split streamed a batch at a time.

No training: a photo's vector is the normalised mean of its tags' encoder vectors (`TagVectors`); or,
from a run trained with `--embedding-head`, the head's vector of the photo (`head_photo_vectors`). A photo without
tags has none (`no_tags`), nor has one whose every tag the encoder refuses (`no_tag_vector`): both
are counted by the caller, not indexed. Memory does not grow with the photos: one batch of records,
and the vectors of at most `capacity` tags (least recently used dropped first).
"""

from __future__ import annotations

import collections
from typing import Iterator, Optional

import numpy as np

from app.records.dataset import DatasetInfo
from app.text.encoders import TextEncoder, encode_words

BATCH = 512


def stream_split(info: DatasetInfo, split: str, keys: list[str], batch_size: int = BATCH) -> Iterator[dict]:
    """Parsed batches of `keys` (`app.records.schema.FEATURE_SPEC` names) of a split's records, in shard order."""
    import tensorflow as tf

    from app.records import schema  # (TensorFlow: imported only where records are read)

    records = tf.data.TFRecordDataset(info.shard_files(split)).batch(batch_size)
    yield from records.map(lambda serialized: schema.parse_batch(serialized, keys)).prefetch(1)


def photo_tags(info: DatasetInfo, split: str, batch_size: int = BATCH) -> Iterator[tuple[list[str], list[list[str]]]]:
    """`(ids, each photo's tags)` of a split, a batch at a time."""
    for batch in stream_split(info, split, ["image_id", "tags"], batch_size):
        ids = [i.decode("utf-8") for i in batch["image_id"].numpy()]
        yield ids, [[t.decode("utf-8") for t in row] for row in batch["tags"].to_list()]


class TagVectors:
    """Encoder vectors of tags, each encoded once while it stays among the `capacity` most recently used.

    Args:
        encoder: the text encoder.
        capacity: the most tags kept.
    """

    def __init__(self, encoder: TextEncoder, capacity: int):
        self.encoder, self.capacity = encoder, capacity
        self._cache: collections.OrderedDict = collections.OrderedDict()  # tag -> unit vector, or None: refused

    def lookup(self, tags: list[str]) -> dict[str, Optional[np.ndarray]]:
        """`{tag: unit vector, or None where the encoder refuses it}` for each distinct tag of `tags`."""
        distinct = list(dict.fromkeys(tags))
        missing = [t for t in distinct if t not in self._cache]
        if missing:
            encoded = encode_words(self.encoder, missing, progress=False)
            for tag, vector in zip(missing, encoded.vectors):
                self._cache[tag] = None if tag in encoded.skipped else vector
        found = {}
        for tag in distinct:
            self._cache.move_to_end(tag)
            found[tag] = self._cache[tag]
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return found

    def __len__(self) -> int:
        return len(self._cache)

    def mean_vectors(self, rows: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Each photo's normalised mean tag vector `[n, dim]` (zeros where it has none), and which have one `[n]`."""
        table = self.lookup([t for row in rows for t in row])
        out = np.zeros((len(rows), self.encoder.dim), np.float32)
        has = np.zeros(len(rows), bool)
        for i, row in enumerate(rows):
            usable = [table[t] for t in row if table[t] is not None]
            if usable:
                mean = np.mean(usable, axis=0)
                norm = float(np.linalg.norm(mean))
                if norm > 1e-6:  # tags whose vectors cancel out say nothing
                    out[i], has[i] = mean / norm, True
        return out, has


def head_photo_vectors(run, head, info: DatasetInfo, split: str,
                       batch_size: int = BATCH) -> Iterator[tuple[list[str], np.ndarray]]:
    """`(ids, [n, dim] unit vectors)` of a split by a trained run's embedding head (`app.runs.embedding_head`),
    a batch at a time: whatever the run's model reads (tags, text, image), so a photo without tags has one too.

    Args:
        run: the `app.runs.trained.TrainedRun`.
        head: its `EmbeddingHead`.
    """
    import tensorflow as tf

    from app.records.pipeline import make_dataset

    model = head.model
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    photos = make_dataset(info, split, run.preprocessor, batch_size=batch_size)  # shard order, as `photo_tags`
    for (ids, _), (inputs, _, _) in zip(photo_tags(info, split, batch_size), photos):
        yield ids, call({k: v for k, v in inputs.items() if k in model.input}).numpy()
