"""Reading CSV files with a header row in large byte blocks, with exact line numbers.

Open Images label files have up to ~80M rows, so a file is read in blocks of whole lines (16 MB).
Lines without a quote or a carriage return are parsed by pyarrow in one call per block; lines with
one are parsed one at a time by Python's `csv` module (strict). If pyarrow refuses the block
(a wrong field count, bytes that are not UTF-8, a blank line), every line of that block is parsed
on its own. Either way one bad line never affects another: it comes back as a `Reject` with its
line number and reason, and every other row is kept.

A UTF-8 byte-order mark before the header is dropped and CRLF line ends are read as LF.

**Assumption: one record is one physical line.** A quoted field holding a line break (legal CSV,
never seen in Open Images or YFCC100M files) makes each of its lines a bad row (`bad_quoting`)
instead of letting one unclosed quote swallow the rest of the file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from itertools import chain, compress
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from app.sources.textfiles import iter_line_blocks
from app.errors import InputError

BLOCK_BYTES = 1 << 20  # text per block: its Python and Arrow objects (~15x) bound the reader's memory
BOM = b"\xef\xbb\xbf"
SMALL_GROUP = 2048  # lines parsed one by one when pyarrow refuses a group this small


class BadLine(ValueError):
    """A line that cannot be parsed on its own; `reason` names the kind."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Reject:
    """A line that could not be parsed: its number (1 is the header), reason, message and bytes."""

    line: int
    reason: str
    message: str
    raw: bytes


@dataclass
class CsvChunk:
    """The rows of one block: the requested columns as pyarrow string arrays, in file order."""

    columns: dict
    lines: np.ndarray
    rejects: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lines)

    def numbers(self, name: str) -> np.ndarray:
        """A `numbers` column as a float64 numpy array."""
        return arrow_to_numpy(self.columns[name], np.float64)


def arrow_to_numpy(array: pa.Array, dtype) -> np.ndarray:
    """A numeric pyarrow array without nulls as a numpy view; unlike `to_numpy`, this does not
    import pandas (half a second per process)."""
    if array.null_count:
        raise ValueError(f"expected no nulls, got {array.null_count}")
    return np.frombuffer(array.buffers()[1], dtype=dtype)[array.offset: array.offset + len(array)]


