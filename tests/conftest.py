"""Shared fixtures (a tiny prepared demo world, built once per test session) and plain dense readers."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Word vectors (models with --word-vectors frozen, the default) are cached for the session, not in ~/.cache.
if "CIC_VECTOR_CACHE" not in os.environ:
    os.environ["CIC_VECTOR_CACHE"] = tempfile.mkdtemp(prefix="cic-vectors-")
    atexit.register(shutil.rmtree, os.environ["CIC_VECTOR_CACHE"], True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPUs for MirroredStrategy tests; this must happen before TensorFlow starts.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A small demo world written in the real formats and prepared into shards.

    Returns:
        `(sources, data_dir)`.
    """
    from app.config import PrepareConfig
    from app.records.builder import prepare_dataset
    from app.demo.world import WorldConfig, write_world

    root = tmp_path_factory.mktemp("world")
    sources = write_world(root / "raw", WorldConfig(train_size=240, validation_size=80, test_size=80,
                                                     extra_yfcc=60, image_size=32, seed=3))
    data_dir = root / "shards"
    prepare_dataset(sources, data_dir, PrepareConfig(tag_limit=10, tag_threshold=2, records_per_shard=64),
                    progress=False)
    return sources, data_dir


@pytest.fixture(scope="session")
def contextual_export(tiny_world, tmp_path_factory):
    """A contextual model (image + tags) trained for one epoch on the tiny world, and its first export.

    Returns:
        `(run_dir, export_dir)`.
    """
    from app.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from app.serving.signatures import export
    from app.training.run import RunOptions, train

    _, data_dir = tiny_world
    root = tmp_path_factory.mktemp("serving")
    config = RunConfig(data=DataConfig(tag_limit=10, tag_threshold=2),
                       model=ModelConfig(model="contextual", embedding_dim=16, hidden_units=32, image_size=32),
                       train=TrainConfig(epochs=1, batch_size=32))
    train(data_dir, root / "run", config, RunOptions(progress=False))
    return root / "run", export(root / "run")


def with_flag(flags: list, flag: str, value: str) -> list:
    """`flags` with `flag`'s value changed (a CLI refuses a flag given twice)."""
    assert flag in flags, flag
    return [value if i and flags[i - 1] == flag else f for i, f in enumerate(flags)]


def label_lines(count: int, name: str = "train-annotations-human-imagelabels-boxable.sample.csv",
                start: int = 0) -> list:
    """The header and `count` rows of a real label sample, each row under a new ImageID (from `start`)."""
    header, *rows = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [header] + [f"{start + i:016x}," + rows[i % len(rows)].split(",", 1)[1] for i in range(count)]


def image_lines(count: int, start: int = 0, flickr_offset: int = 0, subset: str = "train") -> list:
    """The header and `count` rows of the real image-metadata sample, each under a new ImageID (from
    `start`), their Flickr ids plus `flickr_offset` (other photos than the sample's), in `subset`."""
    header, *rows = (DATA / "train-images-boxable-with-rotation.sample.csv").read_text(encoding="utf-8").splitlines()
    rows = [row.replace(",train,", f",{subset},", 1) for row in rows]
    if flickr_offset:
        rows = [re.sub(r"/(\d+)_", lambda m: f"/{int(m[1]) + flickr_offset}_", row) for row in rows]
    return [header] + [f"{start + i:016x}," + rows[i % len(rows)].split(",", 1)[1] for i in range(count)]


def dense_split(data_dir, split: str) -> dict:
    """A split's labels as dense arrays in shard order, read record by record with `tf.train.Example`
    (not with the project's readers).

    Returns:
        `{"ids": ImageIDs, "verified": [photos, classes] 1 / 0 / -1 (a positive wins), "machine":
        [photos, classes] confidences, "languages": codes, "has_tags": bool}`.
    """
    from app.records.dataset import DatasetInfo

    info = DatasetInfo.load(data_dir)
    out = {key: [] for key in ("ids", "verified", "machine", "languages", "has_tags")}
    for raw in tf.data.TFRecordDataset(info.shard_files(split)):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        verified = np.full(info.num_classes, -1, np.int8)
        verified[list(feature["verified_neg"].int64_list.value)] = 0
        verified[list(feature["verified_pos"].int64_list.value)] = 1
        machine = np.zeros(info.num_classes, np.float32)
        machine[list(feature["machine_ids"].int64_list.value)] = feature["machine_scores"].float_list.value
        out["ids"].append(feature["image_id"].bytes_list.value[0].decode())
        out["verified"].append(verified)
        out["machine"].append(machine)
        out["languages"].append(feature["language"].bytes_list.value[0].decode())
        out["has_tags"].append(len(feature["tags"].bytes_list.value) > 0)
    return {key: np.array(value) for key, value in out.items()}


def dense_scores(model, lookup, info, split: str, image_size=None) -> np.ndarray:
    """A Keras model's `[photos, classes]` scores on a split, in shard order, called in a graph as
    evaluation calls it (eager calls differ in the last bits, which can move a score across its
    threshold)."""
    from app.records.pipeline import make_dataset
    from app.model.preprocessor import ContextualPreprocessor

    ds = make_dataset(info, split, ContextualPreprocessor(lookup, image_size), batch_size=64)
    call = tf.function(lambda inputs: model(inputs, training=False), reduce_retracing=True)
    return np.concatenate([call({k: v for k, v in x.items() if k in model.input}).numpy() for x, _, _ in ds])
