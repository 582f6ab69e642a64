import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from app.downloader import images
from app.downloader.images import DownloadFailure, encode_photo, quarter_turns, target_size


def _photo(width=120, height=80, fmt="JPEG", **save) -> bytes:
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size but holds almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("save", [{}, {"progressive": True}])
def test_complete_jpeg_passes_and_every_truncation_is_caught(save):
    data = _photo(**save)
    assert images.verify_image(data) == images.ImageInfo("JPEG", 120, 80)
    for cut in (len(data) - 1, len(data) - 2, len(data) - 50, len(data) // 2, 700):
        with pytest.raises(images.BadImage) as err:
            images.verify_image(data[:cut])
        assert err.value.reason == "truncated", cut


def test_bytes_after_the_end_marker_are_allowed_but_a_missing_marker_is_not():
    data = _photo()
    assert images.verify_image(data + b"\x00" * 40 + b"SEFT trailer").format == "JPEG"
    # The end marker removed but the file padded: the decoder alone would see "enough" data.
    with pytest.raises(images.BadImage, match="no end-of-image marker"):
        images.check_complete(data[:-2] + b"\x00\x00", "JPEG")


def test_png_is_accepted_and_a_truncated_png_is_not():
    data = _photo(fmt="PNG")
    assert images.verify_image(data).format == "PNG"
    with pytest.raises(images.BadImage) as err:
        images.verify_image(data[: len(data) - 30])
    assert err.value.reason == "truncated"


@pytest.mark.parametrize("data,reason", [
    (b"", "not_an_image"),
    (b"<!DOCTYPE html><html><body>Too many requests</body></html>", "not_an_image"),
    (b"\xff\xd8\xff\xe0 garbage", "not_an_image"),
])
def test_non_images_are_refused_with_a_reason(data, reason):
    with pytest.raises(images.BadImage) as err:
        images.verify_image(data)
    assert err.value.reason == reason and err.value.detail


def test_gif_is_a_source_format_but_not_a_shard_format():
    data = _photo(fmt="GIF")
    assert images.open_image(data).format == "GIF"
    with pytest.raises(images.BadImage) as err:
        images.verify_image(data)
    assert err.value.reason == "unsupported_format" and "GIF" in err.value.detail


def test_decompression_bomb_is_refused_from_its_header_without_decoding():
    side = int(images.MAX_IMAGE_PIXELS ** 0.5) + 1
    started = time.perf_counter()
    with pytest.raises(images.BadImage) as err:
        images.open_image(_png_header_only(side, side))
    assert err.value.reason == "too_many_pixels" and f"{side}x{side}" in err.value.detail
    assert time.perf_counter() - started < 0.5
    assert images.open_image(_png_header_only(1000, 1000)).size == (1000, 1000)


@pytest.mark.parametrize("size,max_side,expected", [
    ((4000, 3000), 640, (640, 480)),
    ((3000, 4000), 640, (480, 640)),
    ((500, 300), 640, (500, 300)),  # never enlarged
    ((641, 10), 640, (640, 10)),
    ((5000, 3), 640, (640, 1)),
    ((4000, 3000), 0, (4000, 3000)),  # 0 keeps the size
])
def test_target_size_respects_max_side_and_never_upscales(size, max_side, expected):
    assert target_size(*size, max_side) == expected


def test_encode_shrinks_large_photos_and_keeps_small_jpegs_byte_for_byte():
    large, small = _photo(300, 200), _photo(50, 40)
    data, width, height = encode_photo(large, 0, 100)
    assert (width, height) == (100, 67) and Image.open(io.BytesIO(data)).size == (100, 67)
    assert encode_photo(small, 0, 100) == (small, 50, 40)
    png = _photo(50, 40, fmt="PNG")
    data, width, height = encode_photo(png, 0, 100)
    assert (width, height) == (50, 40) and Image.open(io.BytesIO(data)).format == "JPEG"


def test_rotation_turns_the_pixels_counter_clockwise():
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:20, 30:] = (255, 0, 0)  # red top-right quadrant
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    data, width, height = encode_photo(buffer.getvalue(), quarter_turns(90.0), 0)
    turned = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert (width, height) == (40, 60) and turned.shape == (60, 40, 3)
    assert turned[5, 5, 0] > 200 and turned[55, 35, 0] < 50  # top-right went to top-left
    assert [quarter_turns(r) for r in (0.0, 180.0, 270.0, float("nan"))] == [0, 2, 3, 0]
    with pytest.raises(DownloadFailure, match="bad_rotation"):
        quarter_turns(45.0)
