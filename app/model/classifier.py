"""The classifier, built in one place: tag branch + ResNet50 image branch -> shared head.

    tag_ids ─ TagDropout ─ Embedding(mask_zero, sparse reads) [─ Dense projection] ─ masked max|avg pool ─┐
    [text_ids ┘ (shared: concatenated with tag_ids; separate: its own Embedding and pool) ┤]
    image ─ ResNetPreprocess ─ ResNet50(pooling=avg) ─ LayerNorm ─ [MissingImageEmbedding] ─┴─ Concatenate
        ─ n × (Dropout ─ Dense(q, relu, L2)) ─ Dropout ─ Dense(classes, sigmoid)

With `image_presence`, an `image_present` input (1 where the photo's image was decoded, 0 where
not; serving sets it from `image_ok`) swaps the image features of a photo without an image for a
learned missing-image vector, and `image_dropout` marks images absent in training (ImageDropout,
only for photos that keep their tags after TagDropout).

With `word_vectors` frozen or fine-tuned, each embedding (`tag_embedding`, `text_embedding`) has the
text encoder's width and starts from the vocabulary's encoder vectors (`app.model.word_vectors`), and a
linear `*_projection` maps them to `embedding_dim` before pooling.

The head takes image *features*, and `attach_backbone` puts ResNet50 in front of it. So a
frozen backbone's features can be computed once per image and the head trained on them, while
the saved model still maps pixels to scores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import keras
import numpy as np

from app.config import ModelConfig
from app.model.preprocessor import ContextualPreprocessor
from app.model.word_vectors import starting_vectors
from app.model.layers import (ImageDropout, MaskedGlobalAveragePooling1D, MaskedGlobalMaxPooling1D,
                              MissingImageEmbedding, ResNetPreprocess, SparseReadEmbedding, TagDropout)

IMAGENET_NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_NOTOP


def build_head(config: ModelConfig, num_classes: int, preprocessor: ContextualPreprocessor,
               seed: int = 0, word_vectors: Optional[dict] = None) -> keras.Model:
    """Builds the model on tag ids, caption word ids and/or image features (whichever the preprocessor gives).

    Args:
        config: the model configuration.
        num_classes: output classes (500 for the challenge).
        preprocessor: the model's inputs (`ContextualPreprocessor.for_model(config, tags)`): their
            specs give the `keras.Input`s, the tag (word) vocabulary the embedding's size, and
            `shared_text` whether words share the tags' embedding and pooling.
        seed: seed for dropout and tag dropout.
        word_vectors: `{"tag"|"text": [vocab size, dim] rows}` the embeddings start from, with
            `config.word_vectors` frozen or fine-tuned (default: `starting_vectors`, encoded once and cached).

    Returns:
        A functional model with the preprocessor's head inputs (`model_inputs(features=True)`:
        `tag_ids`, `text_ids` and/or `image_features`, and `image_present` with `image_presence`), and output
        `scores` `[batch, num_classes]`.
    """
    regularizer = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
    inputs = {name: keras.Input(spec.shape, dtype=spec.dtype, name=name)
              for name, spec in preprocessor.model_inputs(features=True).items()}
    branches, kept_tags, extra_logits = {}, None, []
    if word_vectors is None:
        word_vectors = starting_vectors(config, preprocessor)

    # === Text side: tags and/or caption words ===
    names = [name for name in ("tag_ids", "text_ids") if name in inputs]
    if names:
        ids = [inputs[name] for name in names]
        if "image_features" in inputs and config.tag_dropout > 0:
            dropped = TagDropout(config.tag_dropout, seed=seed, name="tag_dropout")(ids if len(ids) > 1 else ids[0])
            ids = list(dropped) if len(ids) > 1 else [dropped]
        kept_tags = ids[0] if len(ids) == 1 else keras.layers.Concatenate(name="text_side_ids")(ids)
        separate = preprocessor.uses_text and not preprocessor.shared_text  # tags, then words: a branch each
        tag_ids, tag_vocab = (ids[0], preprocessor.tags.vocab_size) if separate else (
            kept_tags, (preprocessor.tags or preprocessor.text).vocab_size)  # one vocabulary: pooled together
        branches["tag"] = _token_branch(config, tag_vocab, tag_ids, "tag", word_vectors)
        if separate:
            branches["text"] = _token_branch(config, preprocessor.text.vocab_size, ids[1], "text", word_vectors)
        if config.wide_tags:
            extra_logits.append(_wide_tags(tag_ids, tag_vocab, num_classes))

    if "image_features" in inputs:
        branches["image"] = _image_branch(config, inputs, kept_tags, seed)

    # === Head ===
    x = parts[0] if len(parts := list(branches.values())) == 1 else keras.layers.Concatenate(name="fuse")(parts)
    for i in range(config.hidden_layers):
        x = keras.layers.Dropout(config.dropout, seed=seed + i, name=f"dropout_{i}")(x)
        x = keras.layers.Dense(config.hidden_units, activation="relu", kernel_regularizer=regularizer,
                               name=f"hidden_{i}")(x)
    x = keras.layers.Dropout(config.dropout, seed=seed + 99, name="dropout_out")(x)
    if config.branch_scores and len(branches) > 1:  # each branch's own linear scores
        extra_logits += [keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name=f"{name}_logits")(y)
                         for name, y in branches.items()]
    model = keras.Model(inputs, _scores(x, extra_logits, num_classes), name=f"{config.model}_head")
    for prefix, rows in word_vectors.items():
        model.get_layer(f"{prefix}_embedding").set_weights([np.asarray(rows, np.float32)])
    return model


def _scores(fused, extra_logits: list, num_classes: int):
    """The class scores: a sigmoid Dense on the fused features, or, with more terms (each branch's own
    linear scores, the wide tag path), the sum of their logits and the fused head's, then the sigmoid:
    each keeps a direct path to the classes, as late fusion or a linear model has, in one model."""
    if not extra_logits:
        return keras.layers.Dense(num_classes, activation="sigmoid", dtype="float32", name="scores")(fused)
    logits = [keras.layers.Dense(num_classes, name="fused_logits")(fused), *extra_logits]
    return keras.layers.Activation("sigmoid", dtype="float32", name="scores")(keras.layers.Add(name="logits")(logits))


def _wide_tags(ids, vocab_size: int, num_classes: int):
    """A learned tag x class table averaged over a photo's tags: a linear model on the bag of tags."""
    x = SparseReadEmbedding(vocab_size, num_classes, mask_zero=True, embeddings_initializer="zeros",
                            name="tag_wide")(ids)
    return MaskedGlobalAveragePooling1D(name="tag_wide_pool")(x)


