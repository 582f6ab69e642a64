"""User-tag decoding, cleaning, the tag limit and the train-split vocabulary."""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import unquote_to_bytes

from app.fileio import FIELD_BREAKS, atomic_write_text
from app.text.normalize import normalize_text

PAD_ID = 0
OOV_ID = 1
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DIGITS_ONLY = re.compile(r"[0-9]+\Z")


class TagDecodeError(ValueError):
    """A text field that is not valid URL-encoded UTF-8; `reason` is `bad_escape` or `non_utf8`."""

    def __init__(self, reason: str, value: str):
        super().__init__(f"{reason}: {value!r}")
        self.reason = reason
        self.value = value


def decode_field(raw: str) -> str:
    """Decodes one URL-encoded text field exactly (`+` is a space, `%XX` a UTF-8 byte).

    Raises:
        TagDecodeError: on a `%` not followed by two hex digits, or escapes that are not UTF-8.
    """
    if "%" not in raw:
        return raw.replace("+", " ")
    if _BAD_ESCAPE.search(raw):
        raise TagDecodeError("bad_escape", raw)
    try:
        return unquote_to_bytes(raw.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        raise TagDecodeError("non_utf8", raw) from None


def decode_tags(raw: str) -> list[str]:
    """Splits a YFCC100M user-tag field on commas, then decodes each tag (so `%2C` stays inside)."""
    return [decode_field(tag) for tag in raw.split(",") if tag]


def clean_tags(tags: Iterable[str], lowercase: bool = False) -> list[str]:
    """Cleans decoded tags, keeping the user's order.

    Puts each tag in the text rule's form (`app.text.normalize`: invisible characters removed,
    NFC, surrounding spaces stripped), drops tags made only of digits ("2009") and empty tags, and
    keeps the first occurrence of a repeated tag. YFCC100M tags are already lower-case, so case
    folding is off by default; `lowercase=True` folds the extra Flickr-API tags the same way.
    """
    out, seen = [], set()
    for tag in tags:
        tag = normalize_text(tag)
        if lowercase:
            tag = tag.lower()
        if not tag or _DIGITS_ONLY.match(tag) or tag in seen:
            continue
        seen.add(tag)
        out.append(tag)
    return out


FORMS_HEADER = "# forms (language<TAB>tag<TAB>vocabulary tag, empty for out of vocabulary)"


@dataclass
class Vocabulary:
    """Tag vocabulary: id 0 is padding, id 1 out-of-vocabulary, then tags by count.

    It knows everything needed to turn a photo's tags into model inputs (see
    `app.model.preprocess.TagLookup`): the tags, the tag limit, how tags were cleaned, and how they
    are normalised (`app.text.stemming`).

    Args:
        tokens: tags in id order starting at id 2 (normalised forms, with a normalisation).
        counts: their train-split counts (after the tag limit).
        limit: the tag limit it was built with (the model's input length).
        threshold: the minimum count it was built with.
        lowercase: tags were case-folded when cleaned.
        normalization: `none` or `snowball`.
        forms: `{(language group, tag): vocabulary tag or ""}` (`""`: out of vocabulary), where the
            normalised tag's id differs from the tag's own (see `app.text.stemming`).
    """

    tokens: list
    counts: list
    limit: int
    threshold: int
    lowercase: bool = False
    normalization: str = "none"
    forms: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Number of ids, padding and OOV included."""
        return len(self.tokens) + 2

    def save(self, path: str | Path) -> None:
        """Writes `tag<TAB>count` lines (ids follow line order, from 2) under a header, atomically."""
        atomic_write_text(path, self.to_text())

    def to_text(self) -> str:
        """The file `save` writes: a header, `tag<TAB>count` lines, then the forms section."""
        lines = [f"# limit={self.limit} threshold={self.threshold} lowercase={int(self.lowercase)} "
                 f"normalization={self.normalization} pad_id={PAD_ID} oov_id={OOV_ID}\n"]
        lines += [f"{_escape(token)}\t{count}\n" for token, count in zip(self.tokens, self.counts)]
        if self.forms:
            lines.append(FORMS_HEADER + "\n")
            lines += [f"{group}\t{_escape(tag)}\t{_escape(form)}\n" for (group, tag), form in sorted(self.forms.items())]
        return "".join(lines)

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        with open(path, encoding="utf-8", newline="") as handle:
            header = handle.readline()
            try:
                meta = dict(kv.split("=") for kv in header[1:].split())
                limit, threshold = int(meta["limit"]), int(meta["threshold"])
            except (ValueError, KeyError):
                raise ValueError(f"{path}:1: expected '# limit=N threshold=T ...', got {header!r}") from None
            tokens, counts, forms = [], [], None
            for line_no, line in enumerate(handle, start=2):
                line = line.rstrip("\n")
                if forms is not None:
                    forms.update(_read_form(line, f"{path}:{line_no}"))
                    continue
                if line == FORMS_HEADER:
                    forms = {}
                    continue
                token, sep, count = line.rpartition("\t")
                if not sep or not count.isdigit():
                    raise ValueError(f"{path}:{line_no}: expected 'tag<TAB>count', got {line!r}")
                tokens.append(_unescape(token))
                counts.append(int(count))
        return cls(tokens, counts, limit, threshold, meta.get("lowercase", "0") == "1",
                   meta.get("normalization", "none"), forms or {})


def _read_form(line: str, where: str) -> dict:
    """One line of the forms section as `{(language group, tag): vocabulary tag}`."""
    parts = line.split("\t")
    if len(parts) != 3:
        raise ValueError(f"{where}: expected 'language<TAB>tag<TAB>vocabulary tag', got {line!r}")
    return {(parts[0], _unescape(parts[1])): _unescape(parts[2])}


_SHORT_ESCAPES = {"\t": "t", "\n": "n", "\r": "r"}
_ESCAPED = re.compile("[\\\\" + re.escape(FIELD_BREAKS) + "]")
_ESCAPE = re.compile(r"\\(u[0-9a-f]{4}|.)")


def _escape(token: str) -> str:
    """A tag as one `vocab.tsv` field: a backslash, tab, line feed and carriage return become `\\\\`,
    `\\t`, `\\n`, `\\r`, every other line break of `FIELD_BREAKS` `\\uXXXX` (so no reader splits it)."""
    return _ESCAPED.sub(lambda m: "\\" + _SHORT_ESCAPES.get(m[0], m[0] if m[0] == "\\" else f"u{ord(m[0]):04x}"),
                        token)


def _unescape(token: str) -> str:
    """The inverse of `_escape` (files written before `\\r` and `\\uXXXX` read the same)."""
    short = {v: k for k, v in _SHORT_ESCAPES.items()}
    return _ESCAPE.sub(lambda m: chr(int(m[1][1:], 16)) if len(m[1]) == 5 else short.get(m[1], m[1]), token)


def count_tags(tag_lists: Iterable[Sequence[str]], limit: int) -> collections.Counter:
    """Counts tags over photos after cutting each photo's list to the first `limit` tags."""
    counter: collections.Counter = collections.Counter()
    for tags in tag_lists:
        counter.update(tags[:limit])
    return counter


def build_vocabulary(tag_lists: Iterable[Sequence[str]], limit: int, threshold: int,
                     lowercase: bool = False) -> Vocabulary:
    """Builds the vocabulary: tags seen at least `threshold` times among photos' first `limit` tags.

    Pass the train split's cleaned tags only. Example from the study: `[dog,cat,pet,cute,woof]` and
    `[pet,dog]` with limit 2 and threshold 2 give `{dog}`.

    Args:
        tag_lists: each photo's cleaned tags (streamed; only the counts are kept).
        limit: the tag limit.
        threshold: the minimum count.
        lowercase: whether the tags were cleaned with case folding (recorded for serving).
    """
    check_limits(limit, threshold)
    return vocabulary_from_counts(count_tags(tag_lists, limit), limit, threshold, lowercase)


def check_limits(limit: int, threshold: int) -> None:
    """Raises a ValueError naming them unless the tag limit and threshold are at least 1."""
    if limit < 1 or threshold < 1:
        raise ValueError(f"limit and threshold must be >= 1. Received: limit={limit}, threshold={threshold}")


NEARLY_EMPTY = 10  # a vocabulary of fewer tags than this, when the train split has more, is warned of


def warn_on_vocabulary(counts: collections.Counter, vocab: Vocabulary, bad) -> None:
    """Warns (in `bad`, a `BadRows`: the summary, `stats.json` and the log) when the vocabulary keeps
    almost none of the train split's tags, saying what a lower `--tag-threshold` would keep.

    Args:
        counts: the train split's tag counts (after the tag limit).
        vocab: the vocabulary built from them.
        bad: receives the warning.
    """
    kept, distinct = len(vocab.tokens), len(counts)
    if kept >= NEARLY_EMPTY or kept >= distinct or vocab.threshold <= 1:
        return
    lower = ", ".join(f"{t} keeps {sum(c >= t for c in counts.values())}" for t in (1, 2, 5) if t < vocab.threshold)
    message = (f"vocabulary: only {kept} of the train split's {distinct} distinct tags are seen at least "
               f"{vocab.threshold} times (--tag-threshold {vocab.threshold}): the model gets almost no tags; on a "
               f"small collection pass a lower --tag-threshold ({lower})")
    bad.warn(message)


def vocabulary_from_counts(counter: collections.Counter, limit: int, threshold: int, lowercase: bool = False,
                           normalization: str = "none") -> Vocabulary:
    """The tags counted at least `threshold` times, most frequent first (ties by tag)."""
    kept = sorted(((t, c) for t, c in counter.items() if c >= threshold), key=lambda tc: (-tc[1], tc[0]))
    return Vocabulary([t for t, _ in kept], [c for _, c in kept], limit, threshold, lowercase, normalization)
