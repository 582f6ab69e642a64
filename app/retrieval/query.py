"""Checks a text query before it is encoded: empty and oversized queries are refused, and a query in a
script the text encoder was not trained on is scored with a warning."""

from __future__ import annotations

import unicodedata

from app.errors import InputError

MAX_QUERY_CHARS = 2000
# The scripts of the Universal Sentence Encoder Multilingual's 16 languages (ar, de, en, es, fr, it,
# ja, ko, nl, pl, pt, ru, th, tr, zh-cn, zh-tw), by the first word of each character's Unicode name.
KNOWN_SCRIPTS = frozenset({"LATIN", "ARABIC", "CYRILLIC", "CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI",
                           "HALFWIDTH", "FULLWIDTH", "IDEOGRAPHIC"})


def check_query(text: str, max_chars: int = MAX_QUERY_CHARS) -> list[str]:
    """Refuses an unusable query; returns warnings about a usable one.

    Args:
        text: the query as the user typed it.
        max_chars: the longest query taken.

    Returns:
        Warnings (a script the encoder does not know: the query is still scored, less reliably).

    Raises:
        InputError: `query: empty` or `query: N characters, over the limit of M`.
    """
    if not text or not text.strip() or not any(ch.isalnum() for ch in text):
        raise InputError(f"query: empty (received {text[:40]!r}): give some words to search for")
    if len(text) > max_chars:
        raise InputError(f"query: {len(text):,} characters, over the limit of {max_chars:,}: give a shorter query")
    unknown = sorted(unknown_scripts(text))
    if unknown:
        return [f"query {text[:40]!r} is written in a script the text encoder was not trained on "
                f"({', '.join(unknown).lower()}): scored, but the results may be unrelated"]
    return []


def unknown_scripts(text: str) -> set[str]:
    """The scripts of `text`'s letters outside `KNOWN_SCRIPTS` (by Unicode character name)."""
    scripts = set()
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "UNKNOWN")
            script = name.split()[0]
            if script not in KNOWN_SCRIPTS:
                scripts.add(script)
    return scripts
