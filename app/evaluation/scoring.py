"""A finished run's model scoring a dataset's splits, streamed batch by batch."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from app.records.dataset import DatasetInfo
from app.records.pipeline import make_dataset
from app.evaluation.truth import PairScores, SplitTruth
from app.runs.rundir import RunDir
from app.runs.trained import TrainedRun


class TrainedModel(TrainedRun):
    """A finished run (`app.runs.trained.TrainedRun`) that scores a dataset's splits.

    Args:
        run_dir: a run folder whose training finished.

    Raises:
        RunError: the folder holds no finished run.
    """

    def __init__(self, run_dir: str | Path | RunDir):
        super().__init__(run_dir)
        # One graph for every batch: eager calls of a ResNet take about 2x the time and 3.5x the memory
        # (4.1 GB against 1.2 GB at 256 photos of 64x64); the last, smaller batch retraces once.
        self._predict = tf.function(lambda inputs: self.model(inputs, training=False), reduce_retracing=True)

    def score(self, info: DatasetInfo, split: str, truth: SplitTruth, batch_size: int = 256,
              bar: Optional[tqdm] = None, withhold: tuple = ()) -> np.ndarray:
        """Each verified pair's score on a split (float32), streamed batch by batch.

        Args:
            info: the dataset.
            split: the split `truth` was read from.
            truth: the split's ground truth (`app.evaluation.truth.load_truth`).
            batch_size: photos per batch.
            bar: a progress bar, advanced by the photos scored.
            withhold: `"image"` and/or `"tags"` (of those the model uses): score the photos as if
                they came without them, as serving would (no image bytes, no tags).

        Returns:
            One score per pair of `truth.pairs`.
        """
        pairs = PairScores(truth)
        for scores in self.score_batches(info, split, batch_size, withhold):
            pairs.add(scores)
            if bar is not None:
                bar.update(len(scores))
        return pairs.result()

    def score_batches(self, info: DatasetInfo, split: str, batch_size: int = 256,
                      withhold: tuple = (), files: Optional[list] = None) -> Iterator[np.ndarray]:
        """Streams a split's scores `[batch, classes]` (float32), in shard order (see `score`); with
        `files`, those shards' only."""
        self.check_dataset(info)
        p = self.preprocessor
        withhold = tuple(w for w in withhold if (p.uses_image if w == "image" else p.uses_tags))
        ds = make_dataset(info, split, p, batch_size=batch_size, withhold=withhold, files=files)
        for x, _, _ in ds:
            yield self._predict({k: v for k, v in x.items() if k in self.model.input}).numpy()


def apply_floor(scores: np.ndarray, floor: float) -> np.ndarray:
    """float64 scores with those under `floor` zeroed (no floor: unchanged)."""
    scores = np.asarray(scores, np.float64)
    return np.where(scores >= floor, scores, 0.0) if floor > 0 else scores
