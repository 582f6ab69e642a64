"""Training throughput on 2 CPU cores.

1. Tags-only model at the study's scale (110k-tag vocabulary, 128 dims, limit 20, 500 classes):
   examples/s fed by the real tf.data pipeline over TFRecord shards, against the same model fed
   from in-memory tensors (pipeline overhead ratio), with lazy Adam and with Keras's dense Adam.
2. ResNet50 images/s at the demo size (64×64): frozen-feature inference and a training step.

    python bench/train_speed.py [--examples 60000] [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from app.config import ModelConfig  # noqa: E402
from app.records.pipeline import make_dataset  # noqa: E402
from app.model.preprocessor import ContextualPreprocessor  # noqa: E402
from app.model.classifier import build_backbone, build_head  # noqa: E402
from app.training.optimizer import LazyAdam  # noqa: E402
from app.training.trainer import masked_bce  # noqa: E402
from bench.synthetic import write_dataset  # noqa: E402

VOCAB, DIMS, LIMIT, CLASSES, BATCH = 110_000, 128, 20, 500, 128


def make_step(model, optimizer):
    @tf.function
    def step(inputs, targets, mask):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(masked_bce(targets, model(inputs, training=True), mask))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    return step


def examples_per_s(step, iterator, steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        loss = step(*next(iterator))
    float(loss)
    return steps * BATCH / (time.perf_counter() - started)


def tags_benchmark(examples: int, steps: int, rounds: int = 5) -> dict:
    """Per optimizer: one model and one compiled step, fed alternately from both sources over
    `rounds` rounds (medians), so that machine noise hits both sides of the ratio alike."""
    with tempfile.TemporaryDirectory() as tmp:
        info = write_dataset(Path(tmp) / "data", {"train": examples}, VOCAB, LIMIT)
        # the study's embedding, learned from scratch (its 110k synthetic tags mean nothing to a text encoder)
        config = ModelConfig(model="tags", embedding_dim=DIMS, hidden_units=DIMS, word_vectors="scratch")
        preprocessor = ContextualPreprocessor.for_model(config, info.vocab)
        pipeline = make_dataset(info, "train", preprocessor, batch_size=BATCH, training=True, repeat=True)
        cached = list(pipeline.take(64))  # the same batches, as in-memory tensors
        ids = tf.concat([inputs["tag_ids"] for inputs, _, _ in cached], 0)
        targets = tf.concat([t for _, t, _ in cached], 0)
        masks = tf.concat([m for _, _, m in cached], 0)
        in_memory = (tf.data.Dataset.from_tensor_slices(({"tag_ids": ids}, targets, masks))
                     .repeat().batch(BATCH).prefetch(tf.data.AUTOTUNE))
        results = {}
        for name, optimizer, n in (("lazy_adam", LazyAdam(1e-2), steps), ("keras_adam", keras.optimizers.Adam(1e-2), 20)):
            keras.utils.set_random_seed(0)
            step = make_step(build_head(config, CLASSES, preprocessor), optimizer)
            sources = {"tf.data shards": iter(pipeline), "in-memory tensors": iter(in_memory)}
            for iterator in sources.values():  # tracing and warm-up
                for _ in range(5):
                    step(*next(iterator))
            measured = {source: [] for source in sources}
            for _ in range(rounds):
                for source, iterator in sources.items():
                    measured[source].append(examples_per_s(step, iterator, n))
            for source, values in measured.items():
                results[f"{name} / {source}"] = round(float(np.median(values)))
        results["pipeline_ratio_lazy_adam"] = round(results["lazy_adam / tf.data shards"]
                                                    / results["lazy_adam / in-memory tensors"], 3)
        results["lazy_vs_dense_adam"] = round(results["lazy_adam / in-memory tensors"]
                                              / results["keras_adam / in-memory tensors"], 2)
        return results


def resnet_benchmark(size: int = 64, batch: int = 64) -> dict:
    images = tf.constant(np.random.default_rng(0).integers(0, 255, (batch, size, size, 3)), tf.uint8)
    out = {}
    for trainable in (False, True):
        backbone = build_backbone(size, trainable=trainable)
        if not trainable:
            call = tf.function(lambda x: backbone(x, training=False))
            call(images)
            started = time.perf_counter()
            for _ in range(5):
                call(images).numpy()
            out["resnet50_inference_img_per_s"] = round(5 * batch / (time.perf_counter() - started), 1)
        else:
            head = keras.layers.Dense(CLASSES, activation="sigmoid")
            optimizer = keras.optimizers.Adam(1e-4)
            targets = tf.zeros((batch, CLASSES))

            @tf.function
            def step(x):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(keras.losses.binary_crossentropy(targets, head(backbone(x))))
                variables = backbone.trainable_variables + head.trainable_variables
                optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
                return loss

            step(images)
            started = time.perf_counter()
            for _ in range(2):
                float(step(images))
            out["resnet50_train_img_per_s"] = round(2 * batch / (time.perf_counter() - started), 1)
    out["image_size"] = size
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=60_000)
    parser.add_argument("--steps", type=int, default=100, help="lazy Adam steps per round (5 rounds per source)")
    args = parser.parse_args()
    print(json.dumps({"tags_only_examples_per_s": tags_benchmark(args.examples, args.steps),
                      "resnet50": resnet_benchmark(), "cpu_cores": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
