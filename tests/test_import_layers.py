"""The package's import rules (docs/architecture.md, "Packages and who may import whom").

Every module of ``lazydet`` (and ``kernels/``, installed as ``lazydet.kernels``) is parsed with
``ast``; every ``import`` counts, at module level or inside a function (a lazy import still ties
the two modules), except those under ``if TYPE_CHECKING:``, which never run. ``conf/`` is not
checked: its files are experiments, the top of the house, and may import anything.

Two rules:
- a module imports only packages on its own floor or below (``FLOORS``); the commands
  (``train``, ``evaluate``, ``predict``, ``analyze``, ``export``) import no other command;
- no import cycle between modules (importing ``a.b`` also runs ``a/__init__.py``; a cycle through
  a package's ``__init__`` counts).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first; a package may import its own floor and the floors below. Keep in step with
# docs/architecture.md.
FLOORS: list[set[str]] = [
    {"structures", "layers", "ops", "kernels", "utils"},
    {"config", "data", "modeling", "checkpoint"},
    {"evaluation", "engine", "analysis", "deploy"},
    {"train", "evaluate", "predict", "analyze", "export"},
]
COMMANDS = FLOORS[-1]

# Imports inside a function that close a cycle, each with the reason it stays.
ALLOWED_LAZY_IMPORTS = {
    ("lazydet.config.lazy", "lazydet.config.serialize"): (
        "Config.__repr__ prints a node as the Python source the serializer writes, and the "
        "serializer is written in terms of Config; a repr runs only once both are loaded"
    ),
}


def _source_files() -> dict[str, Path]:
    """``{"lazydet.engine.run": path, ...}`` for the package and the kernels folder."""
    modules: dict[str, Path] = {}
    for base, prefix in ((ROOT / "lazydet", "lazydet"), (ROOT / "kernels", "lazydet.kernels")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([prefix, *parts])] = path
    return modules


MODULES = _source_files()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """``(imported lazydet module, line)`` for each import in the file, resolved to the deepest
    module that exists (``from lazydet.config import select`` -> ``lazydet.config``;
    ``from lazydet.engine import run`` -> ``lazydet.engine.run``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module if is_package else module.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    package = package.rsplit(".", 1)[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rsplit(".", 1)[0] if "." in name else ""
            if name.startswith("lazydet"):
                found.append((name, node.lineno))
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _floor(package: str | None) -> int | None:
    return next((i for i, floor in enumerate(FLOORS) if package in floor), None)


def test_every_package_has_a_floor():
    unplaced = {_package(m) for m in MODULES} - {None} - set().union(*FLOORS) - {"conf"}
    assert not unplaced, (
        f"place these packages on a floor (FLOORS, docs/architecture.md): {unplaced}"
    )


def test_imports_follow_the_floors():
    wrong = []
    for module, imports in GRAPH.items():
        own = _package(module)
        if own is None:
            continue
        for target, line in imports:
            other = _package(target)
            if other is None or other == own:
                continue
            if own in COMMANDS and other in COMMANDS:
                wrong.append(
                    f"{MODULES[module].relative_to(ROOT)}:{line}: command {own} imports command {other}"
                )
            elif _floor(other) > _floor(own):
                wrong.append(
                    f"{MODULES[module].relative_to(ROOT)}:{line}: {own} (floor {_floor(own)}) imports "
                    f"{target} (floor {_floor(other)})"
                )
    assert not wrong, "imports against docs/architecture.md's floors:\n" + "\n".join(wrong)


def _edges() -> dict[str, set[str]]:
    """Module -> the modules its imports run: the target and every package above it."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, imports in GRAPH.items():
        for target, _ in imports:
            parts = target.split(".")
            for i in range(2, len(parts) + 1):  # lazydet.x, lazydet.x.y, ... (not lazydet itself)
                above = ".".join(parts[:i])
                if (module, above) in ALLOWED_LAZY_IMPORTS:
                    continue
                if above != module and above in MODULES and not module.startswith(above + "."):
                    edges[module].add(above)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_no_import_cycle():
    cycles = _cycles(_edges())
    assert not cycles, "import cycles between modules:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_allowed_lazy_imports_are_inside_functions():
    for (module, target), _reason in ALLOWED_LAZY_IMPORTS.items():
        tree = ast.parse(MODULES[module].read_text())
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert all(target not in _imports_of(module, node) for node in top_level), (module, target)


def _imports_of(module: str, node: ast.stmt) -> list[str]:
    names = [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
        for _ in range(max(node.level - 1, 0)):
            package = package.rsplit(".", 1)[0]
        base = (
            (f"{package}.{node.module}" if node.module else package) if node.level else node.module
        )
        names = [base, *(f"{base}.{n}" for n in names)]
    return names


def test_cycle_finder_finds_a_planted_cycle():
    # The checker itself: a -> b -> c -> a is one cycle, d -> a is not part of it.
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", ["lazydet.train", "lazydet.evaluate", "lazydet.predict"])
def test_the_commands_are_parsed(module):
    assert module in GRAPH  # the rules above really look at the commands
