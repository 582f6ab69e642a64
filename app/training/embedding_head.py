"""Trains a finished run's embedding head (app/model/embedding.py) beside its sigmoid head.

Loss: each photo's vector scored against every seen class name's encoder vector (contrastive, both
ways, as CLIP with several positives; unseen classes masked); with `tag_weight > 0`, plus Ni et al.'s
sampled tag ranking: `positive_tags` of the photo's own tags should score above `negative_tags`
vocabulary tags drawn by frequency (softplus of the margin). The tags naming unseen classes are
dropped from the photos, as in the run's training. The epoch with the best validation mAP over the
seen classes is kept (epoch 0: the untrained head); the cosines' calibration is then fitted on
validation (seen classes) and the head written to `RUN/embedding/`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from app.config import EmbeddingConfig
from app.evaluation.metrics import sparse_average_precisions
from app.evaluation.truth import PairScores, load_truth
from app.evaluation.zero_shot import class_vectors, masked_map, model_scorer
from app.model.embedding import build_embedding_model
from app.model.word_vectors import vocabulary_rows
from app.model.zero_shot import Calibration, cosine_scores
from app.records.dataset import DatasetInfo
from app.records.pipeline import make_dataset
from app.records.unseen import UnseenClasses
from app.runs.embedding_head import EmbeddingHead
from app.runs.trained import TrainedRun

log = logging.getLogger("train")


def fit_embedding_head(run_dir: str | Path, encoder, spec: str, config: EmbeddingConfig = EmbeddingConfig(),
                       seed: int = 0) -> EmbeddingHead:
    """Trains, calibrates and saves the embedding head of the finished run at `run_dir`; returns it.

    Args:
        encoder: the text encoder whose space photos are mapped into (`spec` names it).
    """
    run = TrainedRun(run_dir)
    info = DatasetInfo.load(run.run.data_dir)
    held_out = run.run.metrics().get("unseen_classes", [])  # as the run held them out (not the file as it is now)
    unseen = UnseenClasses.matching([(name, name) for name in held_out], info.classes, str(run_dir))
    names = class_vectors(encoder, info.classes)
    seen = np.array(unseen.seen_mask(info.num_classes), np.float32)
    tags = run.preprocessor.tags
    words = vocabulary_rows(encoder, tags.vocab, progress=False) if tags is not None else None
    keras.utils.set_random_seed(seed)
    centred = (names - names[seen > 0].mean(axis=0)) * seen[:, None]  # ConSE's table: the seen classes only
    model = build_embedding_model(run.model, centred, words)
    hidden = unseen.tag_ids(tags.vocab) if tags is not None else []
    step = _train_step(model, names, seen, words, _sampling_logits(tags, hidden), config)
    embed = model_scorer(model)
    train = unseen.hide(make_dataset(info, run.config.data.train_split, run.preprocessor,
                                     batch_size=config.head_batch_size, training=True, seed=seed),
                        info.num_classes, hidden)
    truth, history, best = load_truth(info, "validation"), [], None
    for epoch in range(config.head_epochs + 1):  # epoch 0: the untrained head
        losses = [float(step({k: v for k, v in x.items() if k in model.input}, y, m)) for x, y, m in train] \
            if epoch else []
        cosines = _validation_cosines(info, truth, run.preprocessor, embed, names)
        ap = sparse_average_precisions(truth.pairs, cosines, "study")  # (a cosine may be negative)
        score = float(np.nanmean(ap[seen > 0]))
        history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else None, "val_map_seen": score})
        log.info("embedding head epoch %d: %s, validation mAP (seen classes, by class-name cosine) %.4f", epoch,
                 f"loss {np.mean(losses):.4f}" if losses else "untrained", score)
        if best is None or score > best[0]:
            best = (score, model.get_weights(), cosines, ap)
    _, weights, cosines, ap = best
    model.set_weights(weights)
    on_seen = seen[truth.pairs.classes] > 0
    calibration = Calibration.fit(cosines[on_seen], truth.pairs.positive[on_seen])
    record = {"run": run.run.identity(), "encoder": f"{encoder.name}@{encoder.version}", "encoder_spec": spec,
              "dim": int(names.shape[1]), "seed": seed, "unseen_classes": unseen.names(info.classes),
              "config": config.__dict__, "history": history,
              "validation_map": {"seen": masked_map(ap, seen > 0), "unseen": masked_map(ap, seen == 0),
                                 "all": masked_map(ap, seen >= 0)}}
    head = EmbeddingHead(model, calibration, record)
    head.save(run.run)
    return head


def _sampling_logits(tags, hidden: list):
    """`[1, vocab size]` log frequencies negative tags are drawn by (never padding, OOV or a hidden tag)."""
    if tags is None:
        return None
    counts = np.array([0.0, 0.0] + [float(c) for c in tags.vocab.counts])
    counts[hidden] = 0.0
    return np.log(np.maximum(counts, 1e-9))[None].astype(np.float32)


def _validation_cosines(info: DatasetInfo, truth, preprocessor, embed, names: np.ndarray) -> np.ndarray:
    """The cosine at each verified pair of the validation split (`truth`)."""
    pairs = PairScores(truth)
    for inputs, _, _ in make_dataset(info, "validation", preprocessor, batch_size=256):
        pairs.add(cosine_scores(embed(inputs), names))
    return pairs.result()


def _train_step(model: keras.Model, names: np.ndarray, seen: np.ndarray, words, frequency, config: EmbeddingConfig):
    """One optimisation step of the class-name loss (and the tag loss, when weighted)."""
    scale = tf.Variable(10.0)
    optimizer = keras.optimizers.Adam(config.head_learning_rate)
    variables = model.trainable_variables + [scale]
    names, seen = tf.constant(names), tf.constant(seen)
    use_tags = config.tag_weight > 0 and words is not None
    words = tf.constant(words) if use_tags else None
    frequency = tf.constant(frequency) if use_tags else None

    @tf.function(reduce_retracing=True)
    def step(inputs, targets, mask):
        with tf.GradientTape() as tape:
            embed = model(inputs, training=True)
            valid = mask * seen * tf.ones_like(targets)
            loss = _class_loss(scale * tf.matmul(embed, names, transpose_b=True), targets * valid, valid)
            if use_tags:
                loss += config.tag_weight * _tag_loss(embed, inputs["tag_ids"], words, frequency, scale, config)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def _class_loss(logits, positive, valid):
    """Contrastive, both ways: each photo's classes ranked above its other classes (softmax over the valid
    classes), and each class's photos above the batch's other photos."""
    blocked = logits + (valid - 1.0) * 1e9

    def one_way(axis):
        count = tf.reduce_sum(positive, axis=axis)
        per = -tf.reduce_sum(positive * tf.nn.log_softmax(blocked, axis=axis), axis=axis) / tf.maximum(count, 1.0)
        return tf.reduce_sum(per) / tf.maximum(tf.reduce_sum(tf.cast(count > 0, tf.float32)), 1.0)

    return 0.5 * (one_way(1) + one_way(0))


def _tag_loss(embed, tag_ids, words, frequency, scale, config: EmbeddingConfig):
    """Sampled ranking: up to `positive_tags` of each photo's tags above `negative_tags` tags drawn by frequency."""
    real = tag_ids > 1
    noise = tf.random.uniform(tf.shape(tag_ids)) + tf.cast(real, tf.float32)  # real tags first, in random order
    picked = tf.math.top_k(noise, k=tf.minimum(config.positive_tags, tf.shape(tag_ids)[1]))
    positive_ids = tf.gather(tag_ids, picked.indices, batch_dims=1)
    positive_ok = tf.cast(tf.gather(real, picked.indices, batch_dims=1), tf.float32)
    negative_ids = tf.random.categorical(tf.repeat(frequency, tf.shape(tag_ids)[0], axis=0), config.negative_tags)
    positive = tf.einsum("bd,bpd->bp", embed, tf.gather(words, positive_ids))
    negative = tf.einsum("bd,bnd->bn", embed, tf.gather(words, negative_ids))
    margins = tf.math.softplus(-scale * (positive[:, :, None] - negative[:, None, :]))
    weights = positive_ok[:, :, None] * tf.ones_like(margins)
    return tf.reduce_sum(margins * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
