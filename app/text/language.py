"""Tag-language detection with pycld2, guarded against its weakness on short text.

pycld2 is trained on sentences; a photo's tags are a handful of words. Measured here:
`"chien chat plage"` is undetected in the normal mode and French with `bestEffort`, but
`bestEffort` calls single words wildly (`"canon"` -> Volapük, `"hund"` -> English). So:

1. run cld2 on the tags joined by spaces; a reliable answer is kept;
2. otherwise, with at least `MIN_BEST_EFFORT_TAGS` tags and `MIN_BEST_EFFORT_LETTERS` letters,
   the best-effort answer is kept;
3. otherwise the language is `un` (undetected). Photos without tags are `un` too.
"""

from __future__ import annotations

from typing import Sequence

import pycld2

MIN_BEST_EFFORT_TAGS = 3
MIN_BEST_EFFORT_LETTERS = 12
UNDETECTED = "un"


def detect_language(tags: Sequence[str]) -> str:
    """Returns the ISO 639-1 code of the tags' language (`en`, `de`, ...) or `un`."""
    text = " ".join(tags)
    if not text:
        return UNDETECTED
    try:
        reliable, _, details = pycld2.detect(text)
        if reliable:
            return details[0][1]
        letters = sum(ch.isalpha() for ch in text)
        if len(tags) >= MIN_BEST_EFFORT_TAGS and letters >= MIN_BEST_EFFORT_LETTERS:
            reliable, _, details = pycld2.detect(text, bestEffort=True)
            if reliable and details[0][1] != UNDETECTED:
                return details[0][1]
    except pycld2.error:
        pass
    return UNDETECTED
