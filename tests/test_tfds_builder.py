"""The TFDS builder: `tfds` yields the records of `prepare.py`, field for field."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from app.config import PrepareConfig
from app.data.dataset import DatasetInfo
from app.data.tfds_builder import ContextualOpenImages, decode_example, manual_sources, tfds_example
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


def test_a_manual_folder_without_sources_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="needs oid/"):
        manual_sources(tmp_path)
