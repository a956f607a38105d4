"""What a group option file sets, read from its source without executing it.

Composing a config executes its files, and those import torch and torchvision: seconds before a
typo on the command line can be reported. Most group option files are one literal node
(``optimizer = L(torch.optim.SGD)(params=..., lr=0.02, momentum=0.9)``), so the keys they set can
be read from the syntax tree. A plain ``optimizer.lrr=0.1`` (no ``+``) must name a key the config
sets, so when the option that fills ``optimizer`` is known and literal, a key it does not set is an
error before any file runs. Anything this module cannot read for certain is left to the full check.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from .errors import ConfigError, did_you_mean
from .tree import EXPERIMENT_GROUP, ConfigTree

__all__ = ["precheck_value_overrides"]

_UNKNOWN = object()  # a value this module cannot read without running the file


def _literal_keys(node: ast.expr) -> Any:
    """``L(X)(a=..., b=L(Y)(c=...))`` / ``dict(...)`` / ``{...}`` -> ``{"a": ..., "b": {"c": ...}}``."""
    if isinstance(node, ast.Call):
        func = node.func
        is_lazy = (
            isinstance(func, ast.Call)
            and isinstance(func.func, ast.Name)
            and func.func.id in ("L", "LazyCall")
        )
        is_dict = isinstance(func, ast.Name) and func.id == "dict" and not node.args
        if not (is_lazy or is_dict) or any(k.arg is None for k in node.keywords):
            return _UNKNOWN
        return {k.arg: _literal_keys(k.value) for k in node.keywords}
    if isinstance(node, ast.Dict):
        if not all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in node.keys):
            return _UNKNOWN
        return {k.value: _literal_keys(v) for k, v in zip(node.keys, node.values)}  # type: ignore[union-attr]
    return None  # a leaf value: no keys below it


def _names_changed_later(tree: ast.Module, name: str, assignment: ast.stmt) -> bool:
    """Whether any statement but ``assignment`` rebinds or edits ``name`` (``name.x = ...``)."""
    for stmt in tree.body:
        if stmt is assignment:
            continue
        for sub in ast.walk(stmt):
            if isinstance(sub, ast.Name) and sub.id == name and isinstance(sub.ctx, ast.Store):
                return True
            if isinstance(sub, (ast.Attribute, ast.Subscript)) and isinstance(sub.ctx, ast.Store):
                base = sub.value
                while isinstance(base, (ast.Attribute, ast.Subscript)):
                    base = base.value
                if isinstance(base, ast.Name) and base.id == name:
                    return True
            if isinstance(sub, (ast.ImportFrom, ast.Import)) and any(
                (a.asname or a.name) == name for a in sub.names
            ):
                return True
    return False


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return None


def option_keys(path: Path, leaf: str) -> Any:
    """The key tree of the option file's ``leaf = ...`` node, or ``_UNKNOWN``."""
    module = _parse(path)
    if module is None:
        return _UNKNOWN
    found = None
    for stmt in module.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "defaults" for t in targets):
            return _UNKNOWN  # options that pull in further options: compose decides
        if any(isinstance(t, ast.Name) and t.id == leaf for t in targets):
            if found is not None or len(targets) != 1:
                return _UNKNOWN
            found = stmt
    if found is None or _names_changed_later(module, leaf, found):
        return _UNKNOWN
    return _literal_keys(found.value)  # type: ignore[attr-defined]


def experiment_defaults(path: Path, seen: frozenset[Path] = frozenset()) -> dict[str, str] | None:
    """The experiment's literal ``defaults`` dict, following ``from .x import defaults``."""
    module = _parse(path)
    if module is None or path in seen:
        return None
    for stmt in module.body:
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "defaults" for t in stmt.targets
        ):
            try:
                value = ast.literal_eval(stmt.value)
            except ValueError:
                return None
            ok = isinstance(value, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            )
            return value if ok else None
        if (
            isinstance(stmt, ast.ImportFrom)
            and stmt.level == 1
            and stmt.module
            and any(a.name in ("defaults", "*") for a in stmt.names)
        ):
            found = experiment_defaults(path.parent / f"{stmt.module}.py", seen | {path})
            if found is not None or any(a.name == "defaults" for a in stmt.names):
                return found
    return None


def precheck_value_overrides(
    tree: ConfigTree, experiments: list[str], groups: list[str], values: list[Any]
) -> None:
    """Refuse a plain ``KEY=VALUE`` whose key a literal group option does not set.

    ``groups`` are the command line's group choices (``optimizer=adamw``), ``values`` the parsed
    value overrides. Raises ConfigError, with the keys the option does set, before any config file
    is executed; says nothing where the files cannot be read for certain.
    """
    known_groups = tree.groups()
    chosen: dict[str, str | None] = {}
    for text in groups:
        key, _, option = text.lstrip("+~").partition("=")
        sweep = "," in option or "(" in option
        chosen[key] = None if (sweep or text.startswith("~") or not option) else option
    added = [o.key_or_group for o in values if o.is_add() or o.is_force_add() or o.is_delete()]
    for override in values:
        if override.is_add() or override.is_force_add() or override.is_delete():
            continue
        key = override.key_or_group
        if any(key == a or key.startswith(a + ".") or a.startswith(key + ".") for a in added):
            continue
        parts = key.split(".")
        for end in range(len(parts) - 1, 0, -1):
            group = "/".join(parts[:end])
            if group in known_groups:
                break
        else:
            continue
        options = set()
        for name in experiments:
            if group in chosen:
                option = chosen[group]
            else:
                path = tree.config_file(EXPERIMENT_GROUP, name)
                defaults = experiment_defaults(path) if path else None
                option = defaults.get(group) if defaults else None
            options.add(option)
        if len(options) != 1 or None in options:
            continue
        (option,) = options
        path = tree.config_file(group, option)
        if path is None:
            continue
        node = option_keys(path, parts[end - 1])
        walked = parts[:end]
        for part in parts[end:]:
            if not isinstance(node, dict):
                break  # a leaf, or a value read only by running the file
            if part not in node:
                where = ".".join(walked)
                raise ConfigError(
                    f"Override '{override.input_line}': {where} ({group}={option}, "
                    f"{path.parent.name}/{path.name}) sets no '{part}'."
                    f"{did_you_mean(part, node)} It sets: "
                    f"{', '.join(node) or '(nothing)'}; write +{key}=... to add an argument it "
                    "leaves out."
                )
            node = node[part]
            walked.append(part)
