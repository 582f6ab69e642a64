"""Image limits and checks shared by prepare, download, serving and predict.

A photo is accepted only if its header declares a known format and a size within
`MAX_IMAGE_PIXELS` (checked before any pixel is decoded), its data ends properly (a JPEG's
end-of-image marker after its scan data, a PNG's `IEND`), and it really decodes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image

from app.badrows import Refused

# Photos whose header declares more pixels than this are refused before decoding (decompression
# bombs): 64 Mpx, e.g. 8192 x 8192. Real Open Images originals are far smaller.
MAX_IMAGE_PIXELS = 1 << 26

# What the tf.data pipeline and serving decode (app/model/preprocess.py): prepare stores only these.
SHARD_FORMATS = ("JPEG", "PNG")
# What Flickr serves as originals; the downloader re-encodes anything else as JPEG.
SOURCE_FORMATS = ("JPEG", "PNG", "GIF")

# A file under --images is read only if it is a regular file of at most this many bytes, within this time.
MAX_FILE_BYTES = 1 << 28
READ_SECONDS = 60.0

_JPEG_EOI = b"\xff\xd9"
_JPEG_SOS = 0xDA


class BadImage(Refused):
    """A refused image; `reason` is `not_an_image`, `unsupported_format`, `too_many_pixels`,
    `truncated` or `undecodable`, or for a file (`read_image_file`) `not_a_file`, `unreadable`,
    `too_large` or `slow_read`."""


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header declares."""

    format: str
    width: int
    height: int


def md5_base64(data: bytes) -> str:
    """The MD5 digest in Open Images' `OriginalMD5` form (base64 of the 16 bytes)."""
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


def read_image_file(path: Path, seconds: float = READ_SECONDS, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file, never blocking on what is not a regular file.

    The file is opened without blocking (a FIFO named `x.jpg` does not wait for a writer) and
    refused unless it is a regular file (a directory, a FIFO, a device, a socket); a symbolic link
    loop, a file over `max_bytes` and a read that takes over `seconds` are refused too.

    Raises:
        FileNotFoundError: no such file (a dead link: counted apart by the callers).
        BadImage: `not_a_file`, `unreadable` (a link loop, no permission, an I/O error), `too_large`
            or `slow_read`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise BadImage("unreadable", str(err.strerror or err)) from None
    try:
        _check_regular(fd, max_bytes)
    except BadImage:
        os.close(fd)
        raise
    with open(fd, "rb", buffering=0) as handle:
        chunks, read, deadline = [], 0, time.monotonic() + seconds
        try:
            while chunk := handle.read(1 << 20):
                chunks.append(chunk)
                read += len(chunk)
                if read > max_bytes or time.monotonic() > deadline:
                    what = f"over {max_bytes} bytes" if read > max_bytes else f"not read within {seconds:g} s"
                    raise BadImage("too_large" if read > max_bytes else "slow_read", f"{what} ({read} read)")
        except OSError as err:
            raise BadImage("unreadable", str(err.strerror or err)) from None
    return b"".join(chunks)


def _check_regular(fd: int, max_bytes: int) -> None:
    """Raises `BadImage` unless `fd` is a regular file of at most `max_bytes`."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise BadImage("not_a_file", f"{_file_kind(info.st_mode)}, not a regular file")
    if info.st_size > max_bytes:
        raise BadImage("too_large", f"{info.st_size} bytes (limit {max_bytes})")


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def open_image(data: bytes, formats: Sequence[str] = SOURCE_FORMATS) -> Image.Image:
    """Parses an image's header only (no pixel is decoded) and refuses decompression bombs.

    Args:
        data: the encoded image.
        formats: accepted Pillow format names.

    Returns:
        The lazily opened image; `load_image` decodes it.

    Raises:
        BadImage: unknown or unaccepted format, or more than `MAX_IMAGE_PIXELS` declared.
    """
    if not data:
        raise BadImage("not_an_image", "empty body")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise BadImage("too_many_pixels", str(err)) from err
    except Exception as err:  # Pillow raises many types for unidentifiable data
        raise BadImage("not_an_image", _describe(data)) from err
    if image.format not in formats:
        raise BadImage("unsupported_format", f"{image.format} (accepted: {', '.join(formats)})")
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise BadImage("too_many_pixels", f"{width}x{height} declared (limit {MAX_IMAGE_PIXELS} pixels)")
    return image


def load_image(image: Image.Image, data: bytes, draft_size: Optional[tuple[int, int]] = None) -> Image.Image:
    """Checks that the data ends properly, then decodes every pixel (or every coefficient).

    Args:
        image: from `open_image(data)`.
        data: the same encoded bytes.
        draft_size: for JPEG, decode at the smallest DCT scale (1/2, 1/4, 1/8) that is still at
            least this size; the decoder still reads every entropy-coded byte, so truncation is caught.

    Returns:
        The decoded image.

    Raises:
        BadImage: `truncated` (missing end marker, or the decoder ran out of data) or `undecodable`.
    """
    check_complete(data, image.format)
    if draft_size is not None and image.format == "JPEG":
        image.draft(None, draft_size)
    try:
        image.load()
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError... for broken data
        reason = "truncated" if "truncated" in str(err) else "undecodable"
        raise BadImage(reason, f"{image.format}: {err}") from err
    return image


def verify_image(data: bytes, formats: Sequence[str] = SHARD_FORMATS) -> ImageInfo:
    """Checks that encoded bytes are a complete, decodable image (cheaply: JPEG at 1/8 scale).

    Returns:
        The format and the declared size.

    Raises:
        BadImage: see `open_image` and `load_image`.
    """
    image = open_image(data, formats)
    info = ImageInfo(image.format, *image.size)
    load_image(image, data, draft_size=(1, 1))
    return info


def check_complete(data: bytes, image_format: str) -> None:
    """Refuses a JPEG without an end-of-image marker after its scan data, or a PNG without `IEND`.

    Trailing bytes after the marker (camera trailers, MPO) are allowed.
    """
    if image_format == "JPEG":
        scan = _jpeg_scan_start(data)
        if scan < 0:
            raise BadImage("truncated", f"JPEG of {len(data)} bytes: no scan data")
        if data.rfind(_JPEG_EOI) < scan:
            raise BadImage("truncated", f"JPEG of {len(data)} bytes: no end-of-image marker after the scan data")
    elif image_format == "PNG" and data.rfind(b"IEND") < 0:
        raise BadImage("truncated", f"PNG of {len(data)} bytes: no IEND chunk")


def _jpeg_scan_start(data: bytes) -> int:
    """Offset of the main image's first start-of-scan marker, walking the segments; -1 if none."""
    at, size = 2, len(data)
    while at + 4 <= size:
        if data[at] != 0xFF:
            return -1
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
        elif marker == _JPEG_SOS:
            return at
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # segments without a length
            at += 2
        else:
            at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return -1


def _describe(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return f"HTML/XML document of {len(data)} bytes"
    return f"{len(data)} bytes starting {data[:8]!r}"
