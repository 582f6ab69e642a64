"""Run mode on a dataset whose class list is not the run's: classes scored zero-shot by the run's embedding
head (calibrated cosines with the class names' encoder vectors), any class list, any of the encoder's
languages."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from app.errors import InputError
from app.evaluation.metrics import sparse_average_precisions
from app.evaluation.truth import PairScores, load_truth
from app.model.zero_shot import class_phrases, cosine_scores
from app.records.dataset import DatasetInfo
from app.records.pipeline import make_dataset
from app.runs.embedding_head import EmbeddingHead
from app.runs.trained import TrainedRun
from app.text.encoders import VectorCache, encoder_from_spec


def evaluate_zero_shot(run_dir, data_dir, split: str = "test", protocol: str = "challenge") -> dict:
    """Class mAP (Open Images protocol) of the run's zero-shot scores on another dataset's classes.

    Returns:
        `{"map", "classes_scored", "images", "new_classes", "ap": {class name: AP}}`; `new_classes` counts
        the dataset's classes that the run was not trained on.

    Raises:
        InputError: the run has no embedding head.
    """
    run = TrainedRun(run_dir)
    head = EmbeddingHead.load(run.run)
    encoder = encoder_from_spec(head.record.get("encoder_spec", "use"))
    if head.encoder != f"{encoder.name}@{encoder.version}":
        raise InputError(f"{run_dir}: its embedding head was trained with {head.encoder}, the encoder at hand is "
                         f"{encoder.name}@{encoder.version}: retrain the head")
    info = DatasetInfo.load(data_dir)
    vectors = VectorCache().vectors(encoder, class_phrases(info.classes), progress=False).vectors
    truth = load_truth(info, split)
    pairs = PairScores(truth)
    call = tf.function(lambda x: head.model(x, training=False), reduce_retracing=True)
    for inputs, _, _ in make_dataset(info, split, run.preprocessor, batch_size=256):
        embeddings = call({k: v for k, v in inputs.items() if k in head.model.input}).numpy()
        pairs.add(head.calibration(cosine_scores(embeddings, vectors)).astype(np.float32))
    ap = sparse_average_precisions(truth.pairs, pairs.result(), protocol)
    trained = {name for _, name in run.classes}
    scored = ~np.isnan(ap)
    return {"map": float(np.nanmean(ap)) if scored.any() else float("nan"), "classes_scored": int(scored.sum()),
            "images": truth.num_images, "new_classes": sum(name not in trained for _, name in info.classes),
            "ap": {name: (None if np.isnan(a) else round(float(a), 6)) for (_, name), a in zip(info.classes, ap)}}
