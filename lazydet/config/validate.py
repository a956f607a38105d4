"""Whole-config validation, run on composed configs before anything is built."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import ConfigError
from .lazy import ARGS, REF, RESERVED, TARGET
from .paths import locate
from .signature import MISSING_VALUE, check_key, check_value, signature_of

__all__ = ["validate"]


def validate(cfg: Any, *, missing_hint: Callable[[str], str] | None = None) -> None:
    """Check every node of ``cfg`` and raise one ConfigError listing every problem.

    Checks: each ``_target_`` imports; each argument exists in the target's signature (with
    "did you mean"); primitive values fit the annotations; no value is MISSING (``???``); each
    ``ref`` names a key of the config. ``missing_hint(key)`` may add advice to a MISSING report
    (the Hydra bridge names the group options that would fill it).
    """
    problems: list[str] = []
    _walk(cfg, "", cfg, problems, missing_hint)
    if problems:
        raise ConfigError("Invalid config:" + "".join(f"\n  - {p}" for p in problems))


def _exists(root: Any, path: str) -> bool:
    node = root
    for key in path.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return False
    return True


def _walk(node: Any, path: str, root: Any, problems: list[str], hint: Any) -> None:
    join = lambda k: f"{path}.{k}" if path else str(k)  # noqa: E731
    if isinstance(node, dict):
        if REF in node:
            if not isinstance(node[REF], str) or not _exists(root, node[REF]):
                problems.append(f"{path}: ref({node[REF]!r}) names no key of the config.")
            return
        target_name = node.get(TARGET)
        if target_name is not None:
            _check_call(node, target_name, path or "<root>", problems)
        for key, value in node.items():
            if key == TARGET:
                continue
            _walk(value, join(key), root, problems, hint)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _walk(value, join(i), root, problems, hint)
    elif isinstance(node, str) and node == MISSING_VALUE:
        extra = hint(path) if hint else ""
        problems.append(f"{path} is MISSING ('???').{(' ' + extra) if extra else ' Set it.'}")


def _check_call(node: dict, target_name: Any, where: str, problems: list[str]) -> None:
    if not isinstance(target_name, str):
        problems.append(f"{where}: _target_ must be an import path string, got {target_name!r}.")
        return
    try:
        target = locate(target_name)
    except ConfigError as e:
        problems.append(f"{where}: {e}")
        return
    if not callable(target):
        problems.append(f"{where}: _target_ '{target_name}' is not callable.")
        return
    sig = signature_of(target, target_name)
    if sig is None:
        return
    for key, value in node.items():
        if key in RESERVED or (key.startswith("_") and key.endswith("_")):
            continue
        try:
            check_key(sig, key, where=where)
            check_value(sig, key, value, where=where)
        except ConfigError as e:
            problems.append(str(e))
    if ARGS in node and not isinstance(node[ARGS], (list, tuple)):
        problems.append(f"{where}: _args_ must be a list.")
