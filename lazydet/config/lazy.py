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
from collections.abc import Callable
from typing import Any

from .errors import ConfigError, did_you_mean
from .paths import import_path, is_importable_object, locate
from .signature import MISSING_VALUE, check_arguments, check_key, check_value, signature_of

__all__ = ["MISSING", "Config", "L", "LazyCall", "is_node", "ref", "to_node"]

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
    """

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
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
        if key not in RESERVED and TARGET in self:
            target_name = dict.__getitem__(self, TARGET)
            sig = _target_signature(target_name)
            if sig is not None:
                check_key(sig, key, where=where)
                check_value(sig, key, value, where=where)
        dict.__setitem__(self, key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key not in self:
            self[key] = default
        return self[key]

    def _where(self) -> str:
        target = dict.get(self, TARGET)
        return f"L({target})" if isinstance(target, str) else ""

    def _missing_key_message(self, key: str) -> str:
        target = dict.get(self, TARGET)
        if isinstance(target, str):
            sig = _target_signature(target)
            if sig is not None and key in sig.parameters:
                return (
                    f"'{key}' is an argument of {target} that this config does not set; "
                    f"assign it (node.{key} = ...) or, on the command line, write +KEY.{key}=VALUE."
                )
        return f"Config has no key '{key}'.{did_you_mean(key, self.keys())}"

    # Fast copies that skip validation: the content was validated when written.
    def __copy__(self) -> Config:
        new = Config()
        dict.update(new, self)
        return new

    def __deepcopy__(self, memo: dict) -> Config:
        import copy

        new = Config()
        memo[id(self)] = new
        for key, value in self.items():
            dict.__setitem__(new, key, copy.deepcopy(value, memo))
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
    dict.update(new, content)
    return new


def _target_signature(target_name: str):
    try:
        target = locate(target_name)
    except ConfigError:
        return None
    return signature_of(target, target_name)


def is_node(value: Any) -> bool:
    """Whether ``value`` is a call node (a mapping with a ``_target_``)."""
    return isinstance(value, dict) and TARGET in value


def ref(path: str) -> Config:
    """The object built at config key ``path`` (e.g. ``"model"``), shared rather than rebuilt.

    ``optimizer = L(SGD)(params=L(trainable_parameters)(module=ref("model")))`` gives the
    optimizer the parameters of the very model that training uses.
    """
    if not isinstance(path, str) or not path or path.startswith("."):
        raise ConfigError(f"ref() takes an absolute config key such as 'model'; got {path!r}.")
    node = Config()
    dict.__setitem__(node, REF, path)
    return node


def to_node(value: Any, *, where: str = "") -> Any:
    """Convert a Python value into what a config stores (see the module docstring)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if value is MISSING:
        return MISSING_VALUE
    if isinstance(value, Config):
        return value
    if isinstance(value, dict):
        node = Config()
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where or 'config'}: keys must be strings; got {key!r}.")
            dict.__setitem__(node, key, to_node(item, where=f"{where}.{key}" if where else key))
        # A hand-written {"_target_": ...} mapping is checked with the whole config (validate),
        # which reports every problem at once; L(...) nodes are checked as they are written.
        return node
    if isinstance(value, (list, tuple)):
        items = [to_node(v, where=f"{where}[{i}]") for i, v in enumerate(value)]
        return type(value)(items) if isinstance(value, tuple) else items
    if isinstance(value, functools.partial):
        node = Config()
        dict.__setitem__(node, TARGET, import_path(value.func))
        dict.__setitem__(node, PARTIAL, True)
        if value.args:
            dict.__setitem__(node, ARGS, [to_node(a, where=where) for a in value.args])
        for key, item in value.keywords.items():
            dict.__setitem__(node, key, to_node(item, where=f"{where}.{key}"))
        return node
    if is_importable_object(value):
        try:
            path = import_path(value)
        except ConfigError as e:
            raise ConfigError(f"{where or 'config'}: {e}") from None
        node = Config()
        dict.__setitem__(node, TARGET, LOCATE)
        dict.__setitem__(node, ARGS, [path])
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
        dict.__setitem__(node, TARGET, self._target)
        if partial:
            dict.__setitem__(node, PARTIAL, True)
        if args:
            dict.__setitem__(
                node, ARGS, [to_node(a, where=f"{where}[{i}]") for i, a in enumerate(args)]
            )
        for key, value in kwargs.items():
            dict.__setitem__(node, key, to_node(value, where=f"{where}.{key}"))
        _check_node_arguments(node, self._target, where=where)
        return node

    def __repr__(self) -> str:
        return f"L({self._target})"


L = LazyCall
