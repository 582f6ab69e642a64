"""Classes held out of training for the generalized zero-shot protocol (`train.py --unseen-classes FILE`).

An unseen class's labels are neither positive nor negative in training (target and loss mask 0), and
the tags that name it are dropped from the photos' training inputs, so nothing the model learns comes
from it. Validation mAP, the best epoch and the test mAP in `metrics.json` are over the seen classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from app.errors import InputError
from app.sources.classes import read_class_list


@dataclass(frozen=True)
class UnseenClasses:
    """Class indices left out of training, and the tags that name them.

    Args:
        indices: the classes' indices in the dataset's output order, ascending.
        words: the tags naming them (each name lower-cased, `_` read as a space and as nothing).
    """

    indices: tuple = ()
    words: tuple = ()

    def __bool__(self) -> bool:
        return bool(self.indices)

    @classmethod
    def read(cls, path: str | Path | None, classes: list) -> "UnseenClasses":
        """Reads a class file (`name` or `name,id` a line, app/sources/classes.py) against the dataset's
        `(id, name)` classes, matching each line by id or by name.

        Raises:
            InputError: a class the dataset does not have, or every class unseen.
        """
        if not path:
            return cls()
        if not Path(path).is_file():
            raise InputError(f"--unseen-classes {path}: no such file")
        return cls.matching(read_class_list(path).pairs(), classes, str(path))

    @classmethod
    def matching(cls, wanted: list, classes: list, source: str) -> "UnseenClasses":
        """The unseen classes `wanted` (`(id, name)` pairs, matched by id or by name) among `classes`.

        Raises:
            InputError: `source: ...` for a class the dataset does not have, or every class unseen.
        """
        by_key = {key: i for i, (cid, name) in enumerate(classes) for key in (cid, name)}
        indices = set()
        for cid, name in wanted:
            index = by_key.get(cid, by_key.get(name))
            if cid != name and name in by_key and by_key[name] != index:
                raise InputError(f"{source}: {name},{cid}: the name and the id are two classes of the dataset "
                                 f"({classes[by_key[name]][0]} is {name!r}); give one of them")
            if index is None:
                near = [n for _, n in classes if n.lower() == name.lower()]
                raise InputError(f"{source}: class {name!r} is not among the dataset's {len(classes)} classes"
                                 + (f" (names match case: {near[0]!r})" if near else ""))
            indices.add(index)
        if len(indices) == len(classes):
            raise InputError(f"{source}: every class is unseen: keep at least one to train on")
        words = {variant for i in indices for variant in name_variants(classes[i][1])}
        return cls(tuple(sorted(indices)), tuple(sorted(words)))

    def names(self, classes: list) -> list:
        """The unseen classes' names."""
        return [classes[i][1] for i in self.indices]

    def seen_mask(self, num_classes: int) -> list:
        """`[num_classes]` 1.0 for a seen class, 0.0 for an unseen one."""
        unseen = set(self.indices)
        return [0.0 if c in unseen else 1.0 for c in range(num_classes)]

    def tag_ids(self, vocab) -> list:
        """The ids of `vocab` (`app.text.tags.Vocabulary`) that the unseen classes' names are read as."""
        words = {w.lower() for w in self.words}
        tokens = {t for t in vocab.tokens if t.lower() in words}
        tokens |= {form for (_, tag), form in vocab.forms.items() if form and tag.lower() in words}
        return sorted(i + 2 for i, t in enumerate(vocab.tokens) if t in tokens)

    def hide(self, dataset: tf.data.Dataset, num_classes: int, tag_ids: list) -> tf.data.Dataset:
        """`(inputs, targets, mask)` batches with the unseen classes' targets and mask at 0, and the tag
        ids in `tag_ids` set to padding (masked pooling skips them)."""
        if not self:
            return dataset
        seen = tf.constant(self.seen_mask(num_classes))
        dropped = tf.constant(tag_ids or [-1], tf.int64)

        def hide(inputs, targets, mask):
            if "tag_ids" in inputs and tag_ids:
                ids = inputs["tag_ids"]
                hit = tf.reduce_any(tf.equal(tf.cast(ids, tf.int64)[..., None], dropped), axis=-1)
                inputs = {**inputs, "tag_ids": tf.where(hit, tf.zeros_like(ids), ids)}
            return inputs, targets * seen, mask * seen

        return dataset.map(hide)


def name_variants(name: str) -> set:
    """The tag forms of a class name: lower case, `_` read as a space and as nothing."""
    low = name.strip().lower()
    return {low, low.replace("_", " "), low.replace("_", ""), low.replace(" ", "")}
