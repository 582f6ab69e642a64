import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from app.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from app.model.classifier import attach_backbone, build_backbone, build_head
from app.training.loop import masked_bce
from app.training.optimizer import LazyAdam
from app.training.run import train
from app.training.strategy import get_strategy

ROOT = Path(__file__).resolve().parents[1]


def tiny_run_config(**model):
    return RunConfig(data=DataConfig(tag_limit=10, tag_threshold=2),
                     model=ModelConfig(embedding_dim=16, hidden_units=32, image_size=32, **model),
                     train=TrainConfig(epochs=2, batch_size=32, learning_rate=0.01, seed=1))


@pytest.mark.parametrize("kind,train_backbone", [("tags", False), ("image", False), ("contextual", False),
                                                 ("contextual", True)])
def test_each_variant_learns_on_a_tiny_batch(kind, train_backbone):
    keras.utils.set_random_seed(0)
    config = ModelConfig(model=kind, embedding_dim=8, hidden_units=16, dropout=0.0, tag_dropout=0.0)
    head = build_head(config, vocab_size=20, num_classes=6, tag_limit=4)
    backbone = build_backbone(32, trainable=train_backbone) if config.uses_image else None
    model = attach_backbone(head, backbone)
    rng = np.random.default_rng(0)
    inputs = {"tag_ids": rng.integers(0, 20, (8, 4)).astype("int32"),
              "image": rng.integers(0, 255, (8, 32, 32, 3)).astype("uint8")}
    inputs = {k: v for k, v in inputs.items() if k in model.input}
    targets = tf.constant(rng.integers(0, 2, (8, 6)), tf.float32)
    optimizer = LazyAdam(learning_rate=1e-3)
    losses = []
    for _ in range(8):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(masked_bce(targets, model(inputs, training=True), tf.ones_like(targets)))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        losses.append(float(loss))
    assert losses[-1] < losses[0] and losses[-1] < losses[1]
    frozen = [w for w in (backbone.weights if backbone else []) if not train_backbone]
    assert all(not w.trainable for w in frozen)


def test_lazy_adam_touches_only_the_rows_used():
    table = keras.Variable(np.ones((6, 3), "float32"))
    optimizer = LazyAdam(learning_rate=0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(table, [1, 4, 1]))
    optimizer.apply_gradients([(tape.gradient(loss, table), table)])
    changed = np.any(table.numpy() != 1.0, axis=1)
    assert changed.tolist() == [False, True, False, False, True, False]
    dense = keras.Variable(np.ones((6, 3), "float32"))
    reference = keras.optimizers.Adam(learning_rate=0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(dense, [1, 4, 1]))
    reference.apply_gradients([(tf.convert_to_tensor(tape.gradient(loss, dense)), dense)])
    np.testing.assert_allclose(table.numpy(), dense.numpy(), rtol=1e-6)  # first step: same as dense Adam


