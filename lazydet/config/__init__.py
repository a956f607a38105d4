"""lazydet's config system: deferred call graphs in Python files, composed by Hydra.

>>> from lazydet.config import L, instantiate
>>> import torch
>>> cfg = L(torch.nn.Linear)(in_features=4, out_features=2)
>>> layer = instantiate(cfg)

See the README's config guide for files, groups, overrides, ``ref`` and saving.
"""

from .diff import diff, flatten
from .errors import ConfigError, InstantiationError
from .files import load
from .instantiate import instantiate
from .interpolation import contains_interpolation, resolve
from .lazy import MISSING, Config, L, LazyCall, is_node, ref
from .paths import import_path, locate
from .safe_targets import SAFE_TARGETS
from .serialize import format_node, from_container, save, to_container, to_py, to_yaml
from .validate import validate

__all__ = [
    "MISSING",
    "SAFE_TARGETS",
    "Config",
    "ConfigError",
    "InstantiationError",
    "L",
    "LazyCall",
    "apply_overrides",
    "compose",
    "diff",
    "flatten",
    "format_node",
    "from_container",
    "import_path",
    "instantiate",
    "is_node",
    "load",
    "locate",
    "ref",
    "resolve",
    "save",
    "select",
    "select_resolved",
    "to_container",
    "to_py",
    "to_yaml",
    "validate",
]


def compose(name: str, overrides: list[str] | tuple[str, ...] = (), **kwargs):
    """Compose experiment ``name`` (an option of ``conf=``) with Hydra and apply ``overrides``.

    Same semantics as ``python -m lazydet.train conf=NAME OVERRIDES...``; see
    :func:`lazydet.config.hydra_bridge.compose`.
    """
    from .hydra_bridge import compose as _compose

    return _compose(name, list(overrides), **kwargs)


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...], **kwargs) -> Config:
    """Apply command-line style overrides to ``cfg`` in place, with the CLI's semantics.

    ``apply_overrides(cfg, ["model.backbone=vit_b", "optimizer.lr=0.01"])``; see
    :func:`lazydet.config.overrides.apply_overrides`.
    """
    from .overrides import apply_overrides as _apply

    return _apply(cfg, list(overrides), **kwargs)


def select(cfg: object, key: str) -> object:
    """The value at dotted ``key`` of ``cfg`` (``"train.init_checkpoint"``), or ``None`` where
    any part of the path is missing or not a mapping (a config-level ``OmegaConf.select``)."""
    node = cfg
    for part in key.split("."):
        node = node.get(part) if hasattr(node, "get") else None
        if node is None:
            return None
    return node


def select_resolved(cfg: object, key: str) -> object:
    """``select(cfg, key)`` with its ``${...}`` resolved against the whole config (a
    ``dataset=coco_json`` run names its test set by an interpolation that registers it)."""
    value = select(cfg, key)
    if not contains_interpolation(value):
        return value
    parent_key, _, last = key.rpartition(".")
    parent = select(cfg, parent_key) if parent_key else cfg
    return resolve(parent).get(last)
