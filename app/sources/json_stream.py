"""Streaming the top-level arrays of a large JSON object file (COCO's annotation files), one
element at a time, with the standard library's decoder: memory holds one element and a read block,
not the document (json.loads of COCO's 450 MB instances file takes several GB).

Every error names the file and the true line: a byte that is not UTF-8, JSON that does not parse, an
element nested too deeply for the decoder (a RecursionError otherwise).
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Iterator

from app.errors import InputError

BLOCK = 1 << 20
_WHITESPACE = " \t\r\n"
_DELIMITERS = _WHITESPACE + ",]}:"


class _Cursor:
    """A decoding position in a file read block by block."""

    def __init__(self, handle, path: Path, block: int):
        self.handle, self.path, self.block = handle, path, block
        self.buffer, self.pos, self.eof = "", 0, False
        self._counted, self._line = 0, 1  # the line at buffer position `_counted`
        self.decoder = json.JSONDecoder()
        self.utf8 = codecs.getincrementaldecoder("utf-8-sig")()

    def line(self) -> int:
        """The line of the current position (counted incrementally: no pass over the buffer per call)."""
        self._line += self.buffer.count("\n", self._counted, self.pos)
        self._counted = self.pos
        return self._line

    def _refill(self) -> bool:
        if self.eof:
            return False
        self.line()
        raw = self.handle.read(self.block)
        try:
            text = self.utf8.decode(raw, final=not raw)
        except UnicodeDecodeError as err:
            line = self.line() + self.buffer.count("\n", self.pos) + err.object.count(b"\n", 0, err.start)
            raise InputError(f"{self.path}:{line}: not UTF-8 (byte 0x{err.object[err.start]:02x})") from None
        self.buffer, self.pos, self.eof, self._counted = self.buffer[self.pos:] + text, 0, not raw, 0
        return bool(raw)

    def error(self, what: str) -> InputError:
        return InputError(f"{self.path}:{self.line()}: not valid JSON: {what}")

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end)."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._refill():
                return ""

    def expect(self, chars: str) -> str:
        char = self.peek()
        if not char or char not in chars:
            raise self.error(f"expected one of {chars!r}, found {char or 'the end'!r}")
        self.pos += 1
        return char

    def value(self):
        """Decodes the next whole value."""
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
                # A value ends at a delimiter: a number cut by the block's end ("12." of "12.5") goes on.
                if self.eof or (end < len(self.buffer) and self.buffer[end] in _DELIMITERS):
                    self.pos = end
                    return value
            except json.JSONDecodeError as err:
                if self.eof:
                    raise self.error(err.msg) from None
            except RecursionError:
                raise self.error("a value nested too deeply to read") from None
            if not self._refill():
                self.eof = True


def typed(value) -> str:
    """`list ["A", "cat"]`: a JSON value's type and its start, for messages (`null` for None)."""
    if value is None:
        return "null"
    try:
        shown = json.dumps(value, ensure_ascii=False)
    except RecursionError:
        shown = "(nested too deeply to show)"
    return f"{type(value).__name__} {shown if len(shown) <= 60 else shown[:57] + '...'}"


def check_object(value, where: str, what: str, fields: dict) -> dict:
    """`value`, if it is a JSON object whose `fields` have their types.

    Args:
        value: the decoded JSON value.
        where: `file:line` for messages.
        what: what the value is (`image 4`).
        fields: `{key: (accepted types, required)}`; a bool is never an int here.

    Raises:
        InputError: `where: what is not a JSON object` or `where: what needs "key" (int or str), got ...`.
    """
    if not isinstance(value, dict):
        raise InputError(f"{where}: {what} is not a JSON object, got {typed(value)}")
    for key, (kinds, required) in fields.items():
        if key not in value and not required:
            continue
        given = value.get(key)
        if key not in value or isinstance(given, bool) or not isinstance(given, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise InputError(f"{where}: {what} needs \"{key}\" ({names}), got "
                             f"{typed(given) if key in value else 'none'}")
    return value


def iter_array(path: str | Path, key: str, block: int = BLOCK, lines: bool = False) -> Iterator:
    """The elements of the top-level array `key` of a JSON object file, in order (none if absent).

    Args:
        path: the file.
        key: the array's key.
        block: bytes read at a time.
        lines: yield `(line where the element starts, element)` instead.

    Raises:
        InputError: `file:line: not valid JSON: ...`, `not UTF-8`, or `key` not holding an array.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        cursor = _Cursor(handle, path, block)
        cursor.expect("{")
        if cursor.peek() == "}":
            return
        while True:
            name = cursor.value()
            cursor.expect(":")
            if cursor.peek() == "[":
                cursor.expect("[")
                if cursor.peek() == "]":
                    cursor.expect("]")
                else:
                    while True:
                        line = cursor.peek() and cursor.line() if lines else 0
                        element = cursor.value()
                        if name == key:
                            yield (line, element) if lines else element
                        if cursor.expect(",]") == "]":
                            break
            elif name == key:
                raise cursor.error(f"{key!r} is not an array")
            else:
                cursor.value()
            if cursor.expect(",}") == "}":
                return
