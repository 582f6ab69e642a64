"""Shared fixtures: a tiny prepared demo world, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
    from app.data.join import prepare_dataset
    from app.demo.world import WorldConfig, write_world

    root = tmp_path_factory.mktemp("world")
    sources = write_world(root / "raw", WorldConfig(train_size=240, validation_size=80, test_size=80,
                                                     extra_yfcc=60, image_size=32, seed=3))
    data_dir = root / "shards"
    prepare_dataset(sources, data_dir, PrepareConfig(tag_limit=10, tag_threshold=2, records_per_shard=64),
                    progress=False)
    return sources, data_dir


def label_lines(count: int, name: str = "train-annotations-human-imagelabels-boxable.sample.csv") -> list:
    """The header and `count` rows of a real label sample, each row under a new ImageID."""
    header, *rows = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [header] + [f"{i:016x}," + rows[i % len(rows)].split(",", 1)[1] for i in range(count)]


def image_lines(count: int) -> list:
    """The header and `count` rows of the real image-metadata sample, each under a new ImageID."""
    header, *rows = (DATA / "train-images-boxable-with-rotation.sample.csv").read_text(encoding="utf-8").splitlines()
    return [header] + [f"{i:016x}," + rows[i % len(rows)].split(",", 1)[1] for i in range(count)]
