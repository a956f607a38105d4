"""Checking config arguments against the signature of their target.

This is what turns ``L(SGD)(lrr=0.1)``, ``cfg.model.head.num_clases = 3`` and the CLI override
``optimizer.lrr=0.1`` into one clear error at the moment they are written, instead of a TypeError
deep inside training.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import os
import pathlib
import types
import typing
from typing import Any

from .errors import ConfigError, did_you_mean

MISSING_VALUE = "???"


@dataclasses.dataclass(frozen=True)
class TargetSignature:
    """What the config system needs to know about a callable's parameters."""

    name: str
    parameters: dict[str, inspect.Parameter]
    hints: dict[str, Any]
    var_keyword: bool
    var_positional: bool
    tuple_params: frozenset[str]

    def is_argument(self, key: str) -> bool:
        return self.var_keyword or key in self.parameters

    def keyword_names(self) -> list[str]:
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [n for n, p in self.parameters.items() if p.kind in kinds]


def _is_tuple_annotation(annotation: Any) -> bool:
    if annotation is tuple:
        return True
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return True
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(args) == 1 and _is_tuple_annotation(args[0])
    return False


@functools.lru_cache(maxsize=4096)
def signature_of(target: Any, name: str) -> TargetSignature | None:
    """The signature of ``target`` (a class or callable), or None when Python cannot tell."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    try:
        fn = target.__init__ if isinstance(target, type) else target
        hints = typing.get_type_hints(fn)
    except Exception:
        # Unresolvable forward references: fall back to the annotations that are real objects.
        hints = {
            n: p.annotation
            for n, p in sig.parameters.items()
            if p.annotation is not inspect.Parameter.empty and not isinstance(p.annotation, str)
        }
    params = dict(sig.parameters)
    return TargetSignature(
        name=name,
        parameters=params,
        hints=hints,
        var_keyword=any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()),
        var_positional=any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params.values()),
        tuple_params=frozenset(n for n, a in hints.items() if _is_tuple_annotation(a)),
    )


def _skip_type_check(value: Any) -> bool:
    # Nodes, references, MISSING and interpolations are checked elsewhere or resolved later.
    return (
        isinstance(value, dict)
        or value == MISSING_VALUE
        or (isinstance(value, str) and "${" in value)
    )


_PRIMITIVES = (bool, int, float, str, bytes)


def type_mismatch(
    value: Any, annotation: Any, default: Any = inspect.Parameter.empty
) -> str | None:
    """Why ``value`` does not fit ``annotation``, or None when it fits (or cannot be judged).

    Only what a config can hold is judged: primitives, lists/tuples, dicts, Literal and unions of
    those. Annotations naming other classes (nn.Module, Tensor...) accept anything that is not a
    primitive, since a nested node builds the object later.
    """
    if _skip_type_check(value) or annotation is Any or annotation is inspect.Parameter.empty:
        return None
    if value is None:
        if default is None or annotation is type(None):
            return None
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation):
            return None
        return f"None is not allowed (annotation {_describe(annotation)})"
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        reasons = [type_mismatch(value, a, default) for a in typing.get_args(annotation)]
        return None if any(r is None for r in reasons) else f"expected {_describe(annotation)}"
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        return None if value in choices else f"expected one of {list(choices)}"
    base = origin or annotation
    if base is bool:
        return None if isinstance(value, bool) else f"expected bool, got {type(value).__name__}"
    if base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"expected int, got {type(value).__name__}"
    if base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"expected float, got {type(value).__name__}"
    if base is str:
        return None if isinstance(value, str) else f"expected str, got {type(value).__name__}"
    if isinstance(base, type) and base in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return f"expected a list or tuple, got {type(value).__name__}"
        return _elements_mismatch(value, base, typing.get_args(annotation))
    if isinstance(base, type) and base in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return f"expected a dict, got {type(value).__name__}"
        args = typing.get_args(annotation)
        if len(args) == 2 and not value.get("_target_"):
            for key, item in value.items():
                reason = type_mismatch(item, args[1])
                if reason:
                    return f"item {key!r}: {reason}"
        return None
    if base is collections.abc.Callable:
        return None if not isinstance(value, _PRIMITIVES) else "expected a callable"
    if isinstance(base, type) and isinstance(value, _PRIMITIVES) and not isinstance(value, base):
        # A primitive where an object of another class is expected (a Tensor, a Module...).
        # Paths are commonly given as strings; everything else is a typo or a wrong key.
        if isinstance(value, str) and issubclass(base, (os.PathLike, pathlib.PurePath)):
            return None
        return f"expected {base.__name__}, got {type(value).__name__}"
    return None


def _elements_mismatch(value: list | tuple, base: Any, args: tuple) -> str | None:
    """Check the items of a list/tuple against ``list[int]``, ``tuple[float, float]``, ..."""
    if not args:
        return None
    if base is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if args == ((),):  # tuple[()]
            args = ()
        if len(value) != len(args):
            return f"expected {len(args)} items, got {len(value)}"
        annotations = list(args)
    else:
        annotations = [args[0]] * len(value)
    for i, (item, annotation) in enumerate(zip(value, annotations)):
        reason = type_mismatch(item, annotation)
        if reason:
            return f"item {i} ({item!r}): {reason}"
    return None


def _describe(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def check_arguments(
    target: Any, target_name: str, args: tuple | list, kwargs: dict[str, Any], *, where: str
) -> None:
    """Raise ConfigError if ``target(*args, **kwargs)`` could not bind or has ill-typed primitives.

    ``where`` names the node for the message (a config key, or ``L(torch.optim.SGD)``). Keys
    wrapped in underscores (``_target_``, ``_partial_``...) are the config system's own.
    """
    sig = signature_of(target, target_name)
    if sig is None:
        return
    kwargs = {k: v for k, v in kwargs.items() if not (k.startswith("_") and k.endswith("_"))}
    for key in kwargs:
        check_key(sig, key, where=where)
    try:
        bound = inspect.Signature(list(sig.parameters.values())).bind_partial(*args, **kwargs)
    except TypeError as e:
        raise ConfigError(
            f"{where}: arguments do not fit {target_name}{_short_sig(sig)}: {e}."
        ) from e
    for name, value in bound.arguments.items():
        check_value(sig, name, value, where=where)


def check_key(sig: TargetSignature, key: str, *, where: str) -> None:
    if sig.is_argument(key):
        if key in sig.parameters and sig.parameters[key].kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ConfigError(
                f"{where}: '{key}' of {sig.name} is positional-only; pass it in _args_."
            )
        return
    names = sig.keyword_names()
    raise ConfigError(
        f"{where}: {sig.name} has no argument '{key}'.{did_you_mean(key, names)} "
        f"Its arguments are: {', '.join(names) or '(none)'}."
    )


def check_value(sig: TargetSignature, name: str, value: Any, *, where: str) -> None:
    param = sig.parameters.get(name)
    if param is None or param.kind in (
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.VAR_KEYWORD,
    ):
        return
    annotation = sig.hints.get(name, inspect.Parameter.empty)
    reason = type_mismatch(value, annotation, param.default)
    if reason:
        raise ConfigError(
            f"{where}: argument '{name}' of {sig.name} got {value!r}: {reason} "
            f"(annotation: {_describe(annotation)})."
        )


def missing_arguments(sig: TargetSignature, n_positional: int, keys: Any) -> list[str]:
    """Parameters without a default that neither ``n_positional`` arguments nor ``keys`` give."""
    out = []
    for i, (name, param) in enumerate(sig.parameters.items()):
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if param.default is not inspect.Parameter.empty or name in keys:
            continue
        if param.kind is not inspect.Parameter.KEYWORD_ONLY and i < n_positional:
            continue
        out.append(name)
    return out


def _short_sig(sig: TargetSignature) -> str:
    return (
        "(" + ", ".join(str(p).split(":")[0].split("=")[0] for p in sig.parameters.values()) + ")"
    )
