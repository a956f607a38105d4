"""How deeply a config may nest, checked before any recursive walk over it.

Every walk over a config (loading, validating, building, saving) recurses once per level of
nesting. Python stops a recursion at ``sys.getrecursionlimit()`` (1000 frames by default) with a
``RecursionError`` traceback that names no key. So a config is measured first, without recursion
(:func:`check_depth`): deeper than :data:`MAX_DEPTH` levels is refused with one message naming
the key path where the limit is crossed; within it, a walk gets the frames it needs
(:func:`recursion_room`).

A level is one dict, ``L(...)`` node, list or tuple: ``L(Sequential)(L(Sequential)(...))`` uses
two per node (the node and its ``_args_`` list), so a chain of 1000 such nodes is 1999 levels.
Real configs nest fewer than 20 levels.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from .errors import ConfigError

__all__ = ["MAX_DEPTH", "check_depth", "recursion_room"]

MAX_DEPTH = 2000

# Python frames a walk spends per level at most (instantiate: build -> _build -> call -> a
# comprehension), with room to spare for the calls a target makes.
_FRAMES_PER_LEVEL = 6
_SPARE_FRAMES = 500
# OmegaConf (YAML text, interpolations) spends about 15 frames a level.
OMEGACONF_FRAMES_PER_LEVEL = 20


def check_depth(cfg: Any, *, what: str = "config") -> int:
    """The nesting depth of ``cfg`` (0 for a primitive); ConfigError past :data:`MAX_DEPTH`.

    The walk is iterative, so it works on any input, cycles included (a cycle is reported as
    nesting too deep). ``what`` names the config in the message (a file, "instantiate").
    """
    deepest = 0
    if not isinstance(cfg, _CONTAINERS):
        return 0
    stack: list[tuple[Any, int]] = [(cfg, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        value, depth = pop()
        if depth > MAX_DEPTH:
            path, cyclic = _path_past_limit(cfg)
            if cyclic:
                raise ConfigError(
                    f"{what}: '{path}' contains itself; a config must be a tree. Use "
                    "ref('key') to share one object between two places."
                )
            raise ConfigError(
                f"{what}: the config nests more than {MAX_DEPTH} levels deep (at "
                f"'{path}'). Such a config cannot be loaded, checked, built or "
                "saved; flatten it (a config that repeats a block can build it in a function, or "
                "use ref('key') to share one node)."
            )
        if depth > deepest:
            deepest = depth
        for item in value.values() if isinstance(value, dict) else value:
            if isinstance(item, _CONTAINERS):
                push((item, depth + 1))
    return deepest


_CONTAINERS = (dict, list, tuple)


def _path_past_limit(cfg: Any) -> tuple[str, bool]:
    """The key path of the first container past :data:`MAX_DEPTH`, and whether it is a cycle."""
    # (value, depth, link): link is (key, id, parent link), so that a path is spelt only once.
    stack: list[tuple[Any, int, Any]] = [(cfg, 1, None)]
    while stack:
        value, depth, link = stack.pop()
        if depth > MAX_DEPTH:
            ids, parts = [], []
            while link is not None:
                key, ident, link = link
                parts.append(str(key))
                ids.append(ident)
            return ".".join(reversed(parts)) or "<root>", len(set(ids)) < len(ids)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(item, _CONTAINERS):
                stack.append((item, depth + 1, (key, id(item), link)))
    return "<root>", False


@contextlib.contextmanager
def recursion_room(depth: int, *, frames_per_level: int = _FRAMES_PER_LEVEL) -> Iterator[None]:
    """Let a walk over a config of nesting ``depth`` recurse without hitting Python's limit.

    ``frames_per_level``: more for walks through OmegaConf (about 15 frames a level).
    Raises the recursion limit only when the default would not do, and restores it afterwards.
    Python 3.11+ keeps Python-to-Python frames off the C stack, so the raised limit is safe for
    the pure-Python walks it is used for; :data:`MAX_DEPTH` bounds it.
    """
    frames = 0
    frame = sys._getframe()
    while frame is not None:
        frames += 1
        frame = frame.f_back
    needed = frames + frames_per_level * depth + _SPARE_FRAMES
    old = sys.getrecursionlimit()
    if needed <= old:
        yield
        return
    sys.setrecursionlimit(needed)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)