def parse_line(raw: bytes, width: int | None) -> list[str]:
    """Parses one physical line (no line break) as one CSV record of `width` fields (any if None).

    Raises:
        BadLine: `non_utf8`, `blank_line`, `bad_quoting`, `unparseable` or `field_count`.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadLine("non_utf8", f"byte 0x{raw[err.start]:02x} at column {err.start + 1} is not UTF-8") from None
    if not text.strip():
        raise BadLine("blank_line", "blank line")
    try:
        fields = next(csv.reader((text,), strict=True))
    except csv.Error as err:
        raise BadLine("bad_quoting" if '"' in text else "unparseable", f"cannot parse: {err}") from None
    if width is not None and len(fields) != width:
        raise BadLine("field_count", f"expected {width} fields, got {len(fields)}")
    return fields


@dataclass(frozen=True)
class _Layout:
    """Which fields of a line to return, by header position, and which of them are numbers."""

    width: int
    index: tuple
    names: tuple
    numbers: frozenset


class CsvReader:
    """Streams a CSV file with a header row as `CsvChunk`s of the requested columns.

    Columns are pyarrow string arrays, or float64 arrays for `numbers`; a value there that is
    not a number makes its line a `Reject` with reason `bad_<column>` (e.g. `bad_confidence`).
    After iteration, `header` is None for a 0-byte file and `data_lines` counts the lines after
    the header (rejected ones included).

    Args:
        path: plain, gzip or bz2 file.
        columns: the columns to return; each must be in the header.
        optional: more columns to return when the header has them.
        numbers: the returned columns to parse as float64.
        exact_header: the header must be exactly `columns`.
        block_bytes: bytes read per block.

    Raises:
        InputError: (when iterated) for a header that is not UTF-8, not CSV or lacks a column, or
            with `exact_header`, for a 0-byte file or any other header.
    """

    def __init__(self, path: str | Path, columns: Sequence[str], optional: Sequence[str] = (),
                 numbers: Sequence[str] = (), exact_header: bool = False, block_bytes: int = BLOCK_BYTES):
        if not columns:
            raise ValueError("CsvReader needs at least one column")
        self.path = Path(path)
        self.columns, self.optional, self.numbers = tuple(columns), tuple(optional), frozenset(numbers)
        self.exact_header = exact_header
        self.block_bytes = block_bytes
        self.header: list[str] | None = None
        self.data_lines = 0

    def __iter__(self) -> Iterator[CsvChunk]:
        blocks = iter_line_blocks(self.path, self.block_bytes)
        first = next(blocks, None)
        if first is None:
            if self.exact_header:
                raise InputError(f"{self.path}: empty file (0 bytes), expected the header {','.join(self.columns)}")
            return
        first = _normalise(b"\n" + bytes(first[1:]).removeprefix(BOM))
        header, sep, rest = first[1:].partition(b"\n")
        layout = self._layout(header)
        line_no = 2
        for block in chain([b"\n" + rest] if sep else [], blocks):
            chunk = _parse_block(block, line_no, layout)
            line_no = chunk.next_line
            self.data_lines = line_no - 2
            yield chunk.chunk

    def _layout(self, raw: bytes) -> _Layout:
        try:
            header = parse_line(raw, None)
        except BadLine as err:
            raise InputError(f"{self.path}:1: unreadable header ({err}): {raw[:200]!r}") from None
        if self.exact_header and tuple(header) != self.columns:
            raise InputError(f"{self.path}:1: expected the header {','.join(self.columns)}, got {','.join(header)!r}")
        missing = [c for c in self.columns if c not in header]
        if missing:
            raise InputError(f"{self.path}:1: missing columns {missing}; header is {header}")
        self.header = header
        names = self.columns + tuple(c for c in self.optional if c in header)
        return _Layout(len(header), tuple(header.index(c) for c in names), names, self.numbers & set(names))


@dataclass
class _Parsed:
    chunk: CsvChunk
    next_line: int


def _normalise(block: bytes) -> bytes:
    """CRLF -> LF (a block ends just before a `\\n`, so a final `\\r` belonged to a CRLF)."""
    if b"\r" not in block:
        return block
    block = block.replace(b"\r\n", b"\n")
    return block[:-1] if block.endswith(b"\r") else block


def _is_utf8(block) -> bool:
    if np.frombuffer(block, dtype=np.uint8).max(initial=0) < 128:
        return True
    try:
        str(block, "utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _contains(block, needle: bytes) -> bool:
    """`needle in block` for bytes or a memoryview from the start of a bytearray, without a copy."""
    if isinstance(block, memoryview):
        return block.obj.find(needle, 0, block.nbytes) >= 0
    return needle in block


def _parse_block(block, first_line: int, layout: _Layout) -> _Parsed:
    """Parses one block: in one pyarrow call when it has no quote or `\\r` and pyarrow accepts it."""
    # A last empty line would vanish in pyarrow's count: such a block takes the line-by-line way;
    # and pyarrow checks UTF-8 only in the columns it returns, so the whole block is checked here.
    if block[-1] != 10 and not _contains(block, b'"') and not _contains(block, b"\r") and _is_utf8(block):
        columns = _arrow_parse(block[1:], layout)
        if columns is not None:
            count = len(columns[0])
            lines = np.arange(first_line, first_line + count)
            return _Parsed(CsvChunk(dict(zip(layout.names, columns)), lines), first_line + count)
    data = _normalise(bytes(block))
    raw = data.split(b"\n")[1:]
    lines = np.arange(first_line, first_line + len(raw))
    return _Parsed(_parse_lines(data, raw, lines, layout), first_line + len(raw))


def _parse_lines(data: bytes, raw: list, lines: np.ndarray, layout: _Layout) -> CsvChunk:
    """Special lines (`_special_lines`) one by one, the others with pyarrow (in smaller groups if it fails)."""
    plain = ~_special_lines(data, len(raw))
    columns = _arrow_parse(b"\n".join(compress(raw, plain)), layout) if plain.any() else None
    if columns is not None and len(columns[0]) != plain.sum():  # a last blank line, which pyarrow drops
        columns = None
    if plain.any() and columns is None:
        if len(raw) <= SMALL_GROUP:
            return _python_parse(raw, lines, layout)
        parts = np.array_split(np.arange(len(raw)), 8)
        return _merge([_parse_lines(b"\n" + b"\n".join(raw[p[0]:p[-1] + 1]), raw[p[0]:p[-1] + 1], lines[p], layout)
                       for p in parts if len(p)])
    slow = _python_parse(list(compress(raw, ~plain)), lines[~plain], layout)
    if columns is None:
        return slow
    return _merge([CsvChunk(dict(zip(layout.names, columns)), lines[plain]), slow])


def _special_lines(data: bytes, count: int) -> np.ndarray:
    """Marks the lines (of a block starting with `\\n`) holding a quote, a carriage return or a
    byte outside ASCII (checked for UTF-8 line by line)."""
    array = np.frombuffer(data, dtype=np.uint8)
    starts = np.flatnonzero(array == 10)
    marks = np.flatnonzero((array == 34) | (array == 13) | (array >= 128))
    special = np.zeros(count, dtype=bool)
    special[np.searchsorted(starts, marks, side="right") - 1] = True
    return special


def _arrow_parse(data, layout: _Layout) -> list | None:
    """Parses lines without quotes in one call; None if pyarrow rejects any line."""
    names = [f"f{i}" for i in range(layout.width)]
    wanted = [names[i] for i in layout.index]
    types = {names[i]: pa.float64() if name in layout.numbers else pa.string()
             for i, name in zip(layout.index, layout.names)}
    try:
        table = pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(data)), memory_pool=pa.system_memory_pool(),
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(include_columns=wanted, column_types=types, null_values=[],
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except pa.ArrowInvalid:
        return None
    return [table.column(name).combine_chunks() for name in wanted]


def _python_parse(raw_lines: list, lines: np.ndarray, layout: _Layout) -> CsvChunk:
    """Parses each line on its own; bad lines become `Reject`s."""
    values: list[list] = [[] for _ in layout.index]
    kept, rejects = [], []
    for raw, line_no in zip(raw_lines, lines.tolist()):
        try:
            fields = parse_line(raw, layout.width)
            row = [_number(fields[i], name) if name in layout.numbers else fields[i]
                   for i, name in zip(layout.index, layout.names)]
        except BadLine as err:
            rejects.append(Reject(line_no, err.reason, str(err), raw))
            continue
        kept.append(line_no)
        for column, value in zip(values, row):
            column.append(value)
    columns = {name: pa.array(column, pa.float64() if name in layout.numbers else pa.string())
               for name, column in zip(layout.names, values)}
    return CsvChunk(columns, np.array(kept, dtype=np.int64), rejects)


def _number(text: str, column: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadLine(f"bad_{column.lower()}", f"{column.lower()} {text!r} is not a number") from None


def _merge(chunks: list) -> CsvChunk:
    """One chunk from several, rows in line order."""
    lines = np.concatenate([c.lines for c in chunks])
    order = np.argsort(lines, kind="stable")
    take = pa.array(order)
    columns = {name: pa.concat_arrays([c.columns[name] for c in chunks]).take(take) for name in chunks[0].columns}
    rejects = sorted((r for c in chunks for r in c.rejects), key=lambda r: r.line)
    return CsvChunk(columns, lines[order], rejects)
