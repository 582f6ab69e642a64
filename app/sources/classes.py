"""A collection's class list (any size, any names) and its optional hierarchy (Open Images JSON form).

Classes file: UTF-8 CSV, one class per line, `name` or `name,id` (no header, or the header
`name` / `name,id`). Labels may use a class's id or its name. The dataset's `classes.csv` keeps
`id,name` (the id is the name when none is given), in file order: the model's output order.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from app.badrows import BadRows
from app.sources.csvread import BOM, BadLine, parse_line
from app.sources.hierarchy import Hierarchy, TreeError, load_json_text
from app.errors import InputError
from app.text.normalize import normalize_name, normalize_text

ROOT = "(root)"  # the hierarchy root of a collection: not a class
HEADERS = (["name"], ["name", "id"])


@dataclass
class ClassList:
    """Classes in output order, looked up by id or name.

    Args:
        ids: each class's id.
        names: each class's display name.
        source: where the list comes from (for messages).
    """

    ids: list
    names: list
    source: str = ""
    index: dict = field(init=False)

    def __post_init__(self):
        self.index = {name: i for i, name in enumerate(self.names)}
        self.index.update({cid: i for i, cid in enumerate(self.ids)})  # an id wins over a name

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, label: str, where: str) -> int:
        """The index of a class given by id or name, by the text rule (`app.text.normalize`).

        Raises:
            InputError: `where: label 'x' is not in the class list (source)`.
        """
        found = self.index.get(normalize_text(label))
        if found is None:
            raise InputError(f"{where}: label {label!r} is not in the class list ({self.source})")
        return found

    def pairs(self) -> list:
        """`(id, name)` in output order (the dataset's classes.csv)."""
        return list(zip(self.ids, self.names))

    @classmethod
    def from_names(cls, names: Sequence[str], source: str, ids: Optional[Sequence[str]] = None) -> "ClassList":
        """A class list from names (and ids) by the text rule, refusing an empty or repeated name or id."""
        names = [normalize_name(name, "class name", source) for name in names]
        ids = [normalize_name(cid, "class id", source) for cid in ids] if ids is not None else list(names)
        for cid, name in zip(ids, names):
            check_class(cid, name, source)
        for values, kind in ((names, "name"), (ids, "id")):
            seen: dict = {}
            for i, value in enumerate(values):
                if value in seen:
                    raise InputError(f"{source}: class {kind} {value!r} repeats (classes {seen[value] + 1} and {i + 1})")
                seen[value] = i
        return cls(list(ids), list(names), source)


def check_class(cid: str, name: str, where: str) -> None:
    """Refuses what the dataset's classes.csv cannot hold: a `"` or a line break, or a `,` in an id."""
    if any(c in cid for c in ',"\r\n') or any(c in name for c in '"\r\n'):
        raise InputError(f"{where}: class {name!r} (id {cid!r}): ids cannot hold , \" or line breaks, names \" "
                         f"or line breaks")


def read_class_list(path: str | Path) -> ClassList:
    """Reads a classes file (see the module docstring).

    Raises:
        InputError: `file:line: ...` for a malformed line, an empty name, a repeated name or id, or
            a name that is another class's id; `file: no classes` for none.
    """
    path = Path(path)
    lines = path.read_bytes().removeprefix(BOM).replace(b"\r\n", b"\n").split(b"\n")
    ids, names, seen = [], [], {}
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            fields = [normalize_text(f) for f in parse_line(raw, None)]
        except BadLine as err:
            raise InputError(f"{path}:{line_no}: expected 'name' or 'name,id' ({err})") from None
        if line_no == 1 and [f.lower() for f in fields] in HEADERS:
            continue
        if len(fields) > 2 or not fields[0] or (len(fields) == 2 and not fields[1]):
            raise InputError(f"{path}:{line_no}: expected 'name' or 'name,id', got {raw.decode('utf-8', 'replace')!r}")
        name, cid = fields[0], fields[-1]
        check_class(cid, name, f"{path}:{line_no}")
        for key, kind in ((f"name:{name}", "name"), (f"id:{cid}", "id")):
            if key in seen:
                raise InputError(f"{path}:{line_no}: class {kind} {key.split(':', 1)[1]!r} repeats line {seen[key]}")
            seen[key] = line_no
        names.append(name)
        ids.append(cid)
    for name, cid in zip(names, ids):
        if name != cid and f"id:{name}" in seen:
            raise InputError(f"{path}:{seen[f'name:{name}']}: class name {name!r} is the id of the class at line "
                             f"{seen[f'id:{name}']} (labels would be ambiguous)")
    if not ids:
        raise InputError(f"{path}: no classes (empty file)")
    return ClassList(ids, names, str(path))


def flat_tree(classes: ClassList) -> dict:
    """A hierarchy without structure: every class under the root."""
    return {"LabelName": ROOT, "Subcategory": [{"LabelName": cid} for cid in classes.ids]}


def read_hierarchy(path: str | Path, classes: ClassList, bad: Optional[BadRows] = None) -> tuple[dict, Hierarchy]:
    """Reads a hierarchy in the Open Images JSON form (`LabelName` / `Subcategory`) whose names are
    class ids or names (by the text rule, `app.text.normalize`); a class may appear under several
    parents. Nodes outside the class list (such as the root) only pass relations on; classes the
    tree lacks go under the root. A node that is not a class and holds no class below it (a typo
    such as `kat`, or a class of a larger list) is counted in `bad` as a skip `hierarchy_node_not_a_class`.

    Returns:
        `(tree, hierarchy)`: the tree with class ids (for the dataset's hierarchy.json), and it loaded.

    Raises:
        InputError: `file:line: ...` for bytes that are not UTF-8, JSON that does not parse, a node
            that is not an object with a `LabelName`, a `Subcategory` that is not a list, a tree
            deeper than `hierarchy.MAX_DEPTH`, or a cycle.
    """
    path = Path(path)
    tree = load_json_text(path)
    text = path.read_bytes().decode("utf-8-sig")
    if not isinstance(tree, dict) or not isinstance(tree.get("LabelName"), str):
        raise InputError(f"{path}:1: a hierarchy needs a root object with 'LabelName'")
    try:
        Hierarchy.check_structure(tree)
    except TreeError as err:
        raise InputError(f"{path}:{_line_of(text, err.label)}: {err}") from None
    tree = _with_ids(copy.deepcopy(tree), classes)
    for name in _nodes_without_classes(tree, set(classes.ids)) if bad is not None else ():
        bad.skip_many("hierarchy_node_not_a_class", str(path), [_line_of(text, name)], [name])
    present = set(_labels(tree))
    tree.setdefault("Subcategory", []).extend({"LabelName": c} for c in classes.ids if c not in present)
    try:
        return tree, Hierarchy(tree, classes.ids)
    except ValueError as err:
        cycle = re.search(r"cycle through '(.*)'", str(err))
        name = classes.names[classes.index[cycle.group(1)]] if cycle and cycle.group(1) in classes.index else ""
        named = f" (class {name!r})" if name and name != cycle.group(1) else ""  # the tree may use names, not ids
        raise InputError(f"{path}:{_line_of(text, name, cycle.group(1) if cycle else '')}: {err}{named}") from None


def _with_ids(node: dict, classes: ClassList) -> dict:
    """The tree with each class name replaced by the class's id (iteratively: trees may be deep)."""
    stack = [node]
    while stack:
        current = stack.pop()
        label = normalize_text(current["LabelName"])
        current["LabelName"] = classes.ids[classes.index[label]] if label in classes.index else label
        stack.extend(current.get("Subcategory", []))
    return node


def _nodes_without_classes(tree: dict, class_ids: set) -> list:
    """The names of the nodes, the root aside, that are not classes and hold no class below them."""
    order, stack = [], [tree]
    while stack:  # parents before their children
        node = stack.pop()
        order.append(node)
        stack.extend(node.get("Subcategory", []))
    holds: dict = {}
    for node in reversed(order):  # children before their parents
        holds[id(node)] = node["LabelName"] in class_ids or any(holds[id(c)] for c in node.get("Subcategory", []))
    return sorted({node["LabelName"] for node in order[1:] if not holds[id(node)]})


def _labels(node: dict) -> Iterable[str]:
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            yield current.get("LabelName")
            stack.extend(current.get("Subcategory", []) or [])


def _line_of(text: str, *names: str) -> int:
    """The first line naming one of `names` as a LabelName (1 if none does)."""
    for line_no, line in enumerate(text.split("\n"), start=1):
        if any(n and json.dumps(n) in line for n in names):
            return line_no
    return 1
