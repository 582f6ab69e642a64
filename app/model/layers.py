"""Small custom layers: masked pooling over tags, whole-photo tag and image dropout, the missing-image
embedding, ResNet preprocessing."""

from __future__ import annotations

import keras
from keras import ops

PACKAGE = "cic"


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedGlobalMaxPooling1D(keras.layers.Layer):
    """Max over the time axis of `[batch, steps, features]`, ignoring masked (padding) steps.

    Keras's `GlobalMaxPooling1D` ignores the mask, so padding vectors leak into the max. Here a
    row with every step masked (a photo without tags) gives zeros, never -inf.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.max(inputs, axis=1)
        keep = ops.expand_dims(ops.cast(mask, "bool"), -1)
        lowest = ops.full_like(inputs, float("-inf"))
        pooled = ops.max(ops.where(keep, inputs, lowest), axis=1)
        any_kept = ops.any(keep, axis=1)
        return ops.where(any_kept, pooled, ops.zeros_like(pooled))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskedGlobalAveragePooling1D(keras.layers.Layer):
    """Mean over the unmasked steps of `[batch, steps, features]`; zeros for an all-masked row."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return ops.mean(inputs, axis=1)
        weights = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        total = ops.sum(inputs * weights, axis=1)
        count = ops.sum(weights, axis=1)
        return total / ops.maximum(count, ops.ones_like(count))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


class _PhotoDropout(keras.layers.Layer):
    """Base of the whole-photo dropouts: a rate in [0, 1), a seed, and their config."""

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be in [0, 1). Received: rate={rate}")
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TagDropout(_PhotoDropout):
    """In training, replaces all of a photo's tag ids with padding with probability `rate`.

    This teaches the fused model to do well on photos without tags. Inactive at inference. Given a
    list of id tensors (tag ids, caption word ids), it drops the same photos' ids in each.

    Args:
        rate: probability of dropping a photo's tags.
        seed: optional seed for the drop decisions.
    """

    def call(self, tag_ids, training=False):
        if not training or self.rate == 0.0:
            return tag_ids
        several = isinstance(tag_ids, (list, tuple))
        first = tag_ids[0] if several else tag_ids
        draws = keras.random.uniform((ops.shape(first)[0], 1), seed=self.seed_generator)
        dropped = [ops.where(draws < self.rate, ops.zeros_like(ids), ids)
                   for ids in (tag_ids if several else [tag_ids])]
        return dropped if several else dropped[0]

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImageDropout(_PhotoDropout):
    """In training, marks the image of a photo that still has tags as absent with probability `rate`.

    Takes `[image_present [batch, 1], tag_ids [batch, steps]]` (the tag ids after tag dropout) and
    returns `image_present` with the drops applied. A photo without tags keeps its image, so no
    photo loses both. This teaches the fused model to do well on photos without an image.
    Inactive at inference.

    Args:
        rate: probability of removing the image of a photo that has tags.
        seed: optional seed for the drop decisions.
    """

    def call(self, inputs, training=False):
        present, tag_ids = inputs
        if not training or self.rate == 0.0:
            return present
        has_tags = ops.any(ops.not_equal(tag_ids, 0), axis=1, keepdims=True)
        draws = keras.random.uniform(ops.shape(present), seed=self.seed_generator)
        return ops.where(ops.logical_and(has_tags, draws < self.rate), ops.zeros_like(present), present)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package=PACKAGE)
class MissingImageEmbedding(keras.layers.Layer):
    """Image features where the image is present, a learned missing-image vector where it is not.

    Takes `[features [batch, dim], image_present [batch, 1]]` (1 = present, 0 = absent) and returns
    `present * features + (1 - present) * missing`, `missing` being a trained `[dim]` vector
    (zeros at first). Without it, a photo without an image is scored as a black image.
    """

    def build(self, input_shape):
        self.missing = self.add_weight(shape=(input_shape[0][-1],), initializer="zeros", name="missing")

    def call(self, inputs):
        features, present = inputs
        present = ops.cast(present, features.dtype)
        return present * features + (1.0 - present) * ops.cast(self.missing, features.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResNetPreprocess(keras.layers.Layer):
    """ResNet50 ("caffe") preprocessing inside the model: RGB 0..255 -> BGR minus ImageNet means."""

    MEANS = (103.939, 116.779, 123.68)

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        bgr = ops.flip(images, axis=-1)
        return bgr - ops.convert_to_tensor(self.MEANS, dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SparseReadEmbedding(keras.layers.Embedding):
    """`keras.layers.Embedding` that reads only the rows it looks up.

    Keras's Embedding turns the whole table into a tensor before gathering; with a 110k × 128
    table, that full read, plus the copy-on-write it forces when the optimizer then updates
    rows in place, cost about 20× the step time. A resource gather reads just the rows.
    """

    def call(self, inputs):
        import tensorflow as tf

        ids = ops.cast(inputs, "int32") if inputs.dtype not in ("int32", "int64") else inputs
        rows = tf.nn.embedding_lookup(self.embeddings.value, ids)
        return ops.cast(rows, self.compute_dtype)
