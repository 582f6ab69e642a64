"""The model's input contract (`ContextualPreprocessor`): specs, saving and loading back."""

import json

import numpy as np
import pytest
import tensorflow as tf

from app.config import ModelConfig
from app.model.preprocessor import FEATURE_DIM, PREPROCESSOR, ContextualPreprocessor
from app.text.tags import Vocabulary
from app.errors import InputError
from photos import jpeg

VOCAB = Vocabulary(["dog", "new york", "café", "cat"], [9, 8, 7, 6], limit=4, threshold=1)
RAW = {"tags": tf.ragged.constant([["dog", " cat ", "2009"], [], ["zzz", "café"]]),
       "image": tf.constant([jpeg(30), b"", b"not an image"])}


@pytest.mark.parametrize("kind,presence", [("contextual", True), ("tags", False), ("image", False)])
def test_json_round_trip_gives_the_same_inputs(tmp_path, kind, presence):
    config = ModelConfig(model=kind, image_size=16, image_presence=presence)
    saved = ContextualPreprocessor.for_model(config, VOCAB)
    saved.save(tmp_path)
    loaded = ContextualPreprocessor.load(tmp_path)
    assert loaded.get_config() == saved.get_config() == json.loads((tmp_path / PREPROCESSOR).read_text())
    assert loaded.model_inputs() == saved.model_inputs()
    assert (tmp_path / "vocab.tsv").exists() == (kind != "image")
    (expected, expected_error), (got, got_error) = saved(RAW), loaded(RAW)
    assert list(got) == list(expected) == list(saved.model_inputs())
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    assert got_error.numpy().tolist() == expected_error.numpy().tolist()
    assert got_error.numpy()[0] == b"" and got_error.numpy()[1] != b""  # a model without images still says why


def test_specs_name_every_model_input(tmp_path):
    p = ContextualPreprocessor.for_model(ModelConfig(image_size=16, image_presence=True), VOCAB)
    specs = {name: (spec.shape, spec.dtype) for name, spec in p.model_inputs().items()}
    assert specs == {"tag_ids": ((4,), "int32"), "image": ((16, 16, 3), "uint8"), "image_present": ((1,), "float32")}
    assert list(p.model_inputs(features=True)) == ["tag_ids", "image_features", "image_present"]
    assert p.model_inputs(features=True)["image_features"].shape == (FEATURE_DIM,)
    assert p.record_keys() == ["tags", "language", "image"] and p.record_keys(features=True) == ["tags", "language"]
    inputs, _ = p(RAW)
    for name, spec in p.model_inputs().items():
        assert tuple(inputs[name].shape[1:]) == spec.shape and inputs[name].dtype.name == spec.dtype


def test_a_file_that_contradicts_itself_is_refused(tmp_path):
    ContextualPreprocessor.for_model(ModelConfig(model="tags"), VOCAB).save(tmp_path)
    config = json.loads((tmp_path / PREPROCESSOR).read_text())
    (tmp_path / PREPROCESSOR).write_text(json.dumps({**config, "inputs": ["tag_ids", "image"]}))
    with pytest.raises(InputError, match="preprocessor.json: lists the inputs"):
        ContextualPreprocessor.load(tmp_path)
