"""Trains a finished run's embedding head (app/model/embedding.py) beside its sigmoid head.

Loss: each photo's embedding scored against every seen class name's encoder vector,
`sigmoid(s * cosine + b)` with binary cross-entropy on the photo's labels (unseen classes masked);
with `tag_weight > 0`, plus Ni et al.'s sampled tag ranking: `positives` of the photo's own tags
should score above `negatives` vocabulary tags drawn by frequency (softplus of the margin).
The epoch with the best validation mAP over the seen classes is kept; the calibration of cosines is
then fitted on validation (seen classes only) and the head written to `RUN/embedding/`.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

from app.config import EmbeddingConfig
from app.evaluation.exhaustive import per_class_average_precisions
from app.model.embedding import build_embedding_model, word_vector_table
from app.model.zero_shot import Calibration, class_phrases, cosine_scores
from app.records.dataset import DatasetInfo
from app.records.pipeline import make_dataset
from app.records.unseen import UnseenClasses
from app.runs.embedding_head import EmbeddingHead
from app.runs.trained import TrainedRun
from app.text.encoders import VectorCache

log = logging.getLogger("train")


def split_embeddings(model: keras.Model, info: DatasetInfo, split: str, preprocessor,
                     call=None) -> tuple[np.ndarray, np.ndarray]:
    """`(embeddings [photos, dim], labels [photos, classes] 0/1)` of a split, in shard order (`call`: the
    model in a tf.function, made once per model)."""
    call = call or tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    embeddings, labels = [], []
    for inputs, targets, _ in make_dataset(info, split, preprocessor, batch_size=256):
        embeddings.append(call({k: v for k, v in inputs.items() if k in model.input}).numpy())
        labels.append(targets.numpy() > 0.5)
    return np.concatenate(embeddings), np.concatenate(labels)


def seen_map(cosines: np.ndarray, labels: np.ndarray, unseen: UnseenClasses) -> dict:
    """Class mAP over the seen, the unseen and all classes (classes with a positive)."""
    ap = per_class_average_precisions(cosines, labels)
    seen = np.ones(ap.shape[0], bool)
    seen[list(unseen.indices)] = False
    return {"seen": float(np.nanmean(ap[seen])), "unseen": float(np.nanmean(ap[~seen])) if (~seen).any() else None,
            "all": float(np.nanmean(ap))}


def fit_embedding_head(run_dir, encoder, config: EmbeddingConfig = EmbeddingConfig(), seed: int = 0,
                       spec: str = "use") -> EmbeddingHead:
    """Trains, calibrates and saves the embedding head of the finished run at `run_dir` (`encoder`: the text
    encoder that `spec` names); returns it."""
    run = TrainedRun(run_dir)
    info = DatasetInfo.load(run.run.data_dir)
    unseen = UnseenClasses.read(run.config.data.unseen_classes, info.classes)
    cache = VectorCache()
    class_vectors = tf.constant(cache.vectors(encoder, class_phrases(info.classes), progress=False).vectors)
    tags = run.preprocessor.tags
    table = (word_vector_table(tags.vocab.tokens, cache.vectors(encoder, tags.vocab.tokens, progress=False).vectors)
             if tags is not None else None)
    keras.utils.set_random_seed(seed)
    seen_rows = np.ones(info.num_classes, bool)
    seen_rows[list(unseen.indices)] = False
    class_table = class_vectors.numpy() - class_vectors.numpy()[seen_rows].mean(axis=0)
    class_table[~seen_rows] = 0.0
    model = build_embedding_model(run.model, class_table, table)
    seen = tf.constant([0.0 if c in set(unseen.indices) else 1.0 for c in range(info.num_classes)])
    step = _train_step(model, class_vectors, seen, table, tags, config)
    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    best, best_map, history = model.get_weights(), -1.0, []
    for epoch in range(config.head_epochs + 1):  # epoch 0: untrained (the mean tag vector, where there are tags)
        losses = [float(step({k: v for k, v in x.items() if k in model.input}, y, m))
                  for x, y, m in make_dataset(info, run.config.data.train_split, run.preprocessor,
                                              batch_size=config.head_batch_size, training=True,
                                              seed=seed * 1000 + epoch, unseen=unseen.indices,
                                              unseen_words=unseen.words)] if epoch else [float("nan")]
        embeddings, labels = split_embeddings(model, info, "validation", run.preprocessor, call)
        scores = seen_map(cosine_scores(embeddings, class_vectors.numpy()), labels, unseen)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_map_seen": scores["seen"]})
        log.info("embedding head epoch %d: loss %.4f, validation mAP (seen classes) %.4f", epoch,
                 history[-1]["loss"], scores["seen"])
        if scores["seen"] > best_map:
            best, best_map = model.get_weights(), scores["seen"]
    model.set_weights(best)
    embeddings, labels = split_embeddings(model, info, "validation", run.preprocessor, call)
    cosines = cosine_scores(embeddings, class_vectors.numpy())
    keep = np.ones(info.num_classes, bool)
    keep[list(unseen.indices)] = False
    calibration = Calibration.fit(cosines[:, keep], labels[:, keep])
    record = {"run": run.run.identity(), "encoder": f"{encoder.name}@{encoder.version}", "encoder_spec": spec,
              "seed": seed,
              "unseen_classes": [info.classes[i][0] for i in unseen.indices], "config": config.__dict__,
              "validation_map": seen_map(cosines, labels, unseen), "history": history}
    head = EmbeddingHead(model, calibration, record)
    head.save(run.run)
    return head


def _train_step(model: keras.Model, class_vectors: tf.Tensor, seen: tf.Tensor, table, tags, config: EmbeddingConfig):
    """One optimisation step of the class-name loss (and the tag loss, when weighted)."""
    scale = tf.Variable(10.0)
    optimizer = keras.optimizers.Adam(config.head_learning_rate)
    variables = model.trainable_variables + [scale]
    words = tf.constant(table) if table is not None else None
    frequency = (tf.math.log(tf.constant([1e-9, 1e-9] + [float(c) for c in tags.vocab.counts]))[None]
                 if tags is not None else None)

    @tf.function(reduce_retracing=True)
    def step(inputs, targets, mask):
        with tf.GradientTape() as tape:
            embed = model(inputs, training=True)
            loss = _class_loss(scale * tf.matmul(embed, class_vectors, transpose_b=True), targets * mask * seen,
                               mask * seen * tf.ones_like(targets))
            if config.tag_weight > 0 and words is not None:
                loss += config.tag_weight * _tag_loss(embed, inputs["tag_ids"], words, frequency, scale, config)
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        return loss

    return step


def _class_loss(logits, positive, valid):
    """Contrastive, both ways (as CLIP, with several positives): each photo's classes ranked above its
    other classes (softmax over the valid classes), and each class's photos above the batch's other photos."""
    blocked = logits + (valid - 1.0) * 1e9

    def one_way(logits_, positive_, axis):
        count = tf.reduce_sum(positive_, axis=axis)
        log_p = tf.nn.log_softmax(logits_, axis=axis)
        per = -tf.reduce_sum(positive_ * log_p, axis=axis) / tf.maximum(count, 1.0)
        return tf.reduce_sum(per) / tf.maximum(tf.reduce_sum(tf.cast(count > 0, tf.float32)), 1.0)

    return 0.5 * (one_way(blocked, positive, 1) + one_way(blocked, positive, 0))


def _tag_loss(embed, tag_ids, words, frequency, scale, config: EmbeddingConfig):
    """Sampled ranking: up to `positives` of each photo's tags above `negatives` tags drawn by frequency."""
    real = tag_ids > 1
    noise = tf.random.uniform(tf.shape(tag_ids)) + tf.cast(real, tf.float32)  # real tags first, in random order
    k = tf.minimum(config.positive_tags, tf.shape(tag_ids)[1])
    picked = tf.math.top_k(noise, k=k)
    positive_ids = tf.gather(tag_ids, picked.indices, batch_dims=1)
    positive_ok = tf.cast(tf.gather(real, picked.indices, batch_dims=1), tf.float32)
    negative_ids = tf.random.categorical(tf.repeat(frequency, tf.shape(tag_ids)[0], axis=0), config.negative_tags)
    positive = tf.einsum("bd,bpd->bp", embed, tf.gather(words, positive_ids))
    negative = tf.einsum("bd,bnd->bn", embed, tf.gather(words, negative_ids))
    margins = tf.math.softplus(-scale * (positive[:, :, None] - negative[:, None, :]))
    weights = positive_ok[:, :, None] * tf.ones_like(margins)
    return tf.reduce_sum(margins * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
