"""Training throughput on 2 CPU cores.

1. Tags-only model at the study's scale (110k-tag vocabulary, 128 dims, limit 20, 500 classes):
   examples/s fed by the real tf.data pipeline over TFRecord shards (parsed every epoch, and from
   the cache of parsed rows that training reads after its first epoch), against the same model fed
   from in-memory tensors (pipeline overhead ratio), with lazy Adam and with Keras's dense Adam.
2. ResNet50 images/s at the demo size (64×64): frozen-feature inference and a training step.

    python bench/train_speed.py [--examples 60000] [--steps 100] [--rounds 5] [--skip-resnet]
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


def examples_per_s(step, iterator, steps: int) -> tuple[float, float]:
    """Examples per second of wall-clock time, and per second of this process's CPU time (all its
    threads: the step's and tf.data's; other jobs on the machine hardly change it)."""
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = step(*next(iterator))
    float(loss)
    return steps * BATCH / (time.perf_counter() - started), steps * BATCH / (time.process_time() - cpu)


def tags_benchmark(examples: int, steps: int, rounds: int = 5) -> dict:
    """Per optimizer: one model and one compiled step, fed in turn from each source over `rounds`
    rounds, so that machine noise hits every source alike. Sources: the shards parsed every epoch,
    the shards' cached parsed rows (what training reads after its first epoch), and in-memory
    tensors. A ratio is the median over rounds of (source / in-memory) examples/s, each round's
    two figures measured back to back."""
    with tempfile.TemporaryDirectory() as tmp:
        info = write_dataset(Path(tmp) / "data", {"train": examples}, VOCAB, LIMIT)
        # the study's embedding, learned from scratch (its 110k synthetic tags mean nothing to a text encoder)
        config = ModelConfig(model="tags", embedding_dim=DIMS, hidden_units=DIMS, word_vectors="scratch")
        preprocessor = ContextualPreprocessor.for_model(config, info.vocab)
        parsed = make_dataset(info, "train", preprocessor, batch_size=BATCH, training=True, repeat=True)
        started = time.perf_counter()
        cached = make_dataset(info, "train", preprocessor, batch_size=BATCH, training=True, repeat=True,
                              cache_root=Path(tmp) / "cache")
        results = {"cache_build_s": round(time.perf_counter() - started, 1)}
        sources = {"tf.data shards": parsed, "tf.data cached rows": cached, "in-memory tensors": _in_memory(parsed)}
        for name, optimizer, n in (("lazy_adam", LazyAdam(1e-2), steps), ("keras_adam", keras.optimizers.Adam(1e-2), 20)):
            keras.utils.set_random_seed(0)
            step = make_step(build_head(config, CLASSES, preprocessor), optimizer)
            iterators = {source: iter(ds) for source, ds in sources.items()}
            for iterator in iterators.values():  # tracing and warm-up
                for _ in range(5):
                    step(*next(iterator))
            measured = {source: [] for source in sources}
            names = list(sources)
            for turn in range(rounds):  # each round starts with the next source: no source always goes first
                for source in names[turn % len(names):] + names[:turn % len(names)]:
                    measured[source].append(examples_per_s(step, iterators[source], n))
            results.update(_figures(name, {source: np.array(values) for source, values in measured.items()}))
        results["lazy_vs_dense_adam"] = round(results["lazy_adam / in-memory tensors"]
                                              / results["keras_adam / in-memory tensors"], 2)
        return results


def _figures(optimizer: str, measured: dict) -> dict:
    """Median examples/s per source, and each pipeline's ratio to in-memory tensors: the median
    over rounds, in wall-clock time (the goal) and in CPU time."""
    figures = {f"{optimizer} / {source}": round(float(np.median(values[:, 0]))) for source, values in measured.items()}
    memory = measured["in-memory tensors"]
    for source, label in (("tf.data cached rows", ""), ("tf.data shards", "_parsed")):
        for column, clock in ((0, ""), (1, "_cpu")):
            ratios = measured[source][:, column] / memory[:, column]
            figures[f"pipeline_ratio_{optimizer}{label}{clock}"] = round(float(np.median(ratios)), 3)
    return figures


def _in_memory(pipeline: tf.data.Dataset) -> tf.data.Dataset:
    """64 of the pipeline's batches as in-memory tensors, batched again."""
    batches = list(pipeline.take(64))
    ids = tf.concat([inputs["tag_ids"] for inputs, _, _ in batches], 0)
    targets = tf.concat([t for _, t, _ in batches], 0)
    masks = tf.concat([m for _, _, m in batches], 0)
    return (tf.data.Dataset.from_tensor_slices(({"tag_ids": ids}, targets, masks))
            .repeat().batch(BATCH).prefetch(tf.data.AUTOTUNE))


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
    parser.add_argument("--steps", type=int, default=100, help="lazy Adam steps per round and source")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (each source in turn)")
    parser.add_argument("--skip-resnet", action="store_true", help="only the tags-only model")
    args = parser.parse_args()
    out = {"tags_only_examples_per_s": tags_benchmark(args.examples, args.steps, args.rounds)}
    if not args.skip_resnet:
        out["resnet50"] = resnet_benchmark()
    print(json.dumps({**out, "cpu_cores": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)}, indent=2))


if __name__ == "__main__":
    main()
