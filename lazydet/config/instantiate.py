"""Build objects from config nodes.

A minimal recursive builder over plain dicts and lists: Hydra's ``instantiate`` walks OmegaConf
nodes and is an order of magnitude slower on model-sized configs (``scripts/bench_config.py``),
and it turns tuples into lists.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from .depth import check_depth, recursion_room
from .errors import ConfigError, InstantiationError
from .interpolation import Interpolations
from .lazy import ARGS, PARTIAL, REF, TARGET, Config, path_of, root_of
from .paths import locate
from .signature import MISSING_VALUE, signature_of

__all__ = ["instantiate"]

# Values built as themselves: no key path is spelt for them (a deep config's paths are long).
_LEAVES = frozenset({int, float, bool, type(None)})
_BUILDING = object()  # memo marker for a node under construction (a reference cycle)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _plain(cfg: Any) -> Any:
    """OmegaConf containers become plain Python ones (interpolations resolved)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a core dependency
        return cfg
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


class _Builder:
    def __init__(self, root: Any, refs: Mapping[str, Any]) -> None:
        self.root = root
        # Objects built here, by builder path. ``refs`` are keyed by whole-config keys: when
        # ``root`` is itself a part of a config, builder paths are relative to it and may spell
        # the same as a ref key (``lr_scheduler.optimizer`` vs ref("optimizer")), so they are kept
        # apart; at the top of a config the two coincide and a given ref stands for its node.
        self.refs = dict(refs)
        self.memo: dict[str, Any] = {} if path_of(root) else dict(refs)
        # Interpolations resolve against the whole config that ``root`` is part of: the builder
        # path ``path`` is the config key ``key_prefix + path[len(path_prefix):]``.
        self.interpolations = Interpolations(root_of(root))
        self.path_prefix, self.key_prefix = "", path_of(root)
        # Targets located once per build: a config repeats a few targets many times, and
        # ``locate`` of "pkg.mod.Class" first tries (and fails) to import "pkg.mod.Class" as a module.
        self._located: dict[str, Any] = {}
        self._owners: dict[int, Interpolations] = {
            id(self.interpolations.root): self.interpolations
        }

    def interpolated(self, text: str, path: str) -> Any:
        key = _join(self.key_prefix, path[len(self.path_prefix) :].lstrip("."))
        try:
            return self.interpolations.value_at(key, text)
        except ConfigError as e:
            raise InstantiationError(str(e), path=path) from None

    def build(
        self, node: Any, path: str, holder: Config | None = None, holder_owner: Any = None
    ) -> Any:
        """Build ``node`` found at builder path ``path``.

        ``holder`` is the Config whose values (directly or through lists/tuples) are being walked
        and ``holder_owner`` the whole config it belongs to. A child whose parent pointer is
        ``holder`` belongs to that same config, so its owner is known in O(1); only a node met
        otherwise (the top, a ref, a node of another config placed here) walks up with
        :func:`root_of`. That keeps building linear in the number of nodes, whatever the shape.
        """
        if not isinstance(node, Config):
            return self._build(node, path, holder, holder_owner)
        if holder is not None and object.__getattribute__(node, "_Config__parent") is holder:
            owner = holder_owner
        else:
            owner = root_of(node)
        if owner is node or owner is self.interpolations.root:
            return self._build(node, path, node, owner)
        # A node of another config placed in this one (``instantiate({"model": cfg.model})``):
        # its ``${...}`` resolve against the config it belongs to, as they would in place.
        saved = self.interpolations, self.path_prefix, self.key_prefix
        self.interpolations = self._owners.setdefault(id(owner), Interpolations(owner))
        self.path_prefix, self.key_prefix = path, path_of(node)
        try:
            return self._build(node, path, node, owner)
        finally:
            self.interpolations, self.path_prefix, self.key_prefix = saved

    def node_at(self, path: str) -> Any:
        node = self.root
        walked = ""
        for key in path.split("."):
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise KeyError(walked)
            walked = _join(walked, key)
        return node

    def resolve_ref(self, target: str, path: str) -> Any:
        if target in self.refs:  # a given object wins over a builder path of the same spelling
            return self.refs[target]
        if target in self.memo:
            value = self.memo[target]
            if value is _BUILDING:
                raise InstantiationError(
                    f"{path}: ref('{target}') is part of a reference cycle.", path=path
                )
            return value
        try:
            node = self.node_at(target)
        except KeyError:
            raise InstantiationError(
                f"{path}: ref('{target}') names no key of the config being instantiated. If it "
                "points outside the node being instantiated, instantiate the whole config or pass "
                f"refs={{'{target}': obj}}.",
                path=path,
            ) from None
        return self.build(node, target)

    def _build(self, node: Any, path: str, holder: Config | None, holder_owner: Any) -> Any:
        if isinstance(node, dict):
            if not isinstance(node, Config):  # a plain dict: its children do not point at it
                holder = holder_owner = None
            if REF in node:
                # Mark the ref's own key: a ref that leads back to it is a cycle, not a recursion.
                if self.memo.get(path) is _BUILDING:
                    raise InstantiationError(
                        f"{path or '<root>'}: ref('{node[REF]}') is part of a reference cycle.",
                        path=path,
                    )
                self.memo[path] = _BUILDING
                out = self.resolve_ref(node[REF], path)
                self.memo[path] = out
                return out
            if path in self.memo:
                return self.resolve_ref(path, path)
            self.memo[path] = _BUILDING
            target = node.get(TARGET)
            if target is None:
                out: Any = {
                    k: v
                    if type(v) in _LEAVES
                    else self.build(v, _join(path, k), holder, holder_owner)
                    for k, v in node.items()
                }
            else:
                out = self.call(node, target, path, holder, holder_owner)
            self.memo[path] = out
            return out
        # Lists and tuples are walked through: a Config inside points at the Config holding them.
        if isinstance(node, list):
            return [
                v
                if type(v) in _LEAVES
                else self.build(v, _join(path, str(i)), holder, holder_owner)
                for i, v in enumerate(node)
            ]
        if isinstance(node, tuple):
            return tuple(
                v
                if type(v) in _LEAVES
                else self.build(v, _join(path, str(i)), holder, holder_owner)
                for i, v in enumerate(node)
            )
        if isinstance(node, str):
            if node == MISSING_VALUE:
                raise InstantiationError(
                    f"'{path}' is MISSING ('???'): give it a value before instantiating.",
                    path=path,
                )
            if "${" in node:  # an interpolation: resolved now, against the whole config
                return self.build(self.interpolated(node, path), path)
        return node

    def call(
        self, node: dict, target_name: Any, path: str, holder: Config | None, holder_owner: Any
    ) -> Any:
        where = path or "<root>"
        if not isinstance(target_name, str):
            raise InstantiationError(f"{where}: _target_ must be an import path string.", path=path)
        target = self._located.get(target_name)
        if target is None:
            try:
                target = locate(target_name)
            except ConfigError as e:
                raise InstantiationError(f"{where}: {e}", path=path) from None
            self._located[target_name] = target
        args = [
            a
            if type(a) in _LEAVES
            else self.build(a, _join(path, f"_args_.{i}"), holder, holder_owner)
            for i, a in enumerate(node.get(ARGS, ()))
        ]
        kwargs = {
            k: v if type(v) in _LEAVES else self.build(v, _join(path, k), holder, holder_owner)
            for k, v in node.items()
            if not (k.startswith("_") and k.endswith("_"))
        }
        sig = signature_of(target, target_name)
        if sig is not None and sig.tuple_params:
            for key in sig.tuple_params.intersection(kwargs):
                if isinstance(kwargs[key], list):
                    kwargs[key] = tuple(kwargs[key])
        if node.get(PARTIAL, False):
            return functools.partial(target, *args, **kwargs)
        try:
            return target(*args, **kwargs)
        except InstantiationError:
            raise
        except Exception as e:
            raise InstantiationError(
                f"Building '{where}' ({target_name}) failed: {type(e).__name__}: {e}", path=path
            ) from e


def instantiate(cfg: Any, *, refs: Mapping[str, Any] | None = None, root: Any = None) -> Any:
    """Build the objects a config describes, recursively.

    Args:
        cfg: a node (``L(...)`` result), a container of nodes, or an OmegaConf config.
        refs: already-built objects for ``ref(...)`` targets outside ``cfg``, keyed by config key
            (``instantiate(cfg.optimizer, refs={"model": model})``).
        root: the whole config, when ``cfg`` is a part of it and refers to other parts.

    Returns plain Python containers (dicts, lists, tuples) with the built objects inside. Every
    ``ref`` to the same key gives the same object. ``${...}`` interpolations are resolved now,
    against the whole config that ``cfg`` is part of (``instantiate(cfg.model)`` sees
    ``cfg.dataset``). Errors name the config key of the failing node.
    """
    cfg = _plain(cfg)
    depth = check_depth(cfg, what="instantiate")
    with recursion_room(depth):
        if root is None:
            builder = _Builder(cfg, refs or {})
            return builder.build(cfg, "")
        root = _plain(root)
        check_depth(root, what="instantiate (root=)")
        builder = _Builder(root, refs or {})
        path = _find_path(builder.root, cfg)
        return builder.build(cfg, path)


def _find_path(root: Any, node: Any, prefix: str = "") -> str:
    """The key of ``node`` inside ``root`` (by identity), for memoising shared objects."""
    if root is node:
        return prefix
    if isinstance(root, dict):
        for k, v in root.items():
            if isinstance(v, (dict, list)):
                found = _find_path(v, node, _join(prefix, k))
                if found:
                    return found
    elif isinstance(root, list):
        for i, v in enumerate(root):
            if isinstance(v, (dict, list)):
                found = _find_path(v, node, _join(prefix, str(i)))
                if found:
                    return found
    return ""
