"""TensorFlow preprocessing shared by the tf.data pipeline and the serving signatures.

Training and serving call the same functions, so a SavedModel sees tags and pixels exactly
as the model did in training.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from app.downloader.images import MAX_IMAGE_PIXELS
from app.text.normalize import INVISIBLE_RE2, WHITESPACE_RE2
from app.text.stemming import STEMMERS
from app.text.tags import OOV_ID, PAD_ID, Vocabulary

# `decode_images`'s reason for a photo given without bytes.
NO_IMAGE = "no image bytes"


class TagLookup(tf.Module):
    """Tag strings -> cleaned, cut, normalised, padded int32 ids, inside the graph.

    The one place where tags are cut to the tag limit and padded: the model's input length
    (`limit`), the tf.data pipelines, serving and tuning all take it from here. Everything it
    needs is in the vocabulary (tokens, tag limit, case folding, normalisation forms), so a run's
    `vocab.tsv` fully describes its tag inputs. With a normalisation (`app.text.stemming`), each
    tag is looked up as `(photo language group, tag)`, then `("", tag)` in the vocabulary's forms,
    then as written.

    Args:
        vocab: the vocabulary.
    """

    def __init__(self, vocab: Vocabulary, name: str | None = None):
        super().__init__(name=name)
        self.vocab = vocab
        self.limit = vocab.limit
        self.lowercase = vocab.lowercase
        index = {token: i + 2 for i, token in enumerate(vocab.tokens)}
        self.table = _table(index, OOV_ID)
        self.needs_language = vocab.normalization != "none"
        if self.needs_language:
            self.forms = _table({f"{group}\x00{tag}": index.get(form, OOV_ID)
                                 for (group, tag), form in vocab.forms.items()}, -1)
            self.stemmed_languages = tf.constant(sorted(STEMMERS))

    @property
    def vocab_size(self) -> int:
        """Number of ids, padding and OOV included (the embedding's input dimension)."""
        return self.vocab.size

    def __call__(self, tags: tf.RaggedTensor, cleaned: bool = False, languages: tf.Tensor | None = None) -> tf.Tensor:
        """Maps ragged `[batch, None]` tag strings to `[batch, limit]` ids (0 = padding).

        Args:
            tags: raw tags (serving) or tags from shards.
            cleaned: the tags were already cleaned by `app.text.tags.clean_tags` (as in shards);
                cleaning is idempotent, so this only skips repeated work. Serving cleans.
            languages: `[batch]` each photo's language (`app.text.language`), needed when the
                vocabulary is normalised (`needs_language`), ignored otherwise.
        """
        ids = self.ragged_ids(tags, cleaned, languages)
        return ids.to_tensor(default_value=PAD_ID, shape=[None, self.limit])  # cuts each photo to its first `limit`

    def ragged_ids(self, tags: tf.RaggedTensor, cleaned: bool = False,
                   languages: tf.Tensor | None = None) -> tf.RaggedTensor:
        """The cleaned tags' ids, ragged and not cut to the limit (see `__call__`)."""
        if not cleaned:
            tags = clean_tags(tags, self.lowercase)
        ids = self.table.lookup(tags.flat_values)
        if self.needs_language:
            if languages is None:
                raise ValueError(f"the vocabulary is normalised ({self.vocab.normalization}): pass each photo's "
                                 f"language. Received: languages=None")
            ids = self._normalised_ids(tags, languages, ids)
        return tags.with_flat_values(tf.cast(ids, tf.int32))

    def unknown(self, tags: tf.RaggedTensor, languages: tf.Tensor | None = None) -> tf.RaggedTensor:
        """The raw tags' cleaned forms that are out of the vocabulary (the model cannot use them)."""
        cleaned = clean_tags(tags, self.lowercase)
        ids = self.ragged_ids(cleaned, cleaned=True, languages=languages)
        return tf.ragged.boolean_mask(cleaned, tf.equal(ids, OOV_ID))

    def _normalised_ids(self, tags: tf.RaggedTensor, languages: tf.Tensor, as_written: tf.Tensor) -> tf.Tensor:
        """Ids of the flat tags from the forms table: `(group, tag)`, else `("", tag)`, else as written."""
        stemmed = tf.reduce_any(tf.equal(languages[:, None], self.stemmed_languages[None, :]), axis=1)
        group = tf.gather(tf.where(stemmed, languages, ""), tags.value_rowids())
        own = self.forms.lookup(tf.strings.join([group, tags.flat_values], separator="\x00"))
        shared = self.forms.lookup(tf.strings.join(["", tags.flat_values], separator="\x00"))
        return tf.where(own >= 0, own, tf.where(shared >= 0, shared, as_written))


def _table(mapping: dict, default: int) -> tf.lookup.StaticHashTable:
    """A string -> int64 table; an empty mapping still gets one key ("" never survives cleaning)."""
    keys = tf.constant(list(mapping) or [""], dtype=tf.string)
    values = tf.constant(list(mapping.values()) or [default], dtype=tf.int64)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=default)


