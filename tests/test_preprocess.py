import io
import random
from urllib.parse import unquote_to_bytes

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from app.data.preprocess import TagLookup, decode_images, percent_decode, split_yfcc_tags
from app.data.tags import OOV_ID, TagDecodeError, Vocabulary, clean_tags, decode_field, decode_tags

TRICKY = ["dog", "new+york", "caf%C3%A9", "a%2Cb", "%E6%9D%B1%E4%BA%AC", "100%25", "plus%2Bsign", "", "x"]


def test_graph_percent_decoding_matches_python():
    got = [s.decode("utf-8") for s in percent_decode(tf.constant(TRICKY)).numpy()]
    assert got == [decode_field(t) for t in TRICKY]


def test_graph_keeps_a_bad_escape_literally():
    with pytest.raises(TagDecodeError):
        decode_field("50%zz")
    assert percent_decode(tf.constant(["50%zz", "%4"])).numpy().tolist() == [b"50%zz", b"%4"]


def test_graph_percent_decoding_matches_urllib_on_random_text():
    rng = random.Random(0)
    alphabet = ["%", "%", "+", "a", "F", "0", "9", "z", "é", ",", "%4", "%E6", "%2C", "%%"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10))) for _ in range(3000)]
    got = percent_decode(tf.constant(texts)).numpy().tolist()
    assert got == [unquote_to_bytes(t.replace("+", " ")) for t in texts]  # a bad escape stays as it is


def test_yfcc_split_of_any_batch():
    for fields in ([""], ["a"], ["x", ""], [], [",,"]):
        got = split_yfcc_tags(tf.constant(fields, tf.string)).to_list()
        assert [[t.decode() for t in row if t] for row in got] == [decode_tags(f) for f in fields]


def test_yfcc_field_split_matches_python():
    fields = ["dog,new+york,caf%C3%A9,rock%2C+paper,2009", "", "a,,b"]
    got = split_yfcc_tags(tf.constant(fields)).to_list()
    assert [[t.decode() for t in row if t] for row in got] == [decode_tags(f) for f in fields]


def test_tag_lookup_matches_python_cleaning_and_vocabulary():
    vocab = Vocabulary(["dog", "new york", "café", "a,b", "Cat"], [9, 8, 7, 6, 5], limit=4, threshold=1)
    photos = [["2009", "dog", "dog", " new york ", "zzz", "café", "a,b"], [], ["123", "456"], ["x"] * 10000,
              ["Cat", "cat"]]
    ids = TagLookup(vocab)(tf.ragged.constant(photos, dtype=tf.string)).numpy()
    expected = [vocab.ids(clean_tags(p)) for p in photos]
    assert ids.tolist() == [row + [0] * (4 - len(row)) for row in expected]
    assert ids[3].tolist() == [OOV_ID, 0, 0, 0]  # a 10,000-tag photo is cut, repeats removed
    lower = TagLookup(Vocabulary(["cat"], [1], 4, 1), lowercase=True)(tf.ragged.constant([["Cat", "CAT"]]))
    assert lower.numpy().tolist() == [[2, 0, 0, 0]]


def test_image_decoding_with_per_example_fallback():
    png, jpeg = io.BytesIO(), io.BytesIO()
    Image.fromarray(np.full((10, 20, 3), 200, np.uint8)).save(png, format="PNG")
    Image.fromarray(np.full((30, 30, 3), 50, np.uint8)).save(jpeg, format="JPEG")
    images, ok = decode_images(tf.constant([png.getvalue(), b"", b"not an image", jpeg.getvalue()]), 8)
    assert images.shape == (4, 8, 8, 3) and ok.numpy().tolist() == [True, False, False, True]
    assert images.numpy()[0].min() == 200 and images.numpy()[1].max() == 0
    assert abs(int(images.numpy()[3].mean()) - 50) <= 2
