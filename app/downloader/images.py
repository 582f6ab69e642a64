"""Checking and resizing photos: the image limits and checks shared by prepare, download, serving and
predict, and the downloader's turning, shrinking and re-encoding.

A photo is accepted only if its header declares a known format and a size within
`MAX_IMAGE_PIXELS` (checked before any pixel is decoded), its data ends properly (a JPEG's
end-of-image marker after its scan data, a PNG's `IEND`), and it really decodes.

A downloaded photo is checked against its MD5 first (`check_md5`), then turned upright by its Open
Images `Rotation` (counter-clockwise degrees, applied to the pixel matrix as stored; EXIF
orientation is not applied and is not written back), shrunk so that its longer side is at most
`max_side` (never enlarged), and re-encoded as baseline JPEG at `quality` (90 by default, 4:2:0, no
EXIF or ICC profile); a JPEG that needs neither is kept byte for byte (`encode_photo`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
from dataclasses import dataclass
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

JPEG_QUALITY = 90
_TURNS = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}
_JPEG_EOI = b"\xff\xd9"
_JPEG_SOS = 0xDA


class BadImage(Refused):
    """A refused image; `reason` is `not_an_image`, `unsupported_format`, `too_many_pixels`,
    `truncated` or `undecodable`."""


class DownloadFailure(Refused):
    """A photo refused after download (MD5, rotation, key), with its manifest reason."""


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header declares."""

    format: str
    width: int
    height: int


def md5_base64(data: bytes) -> str:
    """The MD5 digest in Open Images' `OriginalMD5` form (base64 of the 16 bytes)."""
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


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


def check_md5(expected: Optional[str], body: bytes) -> bool:
    """Whether the body was verified against the expected base64 MD5 (False when there is none).

    Raises:
        DownloadFailure: `md5_mismatch`.
    """
    if not expected:
        return False
    digest = md5_base64(body)
    if digest != expected:
        raise DownloadFailure("md5_mismatch", f"MD5 {digest} != expected {expected} ({len(body)} bytes)")
    return True


def quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns for an Open Images `Rotation` (NaN, i.e. unknown, is 0)."""
    if math.isnan(rotation):
        return 0
    turns, rest = divmod(rotation, 90.0)
    if rest:
        raise DownloadFailure("bad_rotation", f"Rotation {rotation!r} is not a multiple of 90")
    return int(turns) % 4


def target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size with the longer side at most `max_side` (0: no limit), never larger than given."""
    longest = max(width, height)
    if max_side <= 0 or longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_photo(data: bytes, turns: int, max_side: int, quality: int = JPEG_QUALITY) -> tuple[bytes, int, int]:
    """Decodes a downloaded photo in full, turns it, shrinks it and re-encodes it as JPEG.

    Args:
        data: the downloaded bytes (already MD5-checked).
        turns: counter-clockwise quarter turns.
        max_side: longer side limit (0: none).
        quality: JPEG quality.

    Returns:
        `(jpeg, width, height)`; a JPEG needing no change is returned as given.

    Raises:
        BadImage: the bytes are not a complete, decodable image within the pixel limit.
    """
    image = open_image(data)
    size = target_size(*image.size, max_side)
    if image.format == "JPEG" and turns == 0 and size == image.size:
        load_image(image, data, draft_size=(1, 1))  # reads every byte; pixels not needed
        return data, *size
    image = _flatten(load_image(image, data, draft_size=size))
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if turns:
        image = image.transpose(_TURNS[turns])
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), *image.size


def _flatten(image: Image.Image) -> Image.Image:
    """RGB or greyscale; transparency is composed over white."""
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")
