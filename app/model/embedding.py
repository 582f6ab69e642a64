"""The embedding head: a photo mapped to a unit vector in the text encoder's space, beside the sigmoid head.

    classifier inputs ─ (trained classifier, frozen) ─┬─ features before its last Dropout ────────────┐
                                                      └─ scores ─ class_name_vectors (frozen) = class_mean ┤
    tag_ids ─ word_vectors (frozen: the encoder's vector of each vocabulary tag) ─ masked mean ─ tag_mean ─┤
        Concatenate ─ Dense(dim, zeros at start) = embed_projection ─┐
        tag_mean + class_mean ───────────────────────────────────────┴─ Add ─ UnitNormalization = embed

`class_mean` is the classifier's seen-class scores times their names' centred vectors, unit length (ConSE: Norouzi et al.,
"Zero-shot learning by convex combination of semantic embeddings"); `tag_mean` the no-training
baseline (the mean of the photo's tag vectors, unit length; 0 for a photo without known tags). So the head starts from both, and learns a
correction from the classifier's features. A model without tags has no tag mean. Any class name,
tag or query encoded by the same encoder is then scored by its cosine with `embed`
(app/model/zero_shot.py).
"""

from __future__ import annotations

import keras
import numpy as np

from app.model.classifier import attach_backbone
from app.model.layers import MaskedGlobalAveragePooling1D, SparseReadEmbedding

HEAD_LAYERS = ("class_name_vectors", "word_vectors", "embed_projection")  # the head's own (saved) layers
FEATURES_BEFORE = "dropout_out"  # the classifier's last Dropout: its input is the fused, hidden features


def classifier_head(model: keras.Model) -> keras.Model:
    """The head (the model that holds the sigmoid `scores` layer) of a trained classifier, nested or not."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and FEATURES_BEFORE in [inner.name for inner in layer.layers]:
            return layer
    return model


def features_and_scores(model: keras.Model) -> keras.Model:
    """The trained classifier with two outputs: the features its sigmoid head reads (before its last
    Dropout), and its scores. Same inputs, same layers."""
    head = classifier_head(model)
    both = keras.Model(head.input, [head.get_layer(FEATURES_BEFORE).input, head.output], name="classifier_head")
    if head is model:
        return both
    return attach_backbone(both, model.get_layer("image_backbone"))


def word_vector_table(tokens: list, vectors: np.ndarray) -> np.ndarray:
    """`[2 + len(tokens), dim]` rows for tag ids: padding and out-of-vocabulary rows 0, then each token's vector."""
    table = np.zeros((len(tokens) + 2, vectors.shape[1]), np.float32)
    table[2:] = vectors
    return table


def build_embedding_model(classifier: keras.Model, class_table: np.ndarray,
                          word_table: np.ndarray | None = None) -> keras.Model:
    """Builds the embedding model on a trained classifier (its layers frozen and shared).

    Args:
        classifier: the trained run's model (pixels in, if it reads images).
        class_table: `[classes, dim]` the encoder's vectors of the class names, centred (less their mean,
            which every photo would share), 0 for classes left out of training (unseen).
        word_table: `word_vector_table` of the run's tag vocabulary (None: a model without tags).

    Returns:
        A functional model with the classifier's inputs and one output, `embed` `[batch, dim]`, unit rows.
    """
    dim = class_table.shape[1]
    trained = features_and_scores(classifier)
    trained.trainable = False
    inputs = {name: keras.Input(t.shape[1:], dtype=t.dtype, name=name) for name, t in classifier.input.items()}
    features, scores = trained(inputs)
    names = keras.layers.Dense(dim, use_bias=False, trainable=False, name="class_name_vectors")
    parts = [keras.layers.UnitNormalization(name="class_mean")(names(scores))]
    words = None
    if word_table is not None and "tag_ids" in inputs:
        words = SparseReadEmbedding(word_table.shape[0], dim, mask_zero=True, trainable=False, name="word_vectors")
        tag_sum = MaskedGlobalAveragePooling1D(name="tag_average")(words(inputs["tag_ids"]))
        parts.append(keras.layers.UnitNormalization(name="tag_mean")(tag_sum))
    both = keras.layers.Concatenate(name="embed_inputs")([features] + parts)
    parts.append(keras.layers.Dense(dim, kernel_initializer="zeros", name="embed_projection")(both))
    summed = keras.layers.Add(name="embed_sum")(parts)
    model = keras.Model(inputs, keras.layers.UnitNormalization(name="embed")(summed), name="embedding")
    names.set_weights([class_table])
    if words is not None:
        words.set_weights([word_table])
    return model
