"""Deferred call graphs: ``L(Class)(arg=...)`` builds a config node, not an object.

A node is a :class:`Config` (a ``dict`` with attribute access) holding ``_target_``: the
import-path string of what to call, ``_args_``: positional arguments (optional) and the keyword
arguments. Nodes nest; nothing is built until :func:`lazydet.config.instantiate`.

Values a config may hold, and how they are stored so that every dump reloads to the same objects:

==================================  ==========================================================
written in Python                   stored as
==================================  ==========================================================
primitives, lists, tuples, dicts    themselves (dicts become ``Config``)
``L(f)(...)``                       ``{_target_: "pkg.f", ...}``
a class, function, dtype, enum      ``{_target_: "lazydet.config.locate", _args_: ["pkg.Cls"]}``
``functools.partial(f, a=1)``       ``{_target_: "pkg.f", _partial_: true, a: 1}``
``ref("model")``                    ``{_ref_: "model"}``: the object built at ``model``, shared
==================================  ==========================================================

Lambdas, local functions and arbitrary instances are refused when written, with what to do.
Arguments are checked against the target's signature when a node is written and when a key is set
later, with "did you mean" suggestions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from .errors import ConfigError, did_you_mean
from .paths import import_path, is_importable_object, locate
from .signature import MISSING_VALUE, check_arguments, check_key, check_value, signature_of

__all__ = ["MISSING", "Config", "L", "LazyCall", "is_node", "path_of", "ref", "root_of", "to_node"]

TARGET = "_target_"
ARGS = "_args_"
PARTIAL = "_partial_"
REF = "_ref_"
LOCATE = "lazydet.config.locate"
RESERVED = (TARGET, ARGS, PARTIAL, REF)


class _Missing:
    """The ``MISSING`` marker: a value the config must receive before it is built.

    Stored as Hydra/OmegaConf's ``"???"``; a distinct object in Python so that a config file's
    ``from lazydet.config import MISSING`` is not mistaken for a config value.
    """

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING = _Missing()


class Config(dict):
    """A config mapping with attribute access. With a ``_target_`` it is a call node.

    Setting a key on a call node checks it against the target's signature::

        cfg.optimizer.lrr = 0.1   # ConfigError: SGD has no argument 'lrr'. Did you mean 'lr'?

    Each node remembers the node that holds it (its parent), so that a part of a config
    (``cfg.model``) still knows the whole: ``${dataset.num_classes}`` inside it is resolved
    against the whole config when the part is built, and messages name the full key.
    """

    __slots__ = ("__parent",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        object.__setattr__(self, "_Config__parent", None)
        if args or kwargs:
            self.update(*args, **kwargs)

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            pass
        if key.startswith("__"):
            raise AttributeError(key)
        raise AttributeError(self._missing_key_message(key)) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError:
            raise AttributeError(self._missing_key_message(key)) from None

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise ConfigError(f"Config keys must be strings; got {key!r}.")
        where = self._where()
        value = to_node(value, where=f"{where}.{key}" if where else key)
        if _reaches(value, self):
            raise ConfigError(
                f"{path_of(self) or 'config'}.{key}: the value contains this very node, which "
                "would make the config contain itself. Assign a copy (copy.deepcopy) instead."
            )
        if key not in RESERVED and TARGET in self:
            target_name = dict.__getitem__(self, TARGET)
            sig = _target_signature(target_name)
            if sig is not None:
                check_key(sig, key, where=where)
                check_value(sig, key, value, where=where)
        store(self, key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # Check every key first, so that a bad one leaves the node as it was.
        items = dict(*args, **kwargs)
        trial = self.__copy__()
        for key, value in items.items():
            trial[key] = value
        for key in items:
            store(self, key, dict.__getitem__(trial, key))

    def __ior__(self, other: Any) -> Config:  # ``cfg.optimizer |= {...}`` is checked too
        self.update(other)
        return self

    def __or__(self, other: Any) -> Config:
        new = self.__copy__()
        new.update(other)
        return new

    def copy(self) -> Config:  # type: ignore[override]
        return self.__copy__()

    def setdefault(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key not in self:
            self[key] = default
        return self[key]

    def _where(self) -> str:
        target = dict.get(self, TARGET)
        return f"L({target})" if isinstance(target, str) else ""

    def _missing_key_message(self, key: str) -> str:
        target = dict.get(self, TARGET)
        path = path_of(self)
        if isinstance(target, str):
            full = f"{path}.{key}" if path else f"KEY.{key}"  # a node on its own has no key yet
            sig = _target_signature(target)
            if sig is not None and key in sig.parameters:
                return (
                    f"'{key}' is an argument of {target} that this config does not set; "
                    f"assign it (node.{key} = ...) or, on the command line, write +{full}=VALUE."
                )
        full = f"{path}.{key}" if path else key
        return f"Config has no key '{full}'.{did_you_mean(key, self.keys())}"

    # Fast copies that skip validation: the content was validated when written.
    def __copy__(self) -> Config:
        new = Config()
        dict.update(new, self)  # a shallow copy shares the children: they keep their parent
        return new

    def __deepcopy__(self, memo: dict) -> Config:
        import copy

        new = Config()
        memo[id(self)] = new
        for key, value in self.items():
            store(new, key, copy.deepcopy(value, memo))
        return new

    def __reduce__(self) -> tuple:
        return (_rebuild, (dict(self),))

    def __repr__(self) -> str:
        from .serialize import format_node

        return format_node(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython/Jupyter
        printer.text(repr(self))


def _rebuild(content: dict) -> Config:
    new = Config()
    for key, value in content.items():
        store(new, key, value)
    return new


def _adopt(parent: Config, value: Any) -> None:
    if isinstance(value, Config):
        object.__setattr__(value, "_Config__parent", parent)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _adopt(parent, item)


def store(node: Config, key: str, value: Any) -> None:
    """Set ``node[key] = value`` without checks (the value is already a config value)."""
    dict.__setitem__(node, key, value)
    _adopt(node, value)


def _parent(node: Config) -> Config | None:
    parent = object.__getattribute__(node, "_Config__parent")
    # A node moved elsewhere (or deleted) keeps a stale pointer: trust it only while it holds us.
    if parent is not None and any(_holds(v, node) for v in dict.values(parent)):
        return parent
    return None


def _holds(value: Any, node: Any) -> bool:
    if value is node:
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds(v, node) for v in value)
    return False


def _climb(node: Any) -> Iterator[tuple[Config, Any]]:
    """``(parent, child)`` from ``node`` up to its root config, one step a pair; a config that
    holds itself (a cycle) ends the climb instead of looping."""
    seen = {id(node)}
    while isinstance(node, Config):
        parent = _parent(node)
        if parent is None or id(parent) in seen:
            return
        seen.add(id(parent))
        yield parent, node
        node = parent


def root_of(node: Any) -> Any:
    """The whole config that ``node`` is a part of (``node`` itself when it is not a part)."""
    root = node
    for parent, _ in _climb(node):
        root = parent
    return root


def path_of(node: Any) -> str:
    """The dotted key of ``node`` in :func:`root_of` ``(node)`` (``""`` for a whole config)."""
    parts = [_key_in(parent, child) for parent, child in _climb(node)]
    return ".".join(reversed(parts))


def _key_in(parent: Config, node: Any) -> str:
    for key, value in dict.items(parent):
        if value is node:
            return key
        if isinstance(value, (list, tuple)):
            index = _index_in(value, node)
            if index:
                return f"{key}.{index}"
    return "?"


def _index_in(seq: list | tuple, node: Any) -> str:
    for i, value in enumerate(seq):
        if value is node:
            return str(i)
        if isinstance(value, (list, tuple)):
            inner = _index_in(value, node)
            if inner:
                return f"{i}.{inner}"
    return ""


def _reaches(value: Any, node: Any) -> bool:
    """Whether ``node`` is ``value`` or inside it (storing it would make a cycle)."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        if item is node:
            return True
        if isinstance(item, (dict, list, tuple)) and id(item) not in seen:
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)
    return False


