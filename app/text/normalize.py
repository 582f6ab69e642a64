"""One text rule at every door, and one tag-list rule.

**Text rule.** Every id, class name, label and tag that enters (manifest, NUS-WIDE, COCO, class
lists, hierarchies, YFCC100M tags, `predict`, serving) is compared, hashed and counted in one form:

1. invisible characters are removed: every format character (Unicode category Cf: zero-width
   space, joiners, the bidi controls, soft hyphen, byte-order mark, ...) and the other default-
   ignorable code points (variation selectors, the Hangul fillers, the tag characters);
2. the rest is put in Unicode normal form C (NFC: `é` composed, whatever the keyboard sent);
3. white space around it is stripped.

So `café` typed composed or decomposed is one id, `p1` and `p1` + U+200B are one id (a repeat), and
a tag made only of zero-width or bidi characters is empty: a counted skip. An id or class name that
becomes empty is an error.

**Tag-list rule.** A string that holds several tags (a manifest's `tags` column, a JSONL string,
`predict --tags`, predict's batch input) is split on commas and vertical bars (`cat,pet|dog` is three
tags); white space around a tag is dropped, white space inside it is kept (`new york` is one tag);
empty parts are dropped. A JSON array of strings is taken as it is, one tag per element.

The graph half (`INVISIBLE_RE2`, `WHITESPACE_RE2`) lets a SavedModel remove the same characters
with `tf.strings.regex_replace`; TensorFlow has no NFC, so `predict` and the Python serving path
apply `normalize_text` before the graph (see docs/your-own-photos.md).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

from app.errors import InputError

# Unicode category Cf and the Default_Ignorable_Code_Point property (Unicode 15), as inclusive ranges:
# written out so that Python and the graph's RE2 remove exactly the same characters.
INVISIBLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F),
    (0x0890, 0x0891), (0x08E2, 0x08E2), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F),
    (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)
# What `str.strip()` strips (`str.isspace`), for the graph (RE2's `\s` is ASCII only).
WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007" \
             "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
TAG_SEPARATORS = ",|"


def _python_class(ranges) -> str:
    return "[" + "".join(re.escape(chr(lo)) + (f"-{re.escape(chr(hi))}" if hi > lo else "") for lo, hi in ranges) + "]"


def _re2_class(ranges) -> str:
    return "[" + "".join(f"\\x{{{lo:X}}}" + (f"-\\x{{{hi:X}}}" if hi > lo else "") for lo, hi in ranges) + "]"


_INVISIBLE = re.compile(_python_class(INVISIBLE_RANGES))
_SPLIT = re.compile(f"[{re.escape(TAG_SEPARATORS)}]")
INVISIBLE_RE2 = _re2_class(INVISIBLE_RANGES)
_SPACE_RE2 = _re2_class([(ord(c), ord(c)) for c in WHITESPACE])
WHITESPACE_RE2 = f"^{_SPACE_RE2}+|{_SPACE_RE2}+$"  # around a value, for tf.strings.regex_replace


def normalize_text(text: str) -> str:
    """`text` by the text rule: invisible characters removed, NFC, surrounding white space stripped."""
    if text.isascii():
        return text.strip()
    return unicodedata.normalize("NFC", _INVISIBLE.sub("", text)).strip()


def unicode_problem(what: str, text: str) -> str | None:
    """Says where `text` cannot be written as UTF-8, or None if it can.

    A byte that was not UTF-8 in the file (read with surrogateescape) is named as the byte; a lone
    surrogate from a JSON escape such as `"\\ud800"` as the code point.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(text[err.start])
        if 0xDC80 <= code <= 0xDCFF:
            return f"{what} is not UTF-8: byte 0x{code - 0xDC00:02x} at character {err.start + 1}"
        return f"{what} is not valid Unicode: lone surrogate U+{code:04X} at character {err.start + 1}"
    return None


def normalize_name(value: str, what: str, where: str) -> str:
    """An id or class name by the text rule.

    Raises:
        InputError: `where: empty what`, saying so when only invisible characters were there.
    """
    name = normalize_text(value)
    if not name:
        only = f" (only invisible characters: {value!r})" if value.strip() else ""
        raise InputError(f"{where}: empty {what}{only}")
    return name


def normalize_tags(tags: Iterable[str]) -> tuple[list, list]:
    """`(tags by the text rule, the tags that became empty)`; tags empty as given are dropped unsaid."""
    kept, emptied = [], []
    for tag in tags:
        value = normalize_text(tag)
        if value:
            kept.append(value)
        elif tag.strip():
            emptied.append(tag)
    return kept, emptied


def split_tag_list(text: str) -> list:
    """The tags of a tag-list string (the module's tag-list rule): split on `,` and `|`, each part
    stripped, empty parts dropped. The parts are not normalised (`normalize_tags` does that)."""
    return [part.strip() for part in _SPLIT.split(text) if part.strip()]