def _token_branch(config: ModelConfig, vocab_size: int, ids, prefix: str, word_vectors: dict):
    """Embedding (masked, sparse reads; with encoder vectors, at their width and then projected) and
    masked max or average pooling over the ids."""
    rows = word_vectors.get(prefix)
    if config.uses_vectors and (rows is None or len(rows) != vocab_size):
        raise ValueError(f"{prefix} embedding: word_vectors={config.word_vectors!r} needs {vocab_size} starting rows. "
                         f"Received: {None if rows is None else len(rows)}")
    width = rows.shape[1] if config.uses_vectors else config.embedding_dim
    x = SparseReadEmbedding(vocab_size, width, mask_zero=True, trainable=config.word_vectors != "frozen",
                            name=f"{prefix}_embedding")(ids)
    if config.uses_vectors:
        x = keras.layers.Dense(config.embedding_dim, name=f"{prefix}_projection")(x)
    pooling = MaskedGlobalMaxPooling1D if config.pooling == "max" else MaskedGlobalAveragePooling1D
    return pooling(name=f"{prefix}_{config.pooling}_pool")(x)


def _image_branch(config: ModelConfig, inputs: dict, kept_tags, seed: int):
    """The image features (with `image_present`, where the model takes it), normalised."""
    features = inputs["image_features"]
    # ResNet's pooled features are non-negative with a scale that depends on the weights;
    # normalising them puts both branches on one scale before fusion.
    x = keras.layers.LayerNormalization(name="image_feature_norm")(features)
    if "image_present" not in inputs:
        return x
    present = inputs["image_present"]
    if config.image_dropout > 0 and kept_tags is not None:
        present = ImageDropout(config.image_dropout, seed=seed + 1000, name="image_dropout")([present, kept_tags])
    return MissingImageEmbedding(name="missing_image")([x, present])


def imagenet_weights_path() -> Path:
    """Where Keras looks for ResNet50's ImageNet weights: `$KERAS_HOME/models/` (default `~/.keras/models/`)."""
    home = keras.config.keras_home() if hasattr(keras.config, "keras_home") else os.environ.get("KERAS_HOME",
                                                                                                 "~/.keras")
    return Path(home).expanduser() / "models" / IMAGENET_NOTOP


def imagenet_hint() -> str:
    """How to get ImageNet weights into the Keras cache (nothing is downloaded at run time)."""
    path = imagenet_weights_path()
    return (f"put {IMAGENET_NOTOP} in {path.parent}/ (the Keras cache, $KERAS_HOME/models/, by default "
            f"~/.keras/models/): on a machine with network, python -c \"import keras; keras.applications.ResNet50("
            f"include_top=False, weights='imagenet')\" downloads it there (or download {IMAGENET_URL}), copy it "
            f"over, and train with --image-weights imagenet")


