"""The rooms hold: no import climbs a layer, no import cycle, no function over 60 lines.

Every module under app/, tuning/ and bench/ is parsed with `ast` (not imported), so imports inside
functions and under `TYPE_CHECKING` count too. Layers, bottom first (docs/architecture.md):

    base      app/__init__, errors, fileio, badrows, config, cli, plotting, registration, resources
    sources   app/sources/, app/downloader/, app/text/
    records   app/records/
    model     app/model/
    uses      app/training/, app/evaluation/, app/serving/, app/runs/, app/retrieval/
    demo      app/demo/ (imports the library; only the commands import it)
    commands  app/prepare.py, train.py, search.py, ... (the CLIs), tuning/, bench/

A module may import its own layer and those below. (`app.registration` names the modules of
custom Keras objects as strings, imported once Keras loads: not an import statement.)
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (
    ("base", ("app", "app.errors", "app.fileio", "app.badrows", "app.config", "app.cli", "app.plotting",
              "app.registration", "app.resources")),
    ("sources", ("app.sources", "app.downloader", "app.text")),
    ("records", ("app.records",)),
    ("model", ("app.model",)),
    ("uses", ("app.training", "app.evaluation", "app.serving", "app.runs", "app.retrieval")),
    ("demo", ("app.demo",)),
    ("commands", ("app.prepare", "app.train", "app.evaluate", "app.export", "app.predict", "app.download",
                  "app.pseudo_label", "app.search", "tuning", "bench")),
)
# Climbs that another change removes (issue 28: the tf.data pipeline stops importing the model's
# preprocessor). Each must still exist, so that the entry goes once it is fixed.
KNOWN_CLIMBS: set = set()  # imports that climb and are allowed for now: none
MAX_FUNCTION_LINES = 60


@functools.cache
def parsed_modules() -> dict:
    """`{dotted module name: (path, syntax tree)}` of every module under app/, tuning/ and bench/."""
    out = {}
    for folder in ("app", "tuning", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path, ast.parse(path.read_text(encoding="utf-8"), str(path))
    return out


def imported_modules(name: str, tree: ast.AST, modules, is_package: bool = False) -> set:
    """The project modules (of `modules`) that module `name` imports anywhere in its syntax tree
    (`from X import Y` counts as X.Y when that is a module, else as X)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names)
    out = set()
    for target in found:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def layer_of(name: str) -> int:
    """The layer index of a module: its longest listed prefix."""
    best = max(((len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
                if name == prefix or name.startswith(prefix + ".")), default=None)
    assert best is not None, f"{name} is in no layer: add it to LAYERS here and to docs/architecture.md"
    return best[1]


def import_graph() -> dict:
    """`{module: the project modules it imports}`."""
    modules = parsed_modules()
    return {name: imported_modules(name, tree, modules, path.name == "__init__.py")
            for name, (path, tree) in modules.items()}


def climbs(graph: dict) -> set:
    """`(importer, imported)` pairs where the imported module is in a higher layer."""
    return {(name, target) for name, targets in graph.items() for target in targets
            if layer_of(target) > layer_of(name)}


def cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while not component or component[-1] != node:
                        component.append(stack.pop())
                        on_stack.discard(component[-1])
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_no_import_climbs_a_layer():
    found = climbs(import_graph())
    named = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
             for a, b in sorted(found - KNOWN_CLIMBS)]
    assert named == [], "imports that climb a layer:\n" + "\n".join(named)
    assert KNOWN_CLIMBS <= found, f"fixed, remove from KNOWN_CLIMBS: {sorted(KNOWN_CLIMBS - found)}"


def test_no_import_cycle():
    found = cycles(import_graph())
    assert found == [], "modules that import each other (directly or around a loop):\n" + "\n".join(map(str, found))


def test_the_checks_see_imports_in_functions_and_under_type_checking():
    modules = {"app.demo", "app.demo.world", "app.model", "app.model.layers", "app.records.a", "app.records.b",
               "app.sources.photo"}
    text = ("from typing import TYPE_CHECKING\nfrom app.sources.photo import CollectionPhoto\n"
            "if TYPE_CHECKING:\n    import app.model.layers\n"
            "def f():\n    from app.demo import world\n    from .b import g\n")
    graph = {"app.records.a": imported_modules("app.records.a", ast.parse(text), modules), "app.records.b": set()}
    assert graph["app.records.a"] == {"app.sources.photo", "app.model.layers", "app.demo.world", "app.records.b"}
    assert climbs(graph) == {("app.records.a", "app.model.layers"), ("app.records.a", "app.demo.world")}
    graph["app.records.b"] = {"app.records.a"}
    assert cycles(graph) == [["app.records.a", "app.records.b"]]


def test_no_function_is_over_60_lines():
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
            for path, tree in parsed_modules().values() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []
