import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from app.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from app.model.preprocessor import ContextualPreprocessor
from app.model.classifier import attach_backbone, build_backbone, build_head
from app.training.optimizer import LazyAdam
from app.training.run import RunOptions, train
from app.training.strategy import get_strategy
from app.training.trainer import masked_bce
from test_layers import tiny_lookup

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
    head = build_head(config, 6, ContextualPreprocessor.for_model(config, tiny_lookup(vocab_size=20, limit=4)))
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


def test_branch_scores_add_each_branchs_own_linear_scores(tmp_path):
    """--branch-scores: sigmoid(fused + tags' + image's logits); with one branch it changes nothing."""
    config = ModelConfig(model="contextual", embedding_dim=8, hidden_units=16, word_vectors="scratch",
                         branch_scores=True)
    head = build_head(config, 6, ContextualPreprocessor.for_model(config, tiny_lookup(vocab_size=20, limit=4)))
    rng = np.random.default_rng(0)
    inputs = {"tag_ids": rng.integers(0, 20, (5, 4)).astype("int32"),
              "image_features": rng.normal(size=(5, 2048)).astype("float32")}
    for name in ("fused_logits", "image_logits"):  # leave the tags' own scores alone
        layer = head.get_layer(name)
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    pooled = keras.Model(head.inputs, head.get_layer("tag_max_pool").output)(inputs)
    own = keras.ops.sigmoid(head.get_layer("tag_logits")(pooled))
    np.testing.assert_allclose(head(inputs), own, rtol=1e-5, atol=1e-6)
    head.save(tmp_path / "head.keras")
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "head.keras")(inputs), head(inputs), rtol=1e-6)
    tags = ModelConfig(model="tags", embedding_dim=8, hidden_units=16, word_vectors="scratch", branch_scores=True)
    names = [layer.name for layer in build_head(tags, 6, ContextualPreprocessor.for_model(
        tags, tiny_lookup(vocab_size=20, limit=4))).layers]
    assert "scores" in names and not [n for n in names if n.endswith("_logits")]


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


QUIET = RunOptions(progress=False)


