"""``build_module``: a part given as a built module, or as a factory the owner calls with sizes.

Configs are written before the backbone exists, so heads are usually factories
(``L(Head)(..., _partial_=True)`` instantiates to a ``functools.partial``); the owner calls them
with the sizes it knows (channels, number of anchors, classes). A built module is used as is.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["ModuleOrFactory", "build_module"]

ModuleOrFactory = nn.Module | Callable[..., nn.Module]


def build_module(
    part: ModuleOrFactory | None, *, owner: str, what: str, **sizes: object
) -> nn.Module | None:
    """``part`` as is when it is a module (or None), else ``part(**sizes)``.

    Args:
        part: a module, a factory (class or ``functools.partial``), or None (returned as None).
        owner, what: the model and the argument, for errors (``"RetinaNet"``, ``"head"``).
        sizes: keyword arguments the factory receives (``in_channels=...`` etc.).

    Raises TypeError naming ``owner.what`` when ``part`` is neither, or the factory does not
    return a module.
    """
    if part is None or isinstance(part, nn.Module):
        return part
    if not callable(part):
        raise TypeError(
            f"{owner} {what} must be an nn.Module or a callable that builds one (a class or "
            f"functools.partial, e.g. L(...)(..., _partial_=True)), got {type(part).__name__}."
        )
    module = part(**sizes)
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"{owner} {what} factory returned a {type(module).__name__}, not an nn.Module."
        )
    return module
