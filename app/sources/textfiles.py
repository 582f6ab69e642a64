"""Opening source files (plain, gzip or bz2, chosen by magic bytes) and reading them in blocks of lines.

Every source file (YFCC100M, autotags, extra tags, Open Images CSVs) is read through here, so a
truncated or corrupt compressed file stops with one `InputError` naming the file.

A plain file can be read in byte spans (`line_spans`), one task each: a line belongs to the span
where it starts, so the spans' lines are the file's lines, each once, in order.
"""

from __future__ import annotations

import bz2
import gzip
import os
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


def is_compressed(path: str | Path) -> bool:
    """Whether a source file is gzip or bz2 (it cannot be entered in the middle)."""
    with open(path, "rb") as probe:
        magic = probe.read(3)
    return magic[:2] == b"\x1f\x8b" or magic == b"BZh"


def line_spans(path: str | Path, parts: int) -> list[tuple[int, int]]:
    """`parts` byte spans `(start, end)` of equal size covering a plain file; a compressed file is one
    span, the whole file."""
    size = os.path.getsize(path)
    if is_compressed(path) or size == 0:
        return [(0, size)]
    parts = max(1, min(parts, size))
    return [(size * i // parts, size * (i + 1) // parts) for i in range(parts)]


def _open_span(path: Path, start: int) -> tuple[BinaryIO, int]:
    """A plain file opened at the first line that starts at or after `start`, and that offset."""
    handle = open(path, "rb")
    if start > 0:
        handle.seek(start - 1)
        if handle.read(1) != b"\n":
            handle.readline()  # the rest of a line that started before the span: the span before has it
    return handle, handle.tell()


def iter_line_blocks(path: str | Path, block_bytes: int, progress: Optional[Callable[[int], None]] = None,
                     span: Optional[tuple[int, int]] = None) -> Iterator[memoryview]:
    """Yields blocks of complete lines, each starting with `\\n` and without the final newline.

    So a block's line count is its number of `\\n`. A last line without a newline is kept. Blocks
    are views of one reused buffer (no fresh 16 MB allocation per block): a block is valid only
    until the next one is requested; copy it (`bytes(block)`) to keep it.

    Args:
        path: plain, gzip or bz2 file.
        block_bytes: how much to read at a time (a block is about this size).
        progress: called with the number of (decompressed) bytes read, block by block.
        span: `(start, end)` from `line_spans`: only the lines that start in it (a compressed
            file's only span is the whole file).
    """
    buffer = bytearray(block_bytes + 1)
    buffer[0] = 10
    filled = 1
    whole = span is None or (span[0] == 0 and span[1] >= os.path.getsize(path))
    handle, base = (open_text(path), -1) if whole else _open_span(Path(path), span[0])
    base -= 0 if whole else 1  # the file offset of buffer[0], the newline before the first line
    with handle:
        while True:
            if filled == len(buffer):  # one line longer than the buffer: a larger one, not a resize
                buffer = buffer + bytearray(len(buffer))
            got = handle.readinto(memoryview(buffer)[filled:])
            if progress is not None and got:
                progress(got)
            filled += got
            if not whole:  # the newline before the first line that starts at or after the span's end
                stop = buffer.find(b"\n", max(span[1] - base - 1, 0), filled)
                if stop >= 0:
                    if stop > 0:
                        yield memoryview(buffer)[:stop]
                    return
            if not got:
                if filled > 1:
                    yield memoryview(buffer)[:filled]
                return
            cut = buffer.rfind(b"\n", 1, filled)
            if cut < 1:
                continue
            yield memoryview(buffer)[:cut]
            rest = buffer[cut:filled]
            buffer[: len(rest)] = rest
            filled = len(rest)
            base += cut


def count_lines(path: str | Path, span: Optional[tuple[int, int]] = None) -> int:
    """Lines of a file (plain, gzip or bz2), or of a span of it."""
    return sum(block.obj.count(b"\n", 0, block.nbytes) for block in iter_line_blocks(path, 8 << 20, span=span))