def clean_tags(tags: tf.RaggedTensor, lowercase: bool = False) -> tf.RaggedTensor:
    """The graph version of `app.text.tags.clean_tags`: the text rule's invisible characters removed and
    surrounding white space stripped (NFC is left to the caller: `app.text.normalize`), then empty and
    digit-only tags dropped, repeats dropped."""
    values = tf.strings.regex_replace(tags.flat_values, INVISIBLE_RE2, "")
    values = tf.strings.regex_replace(values, WHITESPACE_RE2, "")
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
_HEX_PAIRS = np.array([f"{i:02x}" for i in range(256)], dtype=object)


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


_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# How many photos of a batch decode at once.
_DECODE_THREADS = 8


def decode_images(image_bytes: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Decodes JPEG/PNG bytes to `[batch, size, size, 3]` uint8; one bad photo never fails the batch.

    A photo is decoded only if its bytes start with the JPEG or PNG magic number and its header
    declares at most `MAX_IMAGE_PIXELS` pixels (read before decoding: decompression bombs cost
    nothing). Each photo decodes in its own tf.data element, and a photo whose header or data is
    corrupt or truncated is dropped there (`ignore_errors`) instead of failing the batch. A photo
    that is not decoded gets a black image.

    Args:
        image_bytes: `[batch]` encoded photos.
        size: the side of the square output images.

    Returns:
        `(images, errors)`: `errors[i]` is "" where photo `i` was decoded, else why it was not.
    """
    count = tf.shape(image_bytes, out_type=tf.int64)[0]
    is_image = _is_jpeg(image_bytes) | _is_png(image_bytes)
    index, pixels, sizes = _decode_isolated(image_bytes, is_image, size)
    # Survivors are scattered back by index; row `count` takes the end marker and is cut off.
    shape = tf.stack([count + 1, size, size, 3])
    images = tf.scatter_nd(index[:, None], pixels, shape)[:count]
    survived = tf.scatter_nd(index[:, None], tf.ones_like(index), [count + 1])[:count] > 0
    sizes = tf.scatter_nd(index[:, None], sizes, tf.stack([count + 1, 2]))[:count]
    return images, _image_errors(image_bytes, is_image, survived, sizes)


def _is_jpeg(data: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(data, 0, len(_JPEG_MAGIC)), _JPEG_MAGIC)


def _is_png(data: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(data, 0, len(_PNG_MAGIC)), _PNG_MAGIC)


def _decode_isolated(image_bytes: tf.Tensor, is_image: tf.Tensor, size: int) -> tuple:
    """Decodes the photos where `is_image`, each in its own tf.data element.

    Returns:
        `(index, images, sizes)` of the photos that did not fail, plus an end marker row with index
        `batch`, so that the batch below always exists, even when no photo survives.
    """
    count = tf.shape(image_bytes, out_type=tf.int64)[0]
    index = tf.where(is_image)[:, 0]
    photos = tf.data.Dataset.from_tensor_slices((index, tf.gather(image_bytes, index)))
    decoded = photos.map(lambda i, data: (i, *_decode_one(data, size)), num_parallel_calls=_DECODE_THREADS,
                         deterministic=False).ignore_errors()
    end = tf.data.Dataset.from_tensors((count, tf.zeros([size, size, 3], tf.uint8), tf.constant([0, 0], tf.int64)))
    return decoded.concatenate(end).batch(count + 1).get_single_element()


def _decode_one(data: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """One photo: `(image, [height, width] declared)`, black unless its declared size fits.

    Raises (inside tf.data, where the photo is then dropped) on a JPEG header or data, or PNG data,
    that libjpeg or libpng cannot read. A PNG without an IHDR header declares `[-1, -1]`.
    """
    declared = tf.cond(_is_png(data), lambda: _png_size(data),
                       lambda: tf.image.extract_jpeg_shape(data, output_type=tf.int64)[:2])
    image = tf.cond(_fits(declared[0], declared[1]),
                    lambda: _resize(tf.io.decode_image(data, channels=3, expand_animations=False), size),
                    lambda: tf.zeros([size, size, 3], tf.uint8))
    return image, declared


def _png_size(data: tf.Tensor) -> tf.Tensor:
    """`[height, width]` from a PNG's IHDR chunk (bytes 16-24, big-endian), or `[-1, -1]`."""
    padded = tf.strings.join([data, b"\0" * 24])  # decode_raw needs all 24 bytes
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 16, 8), tf.uint8), tf.int64)
    width, height = tf.unstack(tf.reduce_sum(tf.reshape(raw, [2, 4]) * [1 << 24, 1 << 16, 1 << 8, 1], axis=1))
    has_header = tf.equal(tf.strings.substr(padded, 12, 4), b"IHDR")
    return tf.where(has_header, tf.stack([height, width]), tf.constant([-1, -1], tf.int64))