def test_train_writes_a_complete_run_folder(tiny_world, tmp_path):
    _, data_dir = tiny_world
    result = train(data_dir, tmp_path / "run", tiny_run_config(model="tags"), QUIET)
    run = tmp_path / "run"
    for name in ("run.json", "model.keras", "config.json", "vocab.tsv", "classes.csv", "hierarchy.json",
                 "history.csv", "metrics.json"):
        assert (run / name).exists(), name
    assert list((run / "logs").iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["val_map"] <= 1 and 0 < metrics["test_map"] <= 1 and metrics["epochs"] == 2
    history = [float(line.split(",")[0]) for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert history == [1.0, 2.0] and result.status == "trained"
    best = max(result.history, key=lambda row: row["val_map"])  # the model is chosen by validation mAP
    assert metrics["best_epoch"] == best["epoch"] and metrics["val_map"] == pytest.approx(best["val_map"], abs=1e-9)
    assert RunConfig.load(run / "config.json") == tiny_run_config(model="tags")
    model = keras.saving.load_model(run / "model.keras")
    assert model({"tag_ids": np.zeros((1, 10), "int32")}).shape == (1, 500)
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]  # no temporary file left behind



def test_frozen_backbone_features_live_on_disk_per_shard_and_resume(tiny_world, tmp_path):
    from app.records.dataset import DatasetInfo
    from app.errors import InputError
    from app.training.features import FeatureStore, default_cache_root, weights_digest

    _, data_dir = tiny_world
    config = tiny_run_config(model="contextual", tag_dropout=0.2)
    config.train.epochs = 1
    config.train.loss_on = "verified"  # masked loss on verified labels only
    config.train.mixed_precision = True  # float16 compute (CPU here), float32 scores
    train(data_dir, tmp_path / "run", config, QUIET)
    info = DatasetInfo.load(data_dir)
    store = FeatureStore(default_cache_root(info, tmp_path / "unused"), info, 32, "none")
    assert store.dir.name.startswith(f"features-v2-{info.fingerprint[:16]}-32-none")  # keyed by the dataset
    assert store.dir.parent == data_dir.parent / f".{data_dir.name}.features"  # beside it: every run's
    files = [Path(f) for split in ("train", "validation", "test") for f in store.files(split)]
    assert all(store.complete(s, str(f)) for split in ("train", "validation", "test")
               for s, f in zip(info.shard_files(split), store.files(split)))
    stamps = {f: f.stat().st_mtime_ns for f in files}
    files[0].unlink()  # an extraction killed before this shard was renamed into place
    config.train.epochs = 2  # more epochs: the run goes on, and only the missing shard is computed
    result = train(data_dir, tmp_path / "run", config, QUIET)
    assert result.status == "trained" and len(result.history) == 2
    assert [f for f in files if f.stat().st_mtime_ns != stamps.get(f)] == [files[0]]
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    assert set(model.input) == {"tag_ids", "image"}
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    stamps = {f: f.stat().st_mtime_ns for f in files}
    image = tiny_run_config(model="image")
    image.train.epochs = 1
    train(data_dir, tmp_path / "image", image, QUIET)
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # an image model reuses the contextual run's features
    backbones = [keras.saving.load_model(tmp_path / name / "model.keras").get_layer("image_backbone")
                 for name in ("run", "image")]
    digests = {weights_digest(b) for b in backbones}  # runs of other kinds and seeds: one random backbone,
    assert digests == {json.loads((store.dir / "features.json").read_text())["backbone_weights"]}  # the cache's
    keras.utils.set_random_seed(7)
    with pytest.raises(InputError, match="backbone_weights"):  # features of another backbone are not reused
        FeatureStore(store.dir.parent, info, 32, "none", build_backbone(32))
    assert not list(tmp_path.glob("*/cache/features-*"))  # features beside the dataset, not in the runs' cache/
    record = json.loads((store.dir / "features.json").read_text())
    (store.dir / "features.json").write_text(json.dumps({**record, "dataset": "another"}))
    try:
        with pytest.raises(InputError, match="features.json: a feature cache of other inputs \\(dataset 'another'"):
            FeatureStore(store.dir.parent, info, 32, "none")
        (store.dir / "features.json").write_text("[]")  # not a record at all
        with pytest.raises(InputError, match="features.json: a feature cache of other inputs \\(layout None"):
            FeatureStore(store.dir.parent, info, 32, "none")
    finally:
        (store.dir / "features.json").write_text(json.dumps(record))


def test_streamed_features_train_like_the_backbone_applied_on_the_fly(tiny_world, tmp_path):
    """The cached features stay aligned with the shards' tags and targets through shuffling."""
    from app.records.dataset import DatasetInfo
    from app.records.pipeline import make_dataset
    from app.training.features import FeatureStore
    from app.training.trainer import Trainer

    _, data_dir = tiny_world
    info = DatasetInfo.load(data_dir)
    strategy = tf.distribute.get_strategy()
    config = ModelConfig(model="contextual", embedding_dim=8, hidden_units=16, image_size=32, tag_dropout=0.3)
    preprocessor = ContextualPreprocessor.for_model(config, info.vocab)
    weights = []
    for cached in (True, False):
        keras.utils.set_random_seed(5)
        head = build_head(config, info.num_classes, preprocessor, seed=5)
        backbone = build_backbone(32)
        model = head if cached else attach_backbone(head, backbone)
        store = FeatureStore(tmp_path, info, 32, "none")
        if cached:
            store.extract(backbone, zip(info.shard_files("train"), store.files("train")), strategy, progress=False)
        optimizer = LazyAdam(learning_rate=0.01)
        trainer = Trainer(strategy, model, optimizer, global_batch_size=32)

        def dataset(epoch, ctx, cached=cached, store=store):
            return make_dataset(info, "train", preprocessor, batch_size=32,
                                training=True, seed=epoch, repeat=True, shuffle_buffer=50,
                                feature_files=store.files("train") if cached else None)

        trainer.fit(dataset, steps_per_epoch=6, epochs=2, evaluate_fn=lambda t: {})
        weights.append(head.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_more_epochs_continue_a_finished_run_to_the_uninterrupted_weights(tiny_world, tmp_path):
    _, data_dir = tiny_world
    config = tiny_run_config(model="tags", dropout=0.2)
    whole = train(data_dir, tmp_path / "whole", config, QUIET)
    config.train.epochs = 1
    train(data_dir, tmp_path / "resumed", config, QUIET)
    config.train.epochs = 2  # epochs are an execution setting: a finished run goes on
    resumed = train(data_dir, tmp_path / "resumed", config, QUIET)
    assert resumed.status == "trained"
    assert [round(h["loss"], 6) for h in resumed.history] == [round(h["loss"], 6) for h in whole.history]
    from app.training.callbacks import read_history

    epochs = [line.split(",")[0] for line in (tmp_path / "resumed" / "history.csv").read_text().splitlines()]
    assert epochs == [line.split(",")[0] for line in (tmp_path / "whole" / "history.csv").read_text().splitlines()]
    older = tmp_path / "older-history.csv"  # as a resume before 2026-12-05 wrote it
    older.write_text("epoch,loss,best\n1.0,0.5,True\n2,0.4,False\n")
    assert [(row["epoch"], type(row["epoch"])) for row in read_history(older)] == [(1, int), (2, int)]
    a = keras.saving.load_model(tmp_path / "whole" / "model.keras").get_weights()
    b = keras.saving.load_model(tmp_path / "resumed" / "model.keras").get_weights()
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    assert whole.metrics["test_map"] == pytest.approx(resumed.metrics["test_map"], abs=1e-6)


def test_mirrored_with_two_cpus_matches_one_device(tiny_world, tmp_path):
    _, data_dir = tiny_world
    config = tiny_run_config(model="tags", dropout=0.0)
    config.train.epochs = 1
    single = train(data_dir, tmp_path / "single", config, QUIET)
    mirrored_strategy = get_strategy("mirrored", cpu_devices=2)
    assert mirrored_strategy.num_replicas_in_sync == 2
    mirrored = train(data_dir, tmp_path / "mirrored", config, QUIET, strategy=mirrored_strategy)
    assert mirrored.history[0]["loss"] == pytest.approx(single.history[0]["loss"], rel=1e-3)
    assert mirrored.metrics["val_map"] == pytest.approx(single.metrics["val_map"], abs=5e-3)


def test_mirrored_feature_extraction_matches_one_device(tiny_world, tmp_path):
    from app.records.dataset import DatasetInfo
    from app.training.features import FeatureStore

    _, data_dir = tiny_world
    info = DatasetInfo.load(data_dir)
    backbone = build_backbone(32)
    out = []
    for name, strategy in (("one", tf.distribute.get_strategy()), ("two", get_strategy("mirrored", cpu_devices=2))):
        store = FeatureStore(tmp_path / name, info, 32, "none")
        store.extract(backbone, zip(info.shard_files("validation"), store.files("validation")), strategy, False)
        out.append(np.concatenate([np.fromfile(f, np.float32) for f in store.files("validation")]))
    np.testing.assert_allclose(out[0], out[1], rtol=1e-4, atol=1e-5)


def test_bad_strategy_or_pooling_gets_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="strategy must be one of .* Received: strategy='tpu'"):
        get_strategy("tpu")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    for flags, message in [(["--strategy", "tpu"], "invalid choice: 'tpu'"), (["--pooling", "sum"], "invalid choice"),
                           (["--strategy", "multi_worker"], "needs TF_CONFIG")]:
        done = subprocess.run([sys.executable, "app/train.py", "--data", str(tmp_path), *flags], cwd=ROOT,
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode != 0 and message in done.stderr, done.stderr[-500:]
        assert "Traceback" not in done.stderr


def _worker_env(workers, index):
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    return {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_multi_worker_gives_up_on_a_missing_peer_and_stops_on_sigterm(tmp_path):
    from app.training.launch import free_ports

    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    command = [sys.executable, "app/train.py", "--data", str(tmp_path), "--strategy", "multi_worker", "--model", "tags"]
    started = time.time()
    alone = subprocess.run(command + ["--worker-timeout", "3"], cwd=ROOT, env=_worker_env(workers, 0),
                           capture_output=True, text=True, timeout=120)
    assert alone.returncode == 2 and time.time() - started < 60
    assert f"waiting for worker(s) {workers[1]} to start" in alone.stderr
    assert f"gave up after 3s waiting for worker(s) {workers[1]}" in alone.stderr and "Traceback" not in alone.stderr
    waiting = subprocess.Popen(command, cwd=ROOT, env=_worker_env(workers, 0), stderr=subprocess.PIPE, text=True)
    try:
        assert any("waiting for worker(s)" in waiting.stderr.readline() for _ in range(5))
        waiting.send_signal(signal.SIGTERM)
        assert waiting.wait(timeout=30) == 143
    finally:
        waiting.kill()
