import io
import os
import random
import threading
import time
from urllib.parse import unquote_to_bytes

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from app.downloader.images import MAX_IMAGE_PIXELS
from app.model.preprocess import TagLookup, decode_images, percent_decode, split_yfcc_tags
from app.text.tags import OOV_ID, TagDecodeError, Vocabulary, clean_tags, decode_field, decode_tags
import photos

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
    index = {t: i + 2 for i, t in enumerate(vocab.tokens)}
    expected = [[index.get(t, OOV_ID) for t in clean_tags(p)][:4] for p in photos]  # Python cleaning, cut to 4
    assert ids.tolist() == [row + [0] * (4 - len(row)) for row in expected]
    assert ids[3].tolist() == [OOV_ID, 0, 0, 0]  # a 10,000-tag photo is cut, repeats removed
    lower = TagLookup(Vocabulary(["cat"], [1], 4, 1, lowercase=True))(tf.ragged.constant([["Cat", "CAT"]]))
    assert lower.numpy().tolist() == [[2, 0, 0, 0]]


def test_image_decoding_with_per_example_fallback():
    png, jpeg = io.BytesIO(), io.BytesIO()
    Image.fromarray(np.full((10, 20, 3), 200, np.uint8)).save(png, format="PNG")
    Image.fromarray(np.full((30, 30, 3), 50, np.uint8)).save(jpeg, format="JPEG")
    images, errors = decode_images(tf.constant([png.getvalue(), b"", b"not an image", jpeg.getvalue()]), 8)
    assert images.shape == (4, 8, 8, 3)
    not_image = b"not a JPEG or PNG: starts with 0x6e6f7420616e2069"  # "not an i"
    assert errors.numpy().tolist() == [b"", b"no image bytes", not_image, b""]
    assert images.numpy()[0].min() == 200 and images.numpy()[1].max() == 0
    assert abs(int(images.numpy()[3].mean()) - 50) <= 2


def test_a_corrupt_photo_is_dropped_alone_and_the_others_decode_as_alone():
    good = [photos.noisy_jpeg(1), photos.png(90), photos.noisy_jpeg(2, progressive=True)]
    bad = [photos.truncated(photos.noisy_jpeg(3)), photos.png_with_bad_data(), b"\xff\xd8\xff" + b"garbage" * 9,
           photos.truncated(photos.noisy_jpeg(4, size=200, progressive=True)), photos.png_declaring(40, 40),
           b"\x89PNG\r\n\x1a\n" + b"no IHDR chunk here"]
    decode = tf.function(lambda data: decode_images(data, 16))
    images, errors = decode(tf.constant([bad[0], good[0], bad[1], bad[2], good[1], bad[3], bad[4], bad[5], good[2]]))
    alone = [decode(tf.constant([g]))[0].numpy()[0] for g in good]
    np.testing.assert_array_equal(images.numpy()[[1, 4, 8]], np.stack(alone))
    assert images.numpy()[[0, 2, 3, 5, 6, 7]].max() == 0
    jpeg_error, png_error = b"corrupt or truncated JPEG data", b"corrupt or truncated PNG data"
    assert errors.numpy().tolist() == [jpeg_error, b"", png_error, jpeg_error, b"", jpeg_error, png_error, png_error,
                                       b""]
    # a tf.data pipeline over such bytes (as in training) runs through
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(bad + good)).batch(4).map(lambda b: decode_images(b, 8)[1])
    assert [e.decode() == "" for batch in ds for e in batch.numpy()] == [False] * 6 + [True] * 3


def test_empty_batch_decodes_to_nothing():
    images, errors = decode_images(tf.constant([], tf.string), 8)
    assert images.shape == (0, 8, 8, 3) and errors.shape == (0,)


def test_decompression_bombs_are_refused_before_decoding():
    normal = photos.png(60, size=64)
    png_bomb = photos.png_bomb(20000)  # ~50 KB; decoding it would take 20000 * 20000 * 3 = 1.2 GB
    just_over = photos.png_declaring(MAX_IMAGE_PIXELS + 1, 1)
    overflow = photos.png_declaring(2**32 - 1, 2**32 - 1)  # the product does not fit in int64
    bombs = [png_bomb, photos.jpeg_declaring(65000, 65000), just_over, overflow, normal]
    decode = tf.function(lambda data: decode_images(data, 8))
    decode(tf.constant([normal]))  # trace
    _, normal_time, normal_growth = _peak_rss_growth(lambda: decode(tf.constant([normal])))
    (images, errors), bomb_time, bomb_growth = _peak_rss_growth(lambda: decode(tf.constant(bombs)))
    assert errors.numpy().tolist() == [
        f"declares {w}x{h} pixels, over the limit of {MAX_IMAGE_PIXELS} (MAX_IMAGE_PIXELS)".encode()
        for w, h in [(20000, 20000), (65000, 65000), (MAX_IMAGE_PIXELS + 1, 1), (2**32 - 1, 2**32 - 1)]] + [b""]
    assert images.numpy()[4].min() == 60
    assert bomb_growth - normal_growth < 200e6, (bomb_growth, normal_growth)
    assert bomb_time < normal_time + 2, (bomb_time, normal_time)


def _peak_rss_growth(call) -> tuple:
    """`(call(), seconds, peak resident memory growth in bytes)`, RSS sampled every 2 ms."""
    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    start, peak, done = rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    try:
        result = call()
        seconds = time.perf_counter() - started
    finally:
        done.set()
        sampler.join()
    return result, seconds, max(peak[0], rss()) - start
