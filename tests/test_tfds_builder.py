"""The TFDS builder: `tfds` yields the records of `prepare.py`, typed for TFDS's own tools."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from app.config import PrepareConfig
from app.records.dataset import DatasetInfo
from app.records.tfds_builder import (ContextualOpenImages, class_label_names, decode_example, manual_sources,
                                    tfds_example)
from app.errors import InputError


def prepared_examples(info: DatasetInfo, split: str) -> dict:
    return {ex["image_id"]: ex for shard in info.shard_files(split)
            for ex in map(decode_example, tf.data.TFRecordDataset(str(shard)).as_numpy_iterator())}


def test_tfds_yields_the_records_of_prepare(tiny_world, tmp_path):
    sources, data_dir = tiny_world
    config = PrepareConfig(tag_limit=10, tag_threshold=2, records_per_shard=64)  # as tiny_world prepared it
    builder = ContextualOpenImages(data_dir=str(tmp_path / "tfds"), prepare_config=config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(sources.yfcc.parent)))
    info = DatasetInfo.load(data_dir)
    assert set(builder.info.splits) == {"train", "validation", "test", "yfcc"}
    assert builder.info.metadata["classes"] == [mid for mid, _ in info.classes]
    presence = []
    for split in builder.info.splits:
        expected = prepared_examples(info, split)
        got = {ex["image_id"]: ex for ex in tfds.as_numpy(builder.as_dataset(split=split))}
        assert len(got) == info.split_sizes[split] == len(expected) > 0
        assert got.keys() == expected.keys()
        for key, example in expected.items():
            assert got[key].keys() == example.keys() | {"image_present"}
            assert got[key]["image_present"] == (len(example["image"]) > 0)
            presence.append(got[key]["image_present"])
            image = example.pop("image")
            if len(image):  # the photo, decoded as TFDS decodes it
                assert np.array_equal(got[key]["image"], tf.image.decode_image(image, channels=3).numpy())
            else:
                assert got[key]["image"].shape == (1, 1, 3) and not got[key]["image"].any()
            for name, value in example.items():
                assert np.array_equal(got[key][name], value), (split, key, name)
    assert all(presence)  # every demo photo has its image; one without gets the stand-in:
    record = dict(next(iter(prepared_examples(info, "test").values())), image=b"")
    example = builder.info.features.deserialize_example(builder.info.features.serialize_example(tfds_example(record)))
    assert not example["image_present"] and example["image"].shape == (1, 1, 3) and not example["image"].numpy().any()
    by_name = tfds.load("contextual_open_images", data_dir=str(tmp_path / "tfds"), split="train")
    assert int(by_name.cardinality()) == info.split_sizes["train"]
    names = [name for _, name in info.classes]
    assert builder.info.features["label_ids"].feature.names == names  # the demo's display names are unique
    assert class_label_names([("/m/1", "Bat"), ("/m/2", "Bat"), ("/m/3", "Cat")]) == ["Bat (/m/1)", "Bat (/m/2)", "Cat"]
    used = tfds_tools_in_a_fresh_process(tmp_path / "tfds")
    first = prepared_examples(info, "train")[used["first_id"].encode()]
    assert used["labels"] == first["label_ids"].tolist()  # as_supervised: (inputs, label_ids)
    assert used["inputs"] == ["image", "image_present", "language", "tags"]
    assert used["axes"] == 2 and used["names_in_html"]  # show_examples drew photos; as_dataframe shows names
    assert used["citation"].count("@") == 3 and "Creative Commons" in used["license"]


def tfds_tools_in_a_fresh_process(data_dir) -> dict:
    """TFDS's own tools on the built dataset, in a process that never imports the project (TFDS reads the
    dataset from its files): `tfds.load` with `as_supervised`, `show_examples`, `as_dataframe`."""
    code = f"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import tensorflow_datasets as tfds
builder = tfds.builder("contextual_open_images", data_dir={str(data_dir)!r})
train = builder.as_dataset(split="train")
figure = tfds.show_examples(train, builder.info, rows=1, cols=2)
html = tfds.as_dataframe(train.take(3), builder.info)._repr_html_()
first = next(iter(train))
inputs, labels = next(iter(tfds.load("contextual_open_images", data_dir={str(data_dir)!r}, split="train",
                                     as_supervised=True)))
names = builder.info.features["label_ids"].feature.names
assert "app" not in sys.modules
print(json.dumps({{"axes": len(figure.axes), "names_in_html": names[int(labels[0])] in html, "inputs": sorted(inputs),
                  "labels": labels.numpy().tolist(), "first_id": first["image_id"].numpy().decode(),
                  "citation": builder.info.citation, "license": builder.info.redistribution_info.license}}))
"""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=data_dir, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_a_manual_folder_without_sources_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="needs oid/"):
        manual_sources(tmp_path)