def _fits(height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Declared sizes within `MAX_IMAGE_PIXELS` (sides clipped first: 2**32 - 1 squared overflows int64)."""
    h, w = tf.clip_by_value(height, -1, MAX_IMAGE_PIXELS + 1), tf.clip_by_value(width, -1, MAX_IMAGE_PIXELS + 1)
    return (h >= 0) & (w >= 0) & (h * w <= MAX_IMAGE_PIXELS)


def _image_errors(image_bytes: tf.Tensor, is_image: tf.Tensor, survived: tf.Tensor, sizes: tf.Tensor) -> tf.Tensor:
    """Why each photo was not decoded ("" where it was); see `decode_images`."""
    height, width = sizes[:, 0], sizes[:, 1]
    fits = _fits(height, width)
    too_large = tf.strings.join(["declares ", tf.strings.as_string(width), "x", tf.strings.as_string(height),
                                 f" pixels, over the limit of {MAX_IMAGE_PIXELS} (MAX_IMAGE_PIXELS)"])
    not_image = tf.strings.join(["not a JPEG or PNG: starts with 0x", _hex(tf.strings.substr(image_bytes, 0, 8))])
    corrupt = tf.where(_is_png(image_bytes), "corrupt or truncated PNG data", "corrupt or truncated JPEG data")
    errors = tf.where(survived & fits, "", corrupt)
    errors = tf.where(survived & (height >= 0) & tf.logical_not(fits), too_large, errors)
    errors = tf.where(is_image, errors, not_image)
    return tf.where(tf.equal(tf.strings.length(image_bytes), 0), NO_IMAGE, errors)


def _hex(data: tf.Tensor) -> tf.Tensor:
    """Short byte strings -> lower-case hex."""
    values = tf.strings.unicode_decode(data, "ISO-8859-1")  # byte value per code point
    digits = tf.gather(tf.constant(_HEX_PAIRS), values.flat_values)
    return tf.strings.reduce_join(values.with_flat_values(digits), axis=1)


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
    image = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
