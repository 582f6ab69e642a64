"""Opening source files (plain, gzip or bz2, chosen by magic bytes) and reading them in blocks of lines.

Every source file (YFCC100M, autotags, extra tags, Open Images CSVs) is read through here, so a
truncated or corrupt compressed file stops with one `InputError` naming the file.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional

from app.errors import InputError


class _Decompressed:
    """A gzip/bz2 reader whose decompression errors name the file."""

    def __init__(self, handle: BinaryIO, path: Path, kind: str):
        self._handle, self._path, self._kind = handle, path, kind

    def read(self, size: int = -1) -> bytes:
        return self._guarded(self._handle.read, size)

    def readinto(self, target) -> int:
        return self._guarded(self._handle.readinto, target)

    def _guarded(self, method, argument):
        try:
            return method(argument)
        except (EOFError, OSError, zlib.error) as err:
            raise InputError(f"{self._path}: truncated or corrupt {self._kind} file: {err}") from None

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "_Decompressed":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_text(path: str | Path) -> BinaryIO:
    """Opens a source file for binary reading, decompressing gzip or bz2 transparently.

    Reads raise `InputError` naming the file when the compressed data is truncated or corrupt.
    """
    path = Path(path)
    with open(path, "rb") as probe:
        magic = probe.read(3)
    if magic[:2] == b"\x1f\x8b":
        return _Decompressed(gzip.open(path, "rb"), path, "gzip")
    if magic == b"BZh":
        return _Decompressed(bz2.open(path, "rb"), path, "bz2")
    return open(path, "rb")


def iter_line_blocks(path: str | Path, block_bytes: int,
                     progress: Optional[Callable[[int], None]] = None) -> Iterator[memoryview]:
    """Yields blocks of complete lines, each starting with `\\n` and without the final newline.

    So a block's line count is its number of `\\n`. A last line without a newline is kept. Blocks
    are views of one reused buffer (no fresh 16 MB allocation per block): a block is valid only
    until the next one is requested; copy it (`bytes(block)`) to keep it.

    Args:
        path: plain, gzip or bz2 file.
        block_bytes: how much to read at a time (a block is about this size).
        progress: called with the number of (decompressed) bytes read, block by block.
    """
    buffer = bytearray(block_bytes + 1)
    buffer[0] = 10
    filled = 1
    with open_text(path) as handle:
        while True:
            if filled == len(buffer):  # one line longer than the buffer: a larger one, not a resize
                buffer = buffer + bytearray(len(buffer))
            got = handle.readinto(memoryview(buffer)[filled:])
            if progress is not None and got:
                progress(got)
            if not got:
                if filled > 1:
                    yield memoryview(buffer)[:filled]
                return
            filled += got
            cut = buffer.rfind(b"\n", 1, filled)
            if cut < 1:
                continue
            yield memoryview(buffer)[:cut]
            rest = buffer[cut:filled]
            buffer[: len(rest)] = rest
            filled = len(rest)


CR_HINT = "convert the file's line ends to LF (mac2unix, or tr '\\r' '\\n' where no line ends in CRLF)"


class NumberedLines:
    """A UTF-8 text file read one line at a time (its CRLF or LF line break stripped), knowing its line number.

    Args:
        path: the file.
        stack: the exit stack that closes it.
        layout: the collection whose layout names the file (for the message when it is missing).
    """

    def __init__(self, path: Path, stack: contextlib.ExitStack, layout: str):
        if not path.is_file():
            raise InputError(f"{path}: missing ({layout} layout: see docs/your-own-photos.md)")
        self.path, self.line_no = path, 0
        self.handle = stack.enter_context(open(path, "rb"))

    def next(self) -> Optional[str]:
        """The next line, or None at the end."""
        raw = self.handle.readline()
        if not raw:
            return None
        self.line_no += 1
        try:
            line = raw.decode("utf-8-sig" if self.line_no == 1 else "utf-8").strip("\r\n")  # a BOM is no content
        except UnicodeDecodeError as err:
            raise InputError(f"{self.path}:{self.line_no}: not UTF-8 ({err.reason})") from None
        if "\r" in line:  # old Mac line ends: the whole file would read as one line
            raise InputError(f"{self.path}:{self.line_no}: a line break that is a lone CR (\\r); this layout's "
                             f"lines end in LF or CRLF: {CR_HINT}")
        return line

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line_no}"
