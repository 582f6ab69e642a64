"""Classes held out of training for the generalized zero-shot protocol (`train.py --unseen-classes FILE`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.errors import InputError
from app.sources.classes import read_class_list


@dataclass(frozen=True)
class UnseenClasses:
    """Class indices left out of training, and the tags that name them (dropped from the photos).

    Args:
        indices: the classes' indices in the dataset's output order, ascending.
        words: the tags naming them (each name lower-cased, with `_` and ` ` variants).
    """

    indices: tuple = ()
    words: tuple = ()

    def __bool__(self) -> bool:
        return bool(self.indices)

    @classmethod
    def read(cls, path: str | Path | None, classes: list) -> "UnseenClasses":
        """Reads a class file (names or ids, one a line; see app/sources/classes.py) against the dataset's
        `(id, name)` classes.

        Raises:
            InputError: a class the dataset does not have, or every class unseen.
        """
        if not path:
            return cls()
        wanted = read_class_list(path)
        by_key = {key: i for i, (cid, name) in enumerate(classes) for key in (cid, name)}
        indices = set()
        for cid, name in wanted.pairs():
            index = by_key.get(cid, by_key.get(name))
            if index is None:
                raise InputError(f"{path}: class {name!r} is not among the dataset's {len(classes)} classes")
            indices.add(index)
        if len(indices) == len(classes):
            raise InputError(f"{path}: every class is unseen: keep at least one to train on")
        words = {variant for i in indices for variant in name_variants(classes[i][1])}
        return cls(tuple(sorted(indices)), tuple(sorted(words)))


def name_variants(name: str) -> set:
    """The tag forms of a class name: lower case, with `_` read as a space and as nothing."""
    low = name.strip().lower()
    return {low, low.replace("_", " "), low.replace("_", ""), low.replace(" ", "")}
