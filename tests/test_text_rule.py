"""The text rule and the tag-list rule (app/text/normalize.py), at every door that reads ids, classes and tags."""

from __future__ import annotations

import unicodedata

import pytest

from app.errors import InputError
from app.text.normalize import (INVISIBLE_RANGES, normalize_name, normalize_tags, normalize_text,
                                split_tag_list)
from app.text.tags import clean_tags

COMPOSED, DECOMPOSED = "caf\u00e9", "cafe\u0301"


def test_one_form_for_composed_decomposed_and_invisible_characters():
    assert normalize_text(DECOMPOSED) == normalize_text(COMPOSED) == COMPOSED
    assert normalize_text("p1\u200b") == normalize_text("\u202ep1\u2069") == normalize_text(" p1\u00ad ") == "p1"
    # A zero-width space between a letter and its accent no longer blocks composition.
    assert normalize_text("e\u200b\u0301") == "\u00e9"
    assert normalize_text("new  york") == "new  york"  # white space inside is kept


def test_every_format_character_is_invisible_to_the_rule():
    listed = {c for lo, hi in INVISIBLE_RANGES for c in range(lo, hi + 1)}
    format_chars = {c for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"}
    assert format_chars <= listed
    assert all(normalize_text(f"a{chr(c)}b") == "ab" for c in sorted(listed)[::7])


def test_an_id_made_only_of_invisible_characters_is_an_error_and_a_tag_a_counted_skip():
    with pytest.raises(InputError, match=r"photos.csv:3: empty id \(only invisible characters"):
        normalize_name("\u200b\u200f", "id", "photos.csv:3")
    assert normalize_tags(["cat", "\u200b\u202e", "  ", DECOMPOSED]) == (["cat", COMPOSED], ["\u200b\u202e"])
    assert clean_tags(["cat", "\u200b", DECOMPOSED, COMPOSED]) == ["cat", COMPOSED]


def test_one_tag_list_rule():
    assert split_tag_list("cat,pet") == split_tag_list("cat|pet") == split_tag_list(" cat , pet ") == ["cat", "pet"]
    assert split_tag_list("cat,pet|dog") == ["cat", "pet", "dog"]
    assert split_tag_list("new york,,  ") == ["new york"]
