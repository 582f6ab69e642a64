"""TensorFlow preprocessing shared by the tf.data pipeline and the serving signatures.

Training and serving call the same functions, so a SavedModel sees tags and pixels exactly
as the model did in training.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from app.data.tags import OOV_ID, PAD_ID, Vocabulary


class TagLookup(tf.Module):
    """Tag strings -> cleaned, cut, padded int32 ids, inside the graph.

    The one place where tags are cut to the tag limit and padded: the model's input length
    (`limit`), the tf.data pipelines, serving and tuning all take it from here. Everything it
    needs is in the vocabulary (tokens, tag limit, case folding), so a run's `vocab.tsv` fully
    describes its tag inputs.

    Args:
        vocab: the vocabulary.
    """

    def __init__(self, vocab: Vocabulary, name: str | None = None):
        super().__init__(name=name)
        self.vocab = vocab
        self.limit = vocab.limit
        self.lowercase = vocab.lowercase
        # An empty vocabulary still needs one key: "" never survives cleaning, so it maps nothing.
        keys = tf.constant(vocab.tokens or [""], dtype=tf.string)
        values = tf.range(2, 2 + len(vocab.tokens), dtype=tf.int64) if vocab.tokens else tf.constant([OOV_ID], tf.int64)
        self.table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=OOV_ID)

    @property
    def vocab_size(self) -> int:
        """Number of ids, padding and OOV included (the embedding's input dimension)."""
        return self.vocab.size

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
    tags as bad rows instead).
    """
    text = tf.strings.regex_replace(text, r"\+", " ")
    data = tf.strings.bytes_split(text)
    values = tf.strings.unicode_decode(data.flat_values, "ISO-8859-1")  # byte value per 1-byte string
    byte = values.flat_values
    rows = data.value_rowids()
    nxt1 = tf.concat([byte[1:], [0]], 0)
    nxt2 = tf.concat([byte[2:], [0, 0]], 0)
    same1 = tf.concat([tf.equal(rows[1:], rows[:-1]), [False]], 0)
    same2 = tf.concat([tf.equal(rows[2:], rows[:-2]), [False, False]], 0)
    h1, h2 = tf.gather(_HEX, nxt1), tf.gather(_HEX, nxt2)
    escape = tf.equal(byte, ord("%")) & same1 & same2 & (h1 >= 0) & (h2 >= 0)
    escape_prev1 = tf.concat([[False], escape[:-1]], 0)
    escape_prev2 = tf.concat([[False, False], escape[:-2]], 0)
    decoded = tf.where(escape, h1 * 16 + h2, byte)
    keep = tf.logical_not(escape_prev1 | escape_prev2)
    kept = tf.RaggedTensor.from_value_rowids(tf.boolean_mask(decoded, keep), tf.boolean_mask(rows, keep),
                                             nrows=tf.shape(text, out_type=tf.int64)[0])
    return _bytes_to_string(kept)


def _bytes_to_string(byte_values: tf.RaggedTensor) -> tf.Tensor:
    chars = tf.gather(tf.constant(_BYTES, tf.string), byte_values.flat_values)
    return tf.strings.reduce_join(byte_values.with_flat_values(chars), axis=1)


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
