"""Tag normalisation per photo language with NLTK's Snowball stemmers (code: no corpus download).

Normalisation `snowball` gives each tag `t` of a photo (cleaned, cut to the tag limit) a form that
depends on the photo's language `L` (`app.text.language`: pycld2, `un` when unsure):

* `L` has a Snowball stemmer (`STEMMERS`): the stem of `t` (Snowball also folds case), so that
  `katze` / `katzen` (de) become `katz`, `chats` (fr) `chat`, `gatos` (es) `gat`;
* otherwise (`un`, which pycld2 answers for most short tag lists, or a language without a stemmer,
  such as the `vo` it guesses for short English text): the form `t` most often took in the train
  split's photos of languages with a stemmer (ties: the smaller form), or `t` itself.

The vocabulary counts these forms on the train split. Serving runs graph ops only, so no stemmer
runs there: the vocabulary file lists, for every (language group, tag) of the train split, the form
it takes where its id differs from what the fallback below gives (`Vocabulary.forms`), and
`TagLookup` looks a tag up as `(L, t)`, then as `("", t)` (its most frequent form in the train
split, whatever the language), then as written. So training, evaluation and serving map a photo's
tags through the same table, and a tag never seen in the train split is looked up as written: in
the vocabulary if it is a form there, otherwise out of vocabulary.
"""

from __future__ import annotations

import collections
import functools
from typing import Iterable, Sequence

from app.text.tags import Vocabulary, build_vocabulary, check_limits, vocabulary_from_counts

# pycld2's ISO 639-1 codes of the languages NLTK has a Snowball stemmer for.
STEMMERS = {"ar": "arabic", "da": "danish", "de": "german", "en": "english", "es": "spanish", "fi": "finnish",
            "fr": "french", "hu": "hungarian", "it": "italian", "nl": "dutch", "no": "norwegian", "pt": "portuguese",
            "ro": "romanian", "ru": "russian", "sv": "swedish"}
OTHER = ""  # the language group of photos whose language has no stemmer (`un` included)


def language_group(language: str) -> str:
    """The photo's language if it has a stemmer, else `OTHER`."""
    return language if language in STEMMERS else OTHER


@functools.lru_cache(maxsize=None)
def _stemmer(language: str):
    from nltk.stem.snowball import SnowballStemmer

    return SnowballStemmer(STEMMERS[language])


def stem(language: str, tag: str) -> str:
    """The Snowball stem of `tag` in `language` (an ISO code of `STEMMERS`)."""
    return _stemmer(language).stem(tag)


def count_pairs(photos: Iterable[tuple[str, Sequence[str]]], limit: int) -> collections.Counter:
    """Counts `(language group, tag)` over photos' first `limit` tags."""
    counter: collections.Counter = collections.Counter()
    for language, tags in photos:
        group = language_group(language)
        counter.update((group, tag) for tag in tags[:limit])
    return counter


def normal_forms(pairs: collections.Counter) -> dict:
    """`{(group, tag): form}` for every counted pair, plus `(OTHER, tag)` for every counted tag."""
    forms, votes = {}, collections.defaultdict(collections.Counter)
    for (group, tag), count in pairs.items():
        if group != OTHER:
            forms[group, tag] = stem(group, tag)
            votes[tag][forms[group, tag]] += count
    for tag in {tag for _, tag in pairs}:
        ranked = votes.get(tag)
        forms[OTHER, tag] = min(ranked.items(), key=lambda fc: (-fc[1], fc[0]))[0] if ranked else tag
    return forms


def build_normalized_vocabulary(photos: Iterable[tuple[str, Sequence[str]]], limit: int, threshold: int,
                                lowercase: bool = False, normalization: str = "none") -> Vocabulary:
    """The train split's vocabulary, of normalised tags with `snowball` (see the module docstring).

    Args:
        photos: each train photo's `(language, cleaned tags)` (streamed; only counts are kept).
        limit: the tag limit.
        threshold: the minimum count of a form.
        lowercase: whether the tags were cleaned with case folding (recorded for serving).
        normalization: `none` (`app.text.tags.build_vocabulary`) or `snowball`.
    """
    if normalization == "none":
        return build_vocabulary((tags for _, tags in photos), limit, threshold, lowercase)
    if normalization != "snowball":
        raise ValueError(f"normalization must be 'none' or 'snowball'. Received: {normalization!r}")
    check_limits(limit, threshold)
    pairs = count_pairs(photos, limit)
    forms = normal_forms(pairs)
    counts: collections.Counter = collections.Counter()
    for pair, count in pairs.items():
        counts[forms[pair]] += count
    vocab = vocabulary_from_counts(counts, limit, threshold, lowercase, normalization)
    vocab.forms = table_entries(forms, set(vocab.tokens))
    return vocab


def table_entries(forms: dict, tokens: set) -> dict:
    """The forms whose vocabulary tag ("" when out of vocabulary) differs from the lookup's fallback:
    `(OTHER, t)` falls back to `t` as written, `(L, t)` to `(OTHER, t)`."""
    def known(tag: str) -> str:
        return tag if tag in tokens else ""

    fallback = {tag: known(form) for (group, tag), form in forms.items() if group == OTHER}
    entries = {(OTHER, tag): form for tag, form in fallback.items() if form != known(tag)}
    entries.update({(group, tag): known(form) for (group, tag), form in forms.items()
                    if group != OTHER and known(form) != fallback[tag]})
    return entries

