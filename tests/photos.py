"""Photo bytes for tests: good JPEG and PNG, broken ones and decompression bombs, all built here."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def jpeg(value: int, size: int = 40, progressive: bool = False) -> bytes:
    """A JPEG of uniform grey `value`."""
    return _encode(np.full((size, size, 3), value, np.uint8), "JPEG", progressive=progressive)


def noisy_jpeg(seed: int, size: int = 40, progressive: bool = False) -> bytes:
    """A JPEG of random pixels (large entropy-coded data, so cutting it loses pixels)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return _encode(pixels, "JPEG", progressive=progressive)


def png(value: int, size: int = 40) -> bytes:
    """A PNG of uniform grey `value`."""
    return _encode(np.full((size, size, 3), value, np.uint8), "PNG")


def truncated(data: bytes) -> bytes:
    """The first half of an encoded photo, as an interrupted download leaves it."""
    return data[: len(data) // 2]


def png_with_bad_data(size: int = 40) -> bytes:
    """A PNG with a valid signature and header whose image data (IDAT) is overwritten."""
    data = bytearray(_encode(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 10: start + 60] = b"\x00" * 50
    return bytes(data)


def png_bomb(side: int = 20000) -> bytes:
    """A valid 1-bit grey PNG of `side` x `side` zeros: ~50 KB that decodes to side*side*3 RGB bytes."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed pixels
    deflate = zlib.compressobj(9)
    idat = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    return _png(side, side, bit_depth=1, color_type=0, idat=idat)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG header declaring `width` x `height` (with a correct CRC), followed by a little data."""
    return _png(width, height, bit_depth=8, color_type=2, idat=zlib.compress(b"\x00" * 64))


def jpeg_declaring(height: int, width: int) -> bytes:
    """A small JPEG whose frame header (SOF0) is edited to declare `height` x `width`."""
    data = bytearray(jpeg(128, size=16))
    sof = data.index(b"\xff\xc0")  # then length (2), precision (1), height (2), width (2)
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _png(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _encode(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()
