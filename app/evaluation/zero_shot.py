"""Class scores from a run's embedding head, for any class list: zero-shot evaluation.

    photo ─ embedding head ─ unit vector ─ cosine with each class name's encoder vector ─ calibration ─ score

`split_average_precisions` streams a split through any scorer and gives each class's AP (Open Images
protocol); `evaluate_zero_shot` scores a dataset whose class list is not the run's (`evaluate.py`),
and `generalized_zero_shot` the run's own classes, the unseen ones by the head and the seen ones by
the sigmoid head (the generalized zero-shot protocol of `train.py --unseen-classes`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from app.errors import InputError
from app.evaluation.metrics import sparse_average_precisions
from app.evaluation.truth import PairScores, load_truth
from app.model.zero_shot import class_phrases, cosine_scores
from app.records.dataset import DatasetInfo
from app.records.pipeline import make_dataset
from app.records.unseen import UnseenClasses
from app.runs.embedding_head import EmbeddingHead, record_encoder
from app.runs.trained import TrainedRun
from app.text.encoders import VectorCache


def model_scorer(model) -> Callable[[dict], np.ndarray]:
    """`inputs -> [batch, out]` numpy: `model` in one traced function, fed the inputs it takes."""
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return lambda inputs: call({k: v for k, v in inputs.items() if k in model.input}).numpy()


def split_average_precisions(info: DatasetInfo, split: str, preprocessor, score: Callable[[dict], np.ndarray],
                             protocol: str = "challenge") -> np.ndarray:
    """`[info.num_classes]` AP of `score`'s `[batch, classes]` output on a split (NaN: a class without a positive)."""
    truth = load_truth(info, split)
    pairs = PairScores(truth)
    for inputs, _, _ in make_dataset(info, split, preprocessor, batch_size=256):
        pairs.add(np.asarray(score(inputs), np.float32))
    return sparse_average_precisions(truth.pairs, pairs.result(), protocol)


def class_vectors(encoder, classes: list) -> np.ndarray:
    """`[classes, dim]` encoder vectors of `(id, name)` classes' names (refused: a name the encoder cannot take)."""
    vectors = VectorCache().vectors(encoder, class_phrases(classes), progress=False)
    if vectors.skipped:
        raise InputError(f"class names the text encoder cannot take: {vectors.skipped}")
    return vectors.vectors


def head_scorer(head: EmbeddingHead, vectors: np.ndarray) -> Callable[[dict], np.ndarray]:
    """`inputs -> [batch, classes]` calibrated cosines of the head's photo vectors with `vectors`."""
    embed = model_scorer(head.model)
    return lambda inputs: head.calibration(cosine_scores(embed(inputs), vectors))


def masked_map(ap: np.ndarray, mask: np.ndarray) -> float | None:
    """The mean AP of the classes in `mask` that have a positive (None: none has)."""
    return float(np.nanmean(ap[mask])) if (mask & ~np.isnan(ap)).any() else None


def summary(ap: np.ndarray, classes: list, new: np.ndarray) -> dict:
    """mAP and per-class AP (`new`: `[classes]` True for a class the run never trained on)."""
    scored = ~np.isnan(ap)
    return {"map": float(np.nanmean(ap)) if scored.any() else float("nan"), "classes_scored": int(scored.sum()),
            "ap": {name: (None if np.isnan(a) else round(float(a), 6)) for (_, name), a in zip(classes, ap)},
            "new_classes": int(new.sum()), "map_new": masked_map(ap, new)}


def evaluate_zero_shot(run_dir, data_dir, split: str = "test", protocol: str = "challenge") -> dict:
    """Class mAP (Open Images protocol) of the run's zero-shot scores on another dataset's class list.

    Raises:
        InputError: the run has no embedding head, or the encoder changed.
    """
    run = TrainedRun(run_dir)
    head = EmbeddingHead.load(run.run, run.model)
    info = DatasetInfo.load(data_dir)
    vectors = class_vectors(record_encoder(head.record), info.classes)
    ap = split_average_precisions(info, split, run.preprocessor, head_scorer(head, vectors), protocol)
    trained = {name for _, name in run.classes}
    result = summary(ap, info.classes, np.array([name not in trained for _, name in info.classes]))
    return {**result, "images": info.split_sizes.get(split, 0), "split": split}


def generalized_zero_shot(run_dir, split: str = "test", protocol: str = "challenge") -> dict:
    """mAP on the seen (sigmoid head), the unseen (embedding head) and all classes of the run's own dataset."""
    run = TrainedRun(run_dir)
    head = EmbeddingHead.load(run.run, run.model)
    info = DatasetInfo.load(run.run.data_dir)
    unseen = UnseenClasses.matching([(n, n) for n in head.record["unseen_classes"]], info.classes, str(run_dir))
    vectors = class_vectors(record_encoder(head.record), info.classes)
    sigmoid, cosine = model_scorer(run.model), head_scorer(head, vectors)
    seen = np.array(unseen.seen_mask(info.num_classes)) > 0
    both = split_average_precisions(info, split, run.preprocessor,
                                    lambda x: np.where(seen, sigmoid(x), cosine(x)), protocol)
    head_only = split_average_precisions(info, split, run.preprocessor, cosine, protocol)
    return {"split": split, "unseen": masked_map(both, ~seen), "seen": masked_map(both, seen),
            "all": masked_map(both, seen | ~seen), "seen_by_head": masked_map(head_only, seen),
            "unseen_classes": unseen.names(info.classes)}