def _target_signature(target_name: str):
    try:
        target = locate(target_name)
    except ConfigError:
        return None
    return signature_of(target, target_name)


def is_node(value: Any) -> bool:
    """Whether ``value`` is a call node (a mapping with a ``_target_``)."""
    return isinstance(value, dict) and TARGET in value


def target_nodes(cfg: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, node)`` of every mapping under ``cfg`` (itself included) with a ``_target_``.

    Keys are written as overrides write them (``model.backbone``, ``schedulers.0``; ``prefix``
    for the root, ``""`` by default). Iterative, so a hostile file nested deeper than Python's
    recursion limit is walked too; works on plain dicts, Configs and OmegaConf containers.
    """
    stack: list[tuple[str, Any]] = [(prefix, cfg)]
    while stack:
        key, node = stack.pop()
        if hasattr(node, "items"):
            if node.get(TARGET) is not None:
                yield key, node
            children = ((str(k), v) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            children = ((str(i), v) for i, v in enumerate(node))
        else:
            continue
        stack.extend((f"{key}.{name}" if key else name, value) for name, value in children)


def ref(path: str) -> Config:
    """The object built at config key ``path`` (e.g. ``"model"``), shared rather than rebuilt.

    ``optimizer = L(SGD)(params=L(param_groups)(module=ref("model")))`` (``param_groups`` from
    ``lazydet.engine.optim``) gives the optimizer the parameters of the very model that training
    uses.
    """
    if not isinstance(path, str) or not path or path.startswith("."):
        raise ConfigError(f"ref() takes an absolute config key such as 'model'; got {path!r}.")
    node = Config()
    store(node, REF, path)
    return node


def to_node(value: Any, *, where: str = "", _open: frozenset[int] = frozenset()) -> Any:
    """Convert a Python value into what a config stores (see the module docstring).

    A dict or list that contains itself is refused (a config is a tree, and a cycle would make
    every walk over it endless); ``_open`` holds the containers being converted.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if value is MISSING:
        return MISSING_VALUE
    if isinstance(value, Config):
        return value
    if isinstance(value, (dict, list, tuple)):
        if id(value) in _open:
            raise ConfigError(
                f"{where or 'config'}: this {type(value).__name__} contains itself; a config must "
                "be a tree. Use ref('key') to share one object between two places."
            )
        _open = _open | {id(value)}
    if isinstance(value, dict):
        node = Config()
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where or 'config'}: keys must be strings; got {key!r}.")
            sub = f"{where}.{key}" if where else key
            store(node, key, to_node(item, where=sub, _open=_open))
        # A hand-written {"_target_": ...} mapping is checked with the whole config (validate),
        # which reports every problem at once; L(...) nodes are checked as they are written.
        return node
    if isinstance(value, (list, tuple)):
        items = [to_node(v, where=f"{where}.{i}", _open=_open) for i, v in enumerate(value)]
        return type(value)(items) if isinstance(value, tuple) else items
    if isinstance(value, functools.partial):
        node = Config()
        store(node, TARGET, import_path(value.func))
        store(node, PARTIAL, True)
        if value.args:
            store(node, ARGS, [to_node(a, where=where) for a in value.args])
        for key, item in value.keywords.items():
            store(node, key, to_node(item, where=f"{where}.{key}"))
        return node
    if is_importable_object(value):
        try:
            path = import_path(value)
        except ConfigError as e:
            raise ConfigError(f"{where or 'config'}: {e}") from None
        node = Config()
        store(node, TARGET, LOCATE)
        store(node, ARGS, [path])
        return node
    raise ConfigError(
        f"{where or 'config'}: a {type(value).__name__} instance cannot be stored in a config, "
        "only primitives, lists, dicts, L(...) nodes, and importable classes/functions/dtypes. "
        f"Write L({type(value).__name__})(...) so that it is built when the config is instantiated."
    )