def resolve_image_weights(weights: str) -> str | None:
    """Maps `none` / `imagenet` / a path to what `keras.applications.ResNet50` takes.

    `imagenet` is only used from the Keras cache: nothing is downloaded.

    Raises:
        FileNotFoundError: with the place to put the weights file and how to get it.
    """
    if weights in (None, "", "none"):
        return None
    if weights == "imagenet":
        path = imagenet_weights_path()
        if not path.exists():
            raise FileNotFoundError(f"ImageNet weights for ResNet50 are not in the Keras cache ({path}). Nothing is "
                                    f"downloaded at run time: {imagenet_hint()}; or pass --image-weights PATH, or "
                                    f"--image-weights none")
        return "imagenet"
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(f"image weights file not found: {path}")
    return str(path)


def build_backbone(image_size: int, weights: str = "none", trainable: bool = False) -> keras.Model:
    """ResNet50 without top, average-pooled, with its preprocessing inside: uint8 pixels -> 2048 features."""
    resolved = resolve_image_weights(weights)
    image = keras.Input((image_size, image_size, 3), name="image")
    x = ResNetPreprocess(name="resnet_preprocess")(image)
    resnet = keras.applications.ResNet50(include_top=False, weights=resolved, pooling="avg",
                                         input_shape=(image_size, image_size, 3))
    resnet.trainable = trainable
    # BatchNorm stays in inference mode even when fine-tuning (the Keras transfer-learning advice):
    # small batches would otherwise wreck its statistics.
    features = resnet(x, training=False)
    return keras.Model(image, features, name="image_backbone")


def attach_backbone(head: keras.Model, backbone: keras.Model | None) -> keras.Model:
    """Returns the pixels-in model: `tag_ids` and/or `image` -> scores, sharing the head's layers."""
    if backbone is None or "image_features" not in head.input:
        return head
    inputs = {name: keras.Input(tensor.shape[1:], dtype=tensor.dtype, name=name)
              for name, tensor in head.input.items() if name != "image_features"}
    image = keras.Input(backbone.input.shape[1:], dtype="uint8", name="image")
    inputs["image"] = image
    head_inputs = {name: inputs[name] for name in head.input if name != "image_features"}
    head_inputs["image_features"] = backbone(image)
    return keras.Model(inputs, head(head_inputs), name=head.name.replace("_head", "_classifier"))


def transfer_pretrained(source: keras.Model, head: keras.Model, freeze_embedding: bool = False) -> list[str]:
    """Initialises `head` from a pre-trained model: its tag embedding, and every layer when both are
    tags-only models of one shape (the study's pre-train, then fine-tune).

    Args:
        source: the pre-trained model (a saved run's model; nested models are searched).
        head: the model to initialise (`build_head`), before training.
        freeze_embedding: keep the transferred embedding out of training.

    Returns:
        The names of the layers whose weights were copied.

    Raises:
        ValueError: the source has no tag embedding, or one of another shape.
    """
    layers = {layer.name: layer for layer in _all_layers(source) if layer.weights}
    embedding = head.get_layer("tag_embedding")
    if "tag_embedding" not in layers:
        raise ValueError(f"the pre-trained model {source.name!r} has no tag embedding")
    names = ["tag_embedding"]
    others = [layer for layer in head.layers if layer.weights and layer is not embedding]
    if source.name == head.name == "tags_head" and all(
            layer.name in layers and _shapes(layers[layer.name]) == _shapes(layer) for layer in others):
        names += [layer.name for layer in others]
    for name in names:
        target = head.get_layer(name)
        if _shapes(layers[name]) != _shapes(target):
            raise ValueError(f"pre-trained {name} has weights of shape {_shapes(layers[name])}, this model's are "
                             f"{_shapes(target)} (use the same --embedding-dim and vocabulary)")
        target.set_weights(layers[name].get_weights())
    if freeze_embedding:  # (an embedding of frozen encoder vectors stays frozen either way)
        embedding.trainable = False
    return names


def silence_classes(model: keras.Model, indices: tuple) -> None:
    """Makes the outputs of `indices` a constant ~1e-13: every term of their logit zeroed (the fused Dense,
    each branch's linear scores, the wide tag table), the fused one's bias at -30. For classes held out of
    training (`--unseen-classes`), whose untrained scores would otherwise read as predictions."""
    columns = list(indices)
    for layer in _all_layers(model):
        if layer.name not in ("scores", "fused_logits", "tag_wide") and not layer.name.endswith("_logits"):
            continue
        weights = layer.get_weights()
        if not weights:  # `scores` as the sigmoid of summed logits
            continue
        weights[0][..., columns] = 0.0
        if len(weights) > 1:
            weights[1][columns] = -30.0 if layer.name in ("scores", "fused_logits") else 0.0
        layer.set_weights(weights)


def _all_layers(model: keras.Model) -> list:
    out = []
    for layer in model.layers:
        out += _all_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return out


def _shapes(layer) -> list:
    return [tuple(w.shape) for w in layer.weights]


def load_classifier(path: str | Path) -> keras.Model:
    """Loads a saved `.keras` classifier (this module registers its custom layers)."""
    return keras.saving.load_model(path)
