"""Whole-config validation, run on composed configs before anything is built."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .depth import check_depth, recursion_room
from .errors import ConfigError
from .interpolation import Interpolations, is_interpolation
from .lazy import ARGS, PARTIAL, REF, RESERVED, TARGET, path_of, root_of
from .paths import locate
from .signature import MISSING_VALUE, check_key, check_value, missing_arguments, signature_of

__all__ = ["validate"]


def validate(cfg: Any, *, missing_hint: Callable[[str], str] | None = None) -> None:
    """Check every node of ``cfg`` and raise one ConfigError listing every problem.

    Checks: each ``_target_`` imports; each argument exists in the target's signature (with
    "did you mean"); primitive values fit the annotations (elements of annotated lists and
    tuples too); each required argument is set (except in ``_partial_`` nodes, which get the rest
    when they are called); no value is MISSING (``???``); each ``${...}`` resolves (its value is
    then type-checked); each ``ref`` names a key of the config and no ``ref`` leads back to
    itself. ``missing_hint(key)`` may add advice to a MISSING report (the Hydra bridge names the
    group options that would fill it).
    """
    problems: list[str] = []
    with recursion_room(check_depth(cfg, what="validate")):
        walker = _Walker(cfg, problems, missing_hint)
        walker.walk(cfg, path_of(cfg), frozenset())
    problems = _without_echoes(problems)
    if problems:
        raise ConfigError("Invalid config:" + "".join(f"\n  - {p}" for p in problems))


def _without_echoes(problems: list[str]) -> list[str]:
    """The problems, each once, without the interpolations that fail only because a value they
    read is MISSING when that value is reported itself (one unset path is one problem).

    An error raised by a resolver (say, a json file that is not there) reaches every key that
    reads it: it is reported once, at the first key, with the count of the others.
    """
    missing = {p.split(" is MISSING ")[0] for p in problems if " is MISSING ('???')" in p}
    out: list[str] = []
    first_at: dict[str, int] = {}
    others: dict[str, set[str]] = {}
    for problem in problems:
        echo = problem.rpartition("Missing mandatory value: ")[2]
        if problem in out or ("cannot resolve" in problem and echo in missing):
            continue
        cause = problem.partition(" raised while resolving interpolation: ")[2]
        if cause and cause in first_at:
            others[cause].add(problem.split(":", 1)[0])
            continue
        if cause:
            first_at[cause], others[cause] = len(out), set()
        out.append(problem)
    for cause, index in first_at.items():
        if others[cause]:
            out[index] += f" (and {len(others[cause])} more keys that read it)"
    return out


def _node_at(root: Any, path: str) -> Any:
    node = root
    for key in path.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, (list, tuple)) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise KeyError(path)
    return node


class _Walker:
    def __init__(self, cfg: Any, problems: list[str], hint: Any) -> None:
        self.root = root_of(cfg)
        self.problems = problems
        self.hint = hint
        self.interpolations = Interpolations(self.root)

    def walk(self, node: Any, path: str, open_: frozenset[int]) -> None:
        join = lambda k: f"{path}.{k}" if path else str(k)  # noqa: E731
        if isinstance(node, (dict, list, tuple)):
            if id(node) in open_:
                self.problems.append(
                    f"{path or '<root>'} contains itself; a config must be a tree."
                )
                return
            open_ = open_ | {id(node)}
        if isinstance(node, dict):
            if REF in node:
                self.check_ref(node[REF], path)
                return
            target_name = node.get(TARGET)
            if target_name is not None:
                self.check_call(node, target_name, path)
            for key, value in node.items():
                if key != TARGET:
                    self.walk(value, join(key), open_)
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                self.walk(value, join(i), open_)
        elif isinstance(node, str) and node == MISSING_VALUE:
            extra = self.hint(path) if self.hint else ""
            self.problems.append(
                f"{path} is MISSING ('???').{(' ' + extra) if extra else ' Set it.'}"
            )
        elif is_interpolation(node):
            self.resolved(node, path)

    def resolved(self, text: str, path: str) -> Any:
        """The value of an interpolation, or None after reporting why it has none."""
        try:
            return self.interpolations.value_at(path, text)
        except ConfigError as e:
            self.problems.append(str(e))
            return None

    def check_ref(self, target: Any, path: str) -> None:
        first = target
        seen = [path]
        while True:
            if not isinstance(target, str):
                self.problems.append(f"{path}: ref({target!r}) must name a config key.")
                return
            try:
                node = _node_at(self.root, target)
            except KeyError:
                self.problems.append(f"{path}: ref({target!r}) names no key of the config.")
                return
            if any(p == target or p.startswith(target + ".") for p in seen):
                chain = " -> ".join([*seen, target])
                self.problems.append(f"{path}: ref({first!r}) leads back to itself ({chain}).")
                return
            if not (isinstance(node, dict) and REF in node):
                return
            seen.append(target)
            target = node[REF]

    def check_call(self, node: dict, target_name: Any, path: str) -> None:
        where = path or "<root>"
        problems = self.problems
        if not isinstance(target_name, str):
            problems.append(
                f"{where}: _target_ must be an import path string, got {target_name!r}."
            )
            return
        try:
            target = locate(target_name)
        except ConfigError as e:
            problems.append(f"{where}: {e}")
            return
        if not callable(target):
            problems.append(f"{where}: _target_ '{target_name}' is not callable.")
            return
        if ARGS in node and not isinstance(node[ARGS], (list, tuple)):
            problems.append(f"{where}: _args_ must be a list.")
            return
        sig = signature_of(target, target_name)
        if sig is None:
            return
        join = lambda k: f"{path}.{k}" if path else k  # noqa: E731
        for key, value in node.items():
            if key in RESERVED or (key.startswith("_") and key.endswith("_")):
                continue
            if is_interpolation(value):
                value = self.resolved(value, join(key))
                if value is None:
                    continue
            try:
                check_key(sig, key, where=where)
                check_value(sig, key, value, where=where)
            except ConfigError as e:
                problems.append(str(e))
        if not node.get(PARTIAL, False):
            missing = missing_arguments(sig, len(node.get(ARGS, ())), node.keys())
            if missing:
                names = ", ".join(f"'{m}'" for m in missing)
                problems.append(
                    f"{where}: {target_name} requires {names}, which no one sets. Set "
                    + " and ".join(f"{join(m)}" for m in missing)
                    + " (on the command line: +KEY=VALUE), or make the node a factory with "
                    "_partial_=True if its caller passes them."
                )
