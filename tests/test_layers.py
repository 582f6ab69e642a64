import keras
import numpy as np
import pytest

from app.config import ModelConfig
from app.model.preprocess import TagLookup
from app.model.preprocessor import ContextualPreprocessor
from app.text.tags import Vocabulary
from app.model.classifier import attach_backbone, build_backbone, build_head, resolve_image_weights
from app.model.layers import (ImageDropout, MaskedGlobalAveragePooling1D, MaskedGlobalMaxPooling1D,
                              MissingImageEmbedding, ResNetPreprocess, SparseReadEmbedding, TagDropout)


def tiny_lookup(vocab_size: int, limit: int) -> TagLookup:
    """A tag lookup with `vocab_size` ids (padding and OOV included) and tag limit `limit`."""
    tokens = [f"t{i}" for i in range(vocab_size - 2)]
    return TagLookup(Vocabulary(tokens, [1] * len(tokens), limit=limit, threshold=1))


def embed_and_pool(pool, ids):
    ids_in = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(10, 4, mask_zero=True, embeddings_initializer="uniform")(ids_in)
    return keras.Model(ids_in, pool(x))


@pytest.mark.parametrize("pool", [MaskedGlobalMaxPooling1D, MaskedGlobalAveragePooling1D])
def test_padding_never_changes_the_output(pool):
    model = embed_and_pool(pool(), None)
    short = np.array([[3, 5, 0]], "int32")
    padded = np.array([[3, 5, 0, 0, 0, 0, 0, 0]], "int32")
    np.testing.assert_allclose(model(short), model(padded), rtol=0, atol=0)
    table = model.layers[1].embeddings.numpy()
    if pool is MaskedGlobalMaxPooling1D:
        table[0] = 100.0  # a large padding vector must not leak into the max
        model.layers[1].embeddings.assign(table)
        np.testing.assert_allclose(model(padded), np.maximum(table[3], table[5])[None], rtol=1e-6)
    else:
        np.testing.assert_allclose(model(padded), ((table[3] + table[5]) / 2)[None], rtol=1e-6)


@pytest.mark.parametrize("pool", [MaskedGlobalMaxPooling1D, MaskedGlobalAveragePooling1D])
def test_a_photo_without_tags_gives_finite_zeros(pool):
    out = np.asarray(embed_and_pool(pool(), None)(np.zeros((2, 5), "int32")))
    assert np.all(np.isfinite(out)) and np.all(out == 0)


def test_keras_global_max_pooling_really_leaks_padding():
    """Why the custom layer exists: the built-in one ignores the mask."""
    model = embed_and_pool(keras.layers.GlobalMaxPooling1D(), None)
    table = model.layers[1].embeddings.numpy()
    table[0] = 100.0
    model.layers[1].embeddings.assign(table)
    assert np.asarray(model(np.array([[3, 0]], "int32"))).max() == 100.0


def test_sparse_read_embedding_matches_keras_embedding():
    ids = np.array([[3, 1, 0], [8, 0, 0]], "int32")
    dense = keras.layers.Embedding(9, 4, mask_zero=True)
    sparse = SparseReadEmbedding(9, 4, mask_zero=True)
    dense.build((None, 3))
    sparse.build((None, 3))
    sparse.set_weights(dense.get_weights())
    np.testing.assert_array_equal(np.asarray(sparse(ids)), np.asarray(dense(ids)))
    np.testing.assert_array_equal(np.asarray(sparse.compute_mask(ids)), ids != 0)


def test_tag_dropout_drops_whole_photos_only_in_training():
    layer = TagDropout(0.5, seed=1)
    ids = np.arange(1, 801, dtype="int32").reshape(200, 4)
    out = np.asarray(layer(ids, training=True))
    dropped = (out == 0).all(axis=1)
    assert 0.3 < dropped.mean() < 0.7
    np.testing.assert_array_equal(out[~dropped], ids[~dropped])
    np.testing.assert_array_equal(np.asarray(layer(ids, training=False)), ids)
    with pytest.raises(ValueError, match="rate=1.5"):
        TagDropout(1.5)
    words = ids[:, :3] + 1000  # a photo's caption word ids go with its tags
    tags_out, words_out = (np.asarray(x) for x in TagDropout(0.5, seed=1)([ids, words], training=True))
    np.testing.assert_array_equal((tags_out == 0).all(axis=1), (words_out == 0).all(axis=1))
    assert 0.3 < (words_out == 0).all(axis=1).mean() < 0.7