def test_train_writes_a_complete_run_folder(tiny_world, tmp_path):
    _, data_dir = tiny_world
    result = train(data_dir, tmp_path / "run", tiny_run_config(model="tags"), progress=False)
    run = tmp_path / "run"
    for name in ("model.keras", "config.json", "vocab.tsv", "classes.csv", "history.csv", "metrics.json"):
        assert (run / name).exists(), name
    assert list((run / "logs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["val_map"] <= 1 and 0 < metrics["test_map"] <= 1 and metrics["epochs"] == 2
    assert RunConfig.load(run / "config.json") == tiny_run_config(model="tags")
    model = keras.saving.load_model(run / "model.keras")
    assert model(np.zeros((1, 10), "int32")).shape == (1, 500)
    assert len(result.history) == 2


def test_frozen_backbone_features_are_computed_once(tiny_world, tmp_path):
    _, data_dir = tiny_world
    config = tiny_run_config(model="contextual", tag_dropout=0.2)
    config.train.epochs = 1
    config.train.loss_on = "verified"  # masked loss on verified labels only
    config.train.mixed_precision = True  # float16 compute (CPU here), float32 scores
    train(data_dir, tmp_path / "run", config, progress=False)
    cache = sorted(p.name for p in (tmp_path / "run" / "cache").iterdir())
    assert cache == ["test-features-32-none.npy", "train-features-32-none.npy", "validation-features-32-none.npy"]
    stamp = (tmp_path / "run" / "cache" / "train-features-32-none.npy").stat().st_mtime_ns
    config.train.epochs = 2  # resume: the cached features are reused, not recomputed
    train(data_dir, tmp_path / "run", config, progress=False)
    assert (tmp_path / "run" / "cache" / "train-features-32-none.npy").stat().st_mtime_ns == stamp
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert set(model.input) == {"tag_ids", "image"}
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test_map"] > 0


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tiny_world, tmp_path):
    _, data_dir = tiny_world
    config = tiny_run_config(model="tags", dropout=0.2, tag_dropout=0.1)
    whole = train(data_dir, tmp_path / "whole", config, progress=False)
    config.train.epochs = 1  # "killed" after the first epoch's checkpoint...
    train(data_dir, tmp_path / "resumed", config, progress=False)
    config.train.epochs = 2  # ...then started again on the same folder
    resumed = train(data_dir, tmp_path / "resumed", config, progress=False)
    assert [round(h["loss"], 6) for h in resumed.history] == [round(h["loss"], 6) for h in whole.history]
    a = keras.saving.load_model(tmp_path / "whole" / "model.keras").get_weights()
    b = keras.saving.load_model(tmp_path / "resumed" / "model.keras").get_weights()
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert whole.metrics["test_map"] == pytest.approx(resumed.metrics["test_map"], abs=1e-6)


def test_mirrored_with_two_cpus_matches_one_device(tiny_world, tmp_path):
    _, data_dir = tiny_world
    config = tiny_run_config(model="tags", dropout=0.0)
    config.train.epochs = 1
    single = train(data_dir, tmp_path / "single", config, progress=False)
    mirrored_strategy = get_strategy("mirrored", cpu_devices=2)
    assert mirrored_strategy.num_replicas_in_sync == 2
    mirrored = train(data_dir, tmp_path / "mirrored", config, progress=False, strategy=mirrored_strategy)
    assert mirrored.history[0]["loss"] == pytest.approx(single.history[0]["loss"], rel=1e-3)
    assert mirrored.metrics["val_map"] == pytest.approx(single.metrics["val_map"], abs=5e-3)


def test_bad_strategy_or_pooling_gets_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="strategy must be one of .* Received: strategy='tpu'"):
        get_strategy("tpu")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    for flags, message in [(["--strategy", "tpu"], "strategy='tpu'"), (["--pooling", "sum"], "pooling='sum'"),
                           (["--strategy", "multi_worker"], "needs TF_CONFIG")]:
        done = subprocess.run([sys.executable, "app/train.py", "--data", str(tmp_path), *flags], cwd=ROOT,
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode != 0 and message in done.stderr, done.stderr[-500:]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_with_two_local_processes(tiny_world, tmp_path):
    _, data_dir = tiny_world
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "3"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "app.train", "--data", str(data_dir), "--out", str(tmp_path / "run"),
             "--model", "tags", "--tag-limit", "10", "--tag-threshold", "2", "--epochs", "2", "--batch-size", "32",
             "--strategy", "multi_worker", "--no-progress"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        outputs.append(out)
        assert proc.returncode == 0, out[-2000:]
    assert all("multi_worker with 2 replica(s)" in out for out in outputs)
    losses = [[line.split("loss=")[1].split(",")[0] for line in out.splitlines() if "epoch 2:" in line]
              for out in outputs]
    assert losses[0] == losses[1] and losses[0]  # the workers trained one model in lockstep
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())  # written by the chief only
    assert metrics["epochs"] == 2 and metrics["test_map"] > 0


def test_feature_cache_holds_only_image_features(tiny_world, tmp_path):
    """A cache reused by another run must not carry that run's targets or loss masks."""
    from app.data.pipeline import DatasetInfo
    from app.training.run import RunInputs

    _, data_dir = tiny_world
    info = DatasetInfo.load(data_dir)
    backbone = build_backbone(32)
    config = tiny_run_config(model="image")
    everything = RunInputs(info, config, None, backbone, tmp_path, progress=False)
    config.train.loss_on = "verified"
    verified = RunInputs(info, config, None, backbone, tmp_path, progress=False)  # same cache folder
    a, b = everything.arrays["train"], verified.arrays["train"]
    np.testing.assert_array_equal(a["image_features"], b["image_features"])
    assert a["mask"].min() == 1.0 and 0 < b["mask"].sum() < a["mask"].sum()
