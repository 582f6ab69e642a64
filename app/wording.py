"""Words for counts in messages and reports: `1 class`, `2 classes`, never `1 classes`."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """`count` and `noun`, in the plural unless `count` is 1: "1 class", "2 classes", "3 photos"."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}{'es' if noun.endswith(('s', 'x', 'ch', 'sh')) else 's'}"
