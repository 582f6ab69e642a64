"""Opening source files: plain, gzip or bz2, chosen by magic bytes."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path
from typing import BinaryIO


def open_text(path: str | Path) -> BinaryIO:
    """Opens a source file for binary reading, decompressing gzip or bz2 transparently."""
    path = Path(path)
    with open(path, "rb") as probe:
        magic = probe.read(3)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic == b"BZh":
        return bz2.open(path, "rb")
    return open(path, "rb")
