"""The Open Images class hierarchy and the challenge label-expansion convention."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence



class Hierarchy:
    """Ancestors and descendants of Open Images classes, following `Subcategory` only.

    As in tensorflow/models `oid_hierarchical_labels_expansion.py`, `Part` lists are ignored
    and the root is not a class. A class may have several parents.

    Args:
        tree: the parsed hierarchy JSON (`LabelName` / `Subcategory` / `Part`).
        classes: when given, ancestors and descendants are restricted to these classes:
            a class's ancestors are then its ancestors that are among them.
    """

    def __init__(self, tree: Mapping, classes: Sequence[str] | None = None):
        parents: dict[str, set[str]] = {}
        self.root = tree["LabelName"]
        stack = [(tree, None)]
        while stack:
            node, parent = stack.pop()
            name = node["LabelName"]
            entry = parents.setdefault(name, set())
            if parent is not None and parent != self.root:
                entry.add(parent)
            for child in node.get("Subcategory", []):
                stack.append((child, name))
        parents.pop(self.root, None)
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
        try:
            tree = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from err
        if not isinstance(tree, dict) or "LabelName" not in tree:
            raise ValueError(f"{path}: hierarchy JSON needs a root object with 'LabelName'")
        return cls(tree, classes)

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