def test_image_dropout_removes_images_only_of_photos_that_keep_tags_and_only_in_training():
    layer = ImageDropout(0.5, seed=2)
    present = np.ones((400, 1), "float32")
    tag_ids = np.zeros((400, 3), "int32")
    tag_ids[:200, 0] = 7  # the first half has tags, the second none (untagged, or tags dropped)
    out = np.asarray(layer([present, tag_ids], training=True))
    assert set(np.unique(out)) == {0.0, 1.0}
    assert 0.35 < 1 - out[:200].mean() < 0.65 and out[200:].min() == 1.0  # never both tags and image gone
    np.testing.assert_array_equal(np.asarray(layer([present, tag_ids], training=False)), present)
    absent = np.asarray(layer([np.zeros_like(present), tag_ids], training=True))
    assert absent.max() == 0.0  # a missing image stays missing
    with pytest.raises(ValueError, match="rate=1.0"):
        ImageDropout(1.0)


def test_missing_image_embedding_replaces_only_absent_images():
    layer = MissingImageEmbedding()
    features = np.arange(12, dtype="float32").reshape(3, 4)
    present = np.array([[1.0], [0.0], [1.0]], "float32")
    out = np.asarray(layer([features, present]))
    np.testing.assert_array_equal(out[[0, 2]], features[[0, 2]])
    np.testing.assert_array_equal(out[1], np.zeros(4))  # the learned vector starts at zero
    layer.missing.assign(np.full(4, 5.0, "float32"))
    np.testing.assert_array_equal(np.asarray(layer([features, present]))[1], np.full(4, 5.0))


@pytest.mark.parametrize("layer", [MaskedGlobalMaxPooling1D(name="p"), MaskedGlobalAveragePooling1D(name="p"),
                                   TagDropout(0.25, seed=3, name="p"), ResNetPreprocess(name="p"),
                                   SparseReadEmbedding(9, 4, mask_zero=True, name="p"),
                                   ImageDropout(0.3, seed=4, name="p"), MissingImageEmbedding(name="p")])
def test_get_config_round_trip(layer):
    again = layer.__class__.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()


def test_resnet_preprocessing_matches_keras():
    images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype("float32")
    expected = keras.applications.resnet50.preprocess_input(images.copy())
    np.testing.assert_allclose(np.asarray(ResNetPreprocess()(images)), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind,presence", [("contextual", False), ("tags", False), ("image", False),
                                           ("contextual", True)])
def test_model_variants_save_and_load(tmp_path, kind, presence):
    config = ModelConfig(model=kind, embedding_dim=8, hidden_units=16, pooling="avg", tag_dropout=0.1,
                         image_presence=presence, image_dropout=0.2 if presence and kind == "contextual" else 0.0)
    head = build_head(config, 7, ContextualPreprocessor.for_model(config, tiny_lookup(vocab_size=12, limit=5)))
    model = attach_backbone(head, build_backbone(32) if config.uses_image else None)
    inputs = {}
    if config.uses_tags:
        inputs["tag_ids"] = np.array([[2, 3, 0, 0, 0], [0, 0, 0, 0, 0]], "int32")
    if config.uses_image:
        inputs["image"] = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3)).astype("uint8")
    if presence:
        inputs["image_present"] = np.array([[1.0], [0.0]], "float32")
        missing = head.get_layer("missing_image")
        missing.missing.assign(np.linspace(-1, 1, 2048).astype("float32"))  # so that a lost weight would show
    assert set(model.input) == set(inputs)
    before = np.asarray(model(inputs))
    assert before.shape == (2, 7) and np.all((before > 0) & (before < 1))
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(inputs)), before, rtol=1e-5, atol=1e-6)
    names = {layer.name for layer in (head.layers)}
    assert "scores" in names and ("fuse" in names) == (kind == "contextual")
    assert ("missing_image" in names) == presence and ("image_dropout" in names) == (presence and kind == "contextual")
    if presence:  # without an image, the pixels do not matter
        other = dict(inputs, image=255 - inputs["image"])
        np.testing.assert_allclose(np.asarray(again(other))[1], before[1], rtol=1e-6)
        assert not np.allclose(np.asarray(again(other))[0], before[0])


def test_bad_config_values_get_clear_errors():
    with pytest.raises(ValueError, match="image_dropout needs image_presence.*image_dropout=0.5, image_presence=False"):
        ModelConfig(image_dropout=0.5)
    with pytest.raises(ValueError, match="image_dropout=1.0"):
        ModelConfig(image_presence=True, image_dropout=1.0)
    with pytest.raises(ValueError, match="pooling must be one of 'max', 'avg'. Received: pooling='sum'"):
        ModelConfig(pooling="sum")
    with pytest.raises(ValueError, match="model="):
        ModelConfig(model="text")


def test_imagenet_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.config, "keras_home", lambda: str(tmp_path), raising=False)
    with pytest.raises(FileNotFoundError, match="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        resolve_image_weights("imagenet")
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_image_weights(str(tmp_path / "missing.h5"))
    assert resolve_image_weights("none") is None
