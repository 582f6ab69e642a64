"""The source files of a prepare run, and opening them: plain, gzip or bz2, chosen by magic bytes."""

from __future__ import annotations

import bz2
import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Optional

if TYPE_CHECKING:  # oid.py opens its files through this module
    from app.data.oid import OidPaths


@dataclass
class Sources:
    """The input files of one prepare run."""

    oid: OidPaths
    yfcc: Path
    autotags: Optional[Path] = None
    extra_tags: Optional[Path] = None
    images: Optional[Path] = None


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
