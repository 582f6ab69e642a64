"""TensorFlow preprocessing shared by the tf.data pipeline and the serving signatures.

Training and serving call the same functions, so a SavedModel sees tags and pixels exactly
as the model did in training.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from app.data.tags import OOV_ID, PAD_ID, Vocabulary


class TagLookup(tf.Module):
    """Raw tag strings -> cleaned, cut, padded int32 ids, inside the graph.

    Args:
        vocab: the vocabulary (its `limit` is the tag limit).
        lowercase: fold case as the data config did.
    """

    def __init__(self, vocab: Vocabulary, lowercase: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.limit = vocab.limit
        self.lowercase = lowercase
        # An empty vocabulary still needs one key: "" never survives cleaning, so it maps nothing.
        keys = tf.constant(vocab.tokens or [""], dtype=tf.string)
        values = tf.range(2, 2 + len(vocab.tokens), dtype=tf.int64) if vocab.tokens else tf.constant([OOV_ID], tf.int64)
        self.table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=OOV_ID)

    def __call__(self, tags: tf.RaggedTensor, cleaned: bool = False) -> tf.Tensor:
        """Maps ragged `[batch, None]` tag strings to `[batch, limit]` ids (0 = padding).

        Args:
            tags: raw tags (serving) or tags from shards.
            cleaned: the tags were already cleaned by `app.data.tags.clean_tags` (as in shards);
                cleaning is idempotent, so this only skips repeated work. Serving cleans.
        """
        if not cleaned:
            tags = clean_tags(tags, self.lowercase)
        tags = tags[:, : self.limit]
        ids = tf.ragged.map_flat_values(self.table.lookup, tags)
        return tf.cast(ids.to_tensor(default_value=PAD_ID, shape=[None, self.limit]), tf.int32)


def clean_tags(tags: tf.RaggedTensor, lowercase: bool = False) -> tf.RaggedTensor:
    """The graph version of `app.data.tags.clean_tags`: strip, drop empty and digit-only, dedupe."""
    values = tf.strings.strip(tags.flat_values)
    if lowercase:
        values = tf.strings.lower(values, encoding="utf-8")
    rows = tags.value_rowids()
    keep = tf.logical_not(tf.strings.regex_full_match(values, r"[0-9]*"))
    # First occurrence of each (row, tag) pair.
    keys = tf.strings.join([tf.strings.as_string(rows), values], separator="\x00")
    _, index = tf.unique(keys)
    positions = tf.range(tf.shape(keys, out_type=tf.int64)[0])
    first = tf.math.unsorted_segment_min(positions, index, tf.size(index) + 1)
    keep = keep & tf.equal(tf.gather(first, index), positions)
    return tf.RaggedTensor.from_value_rowids(
        tf.boolean_mask(values, keep), tf.boolean_mask(rows, keep), nrows=tags.nrows()
    )


# A plain array, not a tf.constant: importing this module must not start the TF runtime (logical
# devices and multi-worker collectives are configured before that).
_HEX = np.array([int(c, 16) if c in "0123456789abcdefABCDEF" else -1 for c in map(chr, range(256))], np.int32)
_BYTES = np.array([bytes([i]) for i in range(256)], dtype=object)


def percent_decode(text: tf.Tensor) -> tf.Tensor:
    """URL-decodes a 1-D string tensor in the graph: `+` -> space, `%XX` -> byte.

    A `%` that is not followed by two hex digits is kept as it is (the prepare step counts such
    tags as bad rows instead). The work grows with the number of `%` signs, not of bytes.
    """
    text = tf.strings.regex_replace(text, r"\+", " ")
    parts = tf.strings.split(text, "%")  # every part but a row's first followed a "%"
    pieces = parts.flat_values
    follows = _follows_percent(parts)
    padded = tf.strings.join([pieces, "zz"])  # "z" is no hex digit
    head = tf.strings.substr(padded, 0, 2)
    length = tf.strings.length(pieces)
    rest = tf.strings.substr(padded, tf.fill(tf.shape(length), 2), tf.maximum(length - 2, 0))
    digits = tf.gather(_HEX, tf.reshape(tf.strings.unicode_decode(head, "ISO-8859-1").flat_values, [-1, 2]))
    escape = follows & tf.reduce_all(digits >= 0, axis=1)
    byte = tf.gather(tf.constant(_BYTES, tf.string), tf.maximum(digits[:, 0] * 16 + digits[:, 1], 0))
    kept = tf.where(follows, tf.strings.join(["%", pieces]), pieces)
    decoded = tf.where(escape, tf.strings.join([byte, rest]), kept)
    return tf.strings.reduce_join(parts.with_flat_values(decoded), axis=1)


def _follows_percent(parts: tf.RaggedTensor) -> tf.Tensor:
    """For each flat value of `parts`: it is not the first of its row."""
    position = tf.range(tf.size(parts.flat_values, out_type=tf.int64))
    return tf.not_equal(position, tf.gather(parts.row_starts(), parts.value_rowids()))


def split_yfcc_tags(field: tf.Tensor) -> tf.RaggedTensor:
    """One YFCC100M user-tag field per photo -> ragged decoded tags (split on commas, then decode)."""
    parts = tf.strings.split(field, ",")
    return parts.with_flat_values(percent_decode(parts.flat_values))


def decode_images(image_bytes: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes JPEG/PNG bytes to `[batch, size, size, 3]` uint8.

    Bytes that are empty or not JPEG/PNG (by magic number) give a black image and `False` in
    the returned validity vector, instead of failing the whole batch.
    """
    head = tf.strings.substr(image_bytes, 0, 4)
    is_jpeg = tf.equal(tf.strings.substr(head, 0, 3), b"\xff\xd8\xff")
    is_png = tf.equal(head, b"\x89PNG")
    valid = is_jpeg | is_png

    def decode_one(args):
        data, ok = args
        return tf.cond(
            ok,
            lambda: _resize(tf.io.decode_image(data, channels=3, expand_animations=False), size),
            lambda: tf.zeros([size, size, 3], tf.uint8),
        )

    images = tf.map_fn(decode_one, (image_bytes, valid), fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
    return images, valid


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
    image = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
