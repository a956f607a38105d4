"""``${...}`` interpolations: kept live in the config, resolved when it is built.

A value such as ``num_classes="${dataset.num_classes}"`` stays a link until the config is
instantiated (or :func:`resolve`\\ d on request), as in OmegaConf: change ``cfg.dataset.num_classes``
in a notebook and the model built afterwards follows. Saved ``.py``/``.yaml`` files keep the
``${...}`` text. OmegaConf's grammar and resolvers do the resolving (``${oc.env:VAR}``,
``${now:...}``, string interpolation ``"run_${train.seed}"``, relative ``${.x}``), always against the
whole config that a node belongs to (:func:`lazydet.config.lazy.root_of`).
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ConfigError
from .lazy import Config, path_of, root_of, store

__all__ = ["Interpolations", "is_interpolation", "resolve"]


def is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def contains_interpolation(value: Any) -> bool:
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        if is_interpolation(item):
            return True
        if isinstance(item, (dict, list, tuple)) and id(item) not in seen:
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)
    return False


class Interpolations:
    """Resolves the interpolations of one config, by config key.

    The OmegaConf view of the whole config is made once, on first use, so that a config
    without interpolations costs nothing.
    """

    def __init__(self, root: Any) -> None:
        self.root = root
        self._view: Any = None

    def view(self) -> Any:
        if self._view is None:
            from omegaconf import OmegaConf

            from .serialize import to_container

            self._view = OmegaConf.create(to_container(self.root))
        return self._view

    def value_at(self, key: str, text: str) -> Any:
        """The resolved value of the interpolation ``text`` found at config key ``key``."""
        from omegaconf import DictConfig, ListConfig, OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        from .serialize import from_container

        try:
            value = OmegaConf.select(self.view(), key, throw_on_missing=True)
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True)
        except OmegaConfBaseException as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"{key}: cannot resolve {text!r}: {reason}") from None
        except RecursionError:
            raise ConfigError(f"{key}: {text!r} is part of a cycle of interpolations.") from None
        if is_interpolation(value) and value == text:
            raise ConfigError(f"{key}: {text!r} could not be resolved.")
        return from_container(value)


def resolve(cfg: Any) -> Any:
    """A copy of ``cfg`` with every ``${...}`` replaced by its value (``cfg`` is not changed).

    Interpolations are resolved against the whole config ``cfg`` is part of, so
    ``resolve(cfg.model)`` sees ``cfg.dataset``. Raises ConfigError naming the key of one that
    does not resolve.
    """
    if not contains_interpolation(cfg):
        return copy.deepcopy(cfg)
    interpolations = Interpolations(root_of(cfg))
    prefix = path_of(cfg)

    def walk(value: Any, key: str) -> Any:
        if is_interpolation(value):
            return interpolations.value_at(key, value)
        join = (lambda k: f"{key}.{k}") if key else str
        if isinstance(value, dict):
            out = Config()
            for k, v in value.items():
                store(out, k, walk(v, join(k)))
            return out
        if isinstance(value, (list, tuple)):
            items = [walk(v, join(i)) for i, v in enumerate(value)]
            return tuple(items) if isinstance(value, tuple) else items
        return copy.deepcopy(value)

    return walk(cfg, prefix)
