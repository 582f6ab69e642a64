"""The Open Images class hierarchy and the challenge label-expansion convention."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from app.errors import InputError
from app.sources.json_stream import typed

MAX_DEPTH = 100  # levels of Subcategory below the root (Open Images has 5); deeper trees are refused


class TreeError(ValueError):
    """A hierarchy whose structure is wrong; `label` names the node concerned (for its line)."""

    def __init__(self, message: str, label: str = ""):
        super().__init__(message)
        self.label = label


class Hierarchy:
    """Ancestors and descendants of Open Images classes, following `Subcategory` only.

    As in tensorflow/models `oid_hierarchical_labels_expansion.py`, `Part` lists are ignored
    and the root is not a class. A class may have several parents.

    Args:
        tree: the parsed hierarchy JSON (`LabelName` / `Subcategory` / `Part`).
        classes: when given, ancestors and descendants are restricted to these classes:
            a class's ancestors are then its ancestors that are among them.

    Raises:
        ValueError: for a node without `LabelName`, a `Subcategory` that is not a list, a tree
            deeper than `MAX_DEPTH`, a cycle, or a class (of `classes`) that is not in the tree.
    """

    def __init__(self, tree: Mapping, classes: Sequence[str] | None = None):
        parents = self._parents(tree)
        self.root = tree["LabelName"]
        parents.pop(self.root, None)
        if classes is not None:
            missing = [c for c in classes if c not in parents]
            if missing:
                raise ValueError(f"lacks {len(missing)} of the {len(classes)} classes of the class list, "
                                 f"e.g. {', '.join(missing[:5])}")
        self.tree = tree
        self._all_ancestors = self._closure(parents)
        children: dict[str, set[str]] = {name: set() for name in parents}
        for name, ups in self._all_ancestors.items():
            for up in ups:
                children[up].add(name)
        self._all_descendants = children
        self.classes = list(classes) if classes is not None else sorted(parents)
        keep = set(self.classes)
        self.ancestors = {c: frozenset(self._all_ancestors.get(c, ()) & keep) for c in self.classes}
        self.descendants = {c: frozenset(self._all_descendants.get(c, ()) & keep) for c in self.classes}
        # Nearest ancestors within the class set: ancestors that are not ancestors of another one.
        self.parents = {
            c: frozenset(a for a in ups if not any(a in self.ancestors[b] for b in ups if b != a))
            for c, ups in self.ancestors.items()
        }

    @staticmethod
    def _parents(tree: Mapping) -> dict[str, set[str]]:
        """Each node's parents (the root included), checking the structure on the way."""
        parents: dict[str, set[str]] = {}
        stack = [(tree, None, "the root", 0)]
        while stack:
            node, parent, where, depth = stack.pop()
            if not isinstance(node, Mapping) or not isinstance(node.get("LabelName"), str):
                raise TreeError(f"the node at {where} has no 'LabelName': {typed(node)}", parent or "")
            if depth > MAX_DEPTH:
                raise TreeError(f"the node at {where} is nested {depth} levels deep (at most {MAX_DEPTH})",
                                node["LabelName"])
            name = node["LabelName"]
            entry = parents.setdefault(name, set())
            if parent is not None and parent != tree["LabelName"]:
                entry.add(parent)
            children = node.get("Subcategory", [])
            if not isinstance(children, list):
                raise TreeError(f"'Subcategory' of {name} is not a list: {typed(children)}", name)
            stack.extend((child, name, f"{name} Subcategory[{i}]", depth + 1) for i, child in enumerate(children))
        return parents

    @classmethod
    def check_structure(cls, tree: Mapping) -> None:
        """Raises `TreeError` for a node without a string `LabelName`, a `Subcategory` that is not a
        list, or a node deeper than `MAX_DEPTH` (without recursion: any depth is checked)."""
        cls._parents(tree)

    @staticmethod
    def _closure(parents: Mapping[str, set[str]]) -> dict[str, set[str]]:
        done: dict[str, set[str]] = {}

        def visit(name: str, path: tuple) -> set[str]:
            if name in done:
                return done[name]
            if name in path:
                raise ValueError(f"hierarchy has a cycle through {name!r}")
            result: set[str] = set()
            for parent in parents.get(name, ()):
                result.add(parent)
                result |= visit(parent, path + (name,))
            done[name] = result
            return result

        for name in parents:
            visit(name, ())
        return done

    @classmethod
    def from_json(cls, path: str | Path, classes: Sequence[str] | None = None) -> "Hierarchy":
        """Reads `bbox_labels_600_hierarchy.json` or `challenge-2019-label500-hierarchy.json`."""
        path = Path(path)
        tree = load_json_text(path)
        if not isinstance(tree, dict) or "LabelName" not in tree:
            raise InputError(f"{path}: hierarchy JSON needs a root object with 'LabelName'")
        try:
            return cls(tree, classes)
        except ValueError as err:
            raise InputError(f"{path}: {err}") from None

    def known_mids(self) -> list[str]:
        """Every MID a label may use: the hierarchy's nodes, the root first (the classes are among them)."""
        return [self.root, *sorted(self._all_ancestors)]

    def expand_arrays(self, label: np.ndarray, positive: np.ndarray, mids: Sequence[str]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`expand` for many labels of many images at once, vectorised per class.

        Args:
            label: `[n]` indices into `mids`.
            positive: `[n]` bool, True for a positive label (confidence 1).
            mids: the MIDs that `label` indexes.

        Returns:
            `(source, cls, positive)`: for each expanded label, the input label it came from
            (`[m]` indices into `label`), its class (index into `self.classes`) and its sign.
            Repeats are left in: put the negatives first and let the positives overwrite them.
        """
        index = {c: i for i, c in enumerate(self.classes)}
        ups = [[index[m] for m in (mid, *self._all_ancestors.get(mid, ())) if m in index] for mid in mids]
        downs = [[index[m] for m in (mid, *self._all_descendants.get(mid, ())) if m in index] for mid in mids]
        parts = [(_fan_out(ups, label, np.flatnonzero(positive)), True),
                 (_fan_out(downs, label, np.flatnonzero(~positive)), False)]
        source = np.concatenate([rows for (rows, _), _ in parts])
        cls = np.concatenate([targets for (_, targets), _ in parts])
        sign = np.concatenate([np.full(len(rows), value) for (rows, _), value in parts])
        return source, cls, sign

    def level(self, mid: str) -> int:
        """Depth of a class within the (restricted) hierarchy: 1 for a top-level class."""
        ups = self.ancestors.get(mid, frozenset())
        return 1 + max((self.level(p) for p in self.parents.get(mid, ())), default=0) if ups else 1

    def expand(self, labels: Iterable[tuple[str, int]]) -> dict[str, int]:
        """Expands verified labels by the challenge convention.

        A positive is copied to every ancestor, a negative to every descendant, and there is
        one label per class where a positive wins. Classes outside the class set still pass their
        labels on to relatives inside it, then are dropped.

        Args:
            labels: `(mid, confidence)` pairs with confidence 1 (positive) or 0 (negative).

        Returns:
            `{mid: 0|1}` for classes in the class set.
        """
        keep = set(self.ancestors)
        out: dict[str, int] = {}
        for mid, confidence in labels:
            if confidence:
                for name in (mid, *self._all_ancestors.get(mid, ())):
                    out[name] = 1
            else:
                for name in (mid, *self._all_descendants.get(mid, ())):
                    out.setdefault(name, 0)
        return {mid: value for mid, value in out.items() if mid in keep}

    def expand_scores(self, scores: Mapping[str, float]) -> dict[str, float]:
        """Copies each class's score to its ancestors in the class set, keeping the maximum.

        How the study turned machine labels into training targets (also used for autotags).

        Args:
            scores: `{mid: confidence}` of classes in the class set.

        Returns:
            `{mid: confidence}` with every ancestor of a scored class.
        """
        out = dict(scores)
        for mid, score in scores.items():
            for up in self.ancestors.get(mid, ()):
                if score > out.get(up, 0.0):
                    out[up] = score
        return out


def load_json_text(path: Path):
    """A small JSON file (a hierarchy) parsed whole.

    Raises:
        InputError: `file:line: ...` for bytes that are not UTF-8, JSON that does not parse, or
            nesting too deep for the parser.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(f"{path}:{line}: not UTF-8 (byte 0x{data[err.start]:02x})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
    except RecursionError:
        raise InputError(f"{path}:1: JSON nested too deeply to read (a hierarchy has at most {MAX_DEPTH} "
                         f"levels)") from None


def _fan_out(targets: list, label: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the labels at `rows`, one entry per target class of their MID: `(row, target)`."""
    counts = np.array([len(t) for t in targets] + [0], dtype=np.int64)
    flat = np.array([c for t in targets for c in t], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    per_row = counts[label[rows]]
    out_rows = np.repeat(rows, per_row)
    within = np.arange(len(out_rows)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    return out_rows, flat[np.repeat(starts[label[rows]], per_row) + within]