def _check_node_arguments(node: Config, target_name: str, *, where: str) -> None:
    try:
        target = locate(target_name)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    args = dict.get(node, ARGS, ())
    kwargs = {k: v for k, v in node.items() if k not in RESERVED}
    check_arguments(target, target_name, args, kwargs, where=where)


class LazyCall:
    """``L(target)(*args, **kwargs)``: a config node that calls ``target`` when instantiated.

    ``target`` is a class or function (stored as its shortest import path) or an import-path
    string. The arguments are checked against ``target``'s signature right away.
    """

    def __init__(self, target: Callable[..., Any] | str) -> None:
        if isinstance(target, str):
            locate(target)  # fail now, with a message, if it does not import
            self._target = target
        elif callable(target):
            self._target = import_path(target)
        else:
            raise ConfigError(f"L() takes a class, a function or an import path; got {target!r}.")

    def __call__(self, *args: Any, **kwargs: Any) -> Config:
        where = f"L({self._target})"
        partial = kwargs.pop(PARTIAL, False)
        node = Config()
        store(node, TARGET, self._target)
        if partial:
            store(node, PARTIAL, True)
        if args:
            store(node, ARGS, [to_node(a, where=f"{where}[{i}]") for i, a in enumerate(args)])
        for key, value in kwargs.items():
            store(node, key, to_node(value, where=f"{where}.{key}"))
        _check_node_arguments(node, self._target, where=where)
        return node

    def __repr__(self) -> str:
        return f"L({self._target})"


L = LazyCall
