"""The source files of a prepare run (`Sources`); `app.sources.textfiles` opens and reads them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from app.sources.oid import OidPaths


@dataclass
class Sources:
    """The input files of one prepare run."""

    oid: OidPaths
    yfcc: Path
    autotags: Optional[Path] = None
    extra_tags: Optional[Path] = None
    images: Optional[Path] = None
