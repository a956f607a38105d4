"""A readable difference between two configs."""

from __future__ import annotations

from typing import Any

from .lazy import ARGS, LOCATE, TARGET

__all__ = ["diff", "flatten"]


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.backbone._target_": "...", "optimizer.lr": 0.02, ...}``: one entry per leaf."""
    out: dict[str, Any] = {}
    if isinstance(cfg, dict) and cfg.get(TARGET) == LOCATE and len(cfg) == 2 and ARGS in cfg:
        out[prefix] = f"<{cfg[ARGS][0]}>"  # a class/function/dtype value, shown by its path
    elif isinstance(cfg, dict) and cfg:
        for key, value in cfg.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else key))
    elif isinstance(cfg, (list, tuple)) and cfg and any(isinstance(v, (dict, list)) for v in cfg):
        if isinstance(cfg, tuple):
            out[prefix] = "<tuple>"  # == tells a tuple from a list; so must the diff
        for i, value in enumerate(cfg):
            out.update(flatten(value, f"{prefix}.{i}"))
    else:
        out[prefix] = cfg  # a tuple stays a tuple: (1, 2) and [1, 2] are different values
    return out


def diff(a: Any, b: Any, *, names: tuple[str, str] = ("a", "b")) -> str:
    """Lines ``~ key: old -> new``, ``- key: old`` and ``+ key: new``, sorted by key.

    Where a node's ``_target_`` changed, its arguments are listed under it, so that a swapped
    backbone reads as one change of class followed by the arguments that came and went.
    Returns "" when the configs are equal.
    """
    fa, fb = flatten(a), flatten(b)
    lines = []
    for key in sorted(set(fa) | set(fb), key=_sort_key):
        if key in fa and key in fb:
            if fa[key] != fb[key] or type(fa[key]) is not type(fb[key]):
                lines.append(f"~ {key}: {fa[key]!r} -> {fb[key]!r}")
        elif key in fa:
            lines.append(f"- {key}: {fa[key]!r}")
        else:
            lines.append(f"+ {key}: {fb[key]!r}")
    if not lines:
        return ""
    return f"--- {names[0]}\n+++ {names[1]}\n" + "\n".join(lines)


def _sort_key(key: str) -> tuple:
    # A node's _target_ line comes first among its keys.
    parts = key.split(".")
    return tuple((0, "") if p == TARGET else (1, p) for p in parts)
