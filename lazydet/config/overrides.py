"""Command-line overrides: sorted into experiment, group, Hydra and value overrides.

Group choices go to Hydra (``model.backbone=vit_b`` is read as ``model/backbone=vit_b``); value
overrides are applied by lazydet, checked against the target's signature like ``L(...)`` is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, did_you_mean
from .lazy import TARGET, Config, _target_signature, to_node
from .signature import check_key, check_value
from .tree import CONFIG_PATH_ENV, EXPERIMENT_GROUP, ConfigTree

__all__ = [
    "SplitOverrides",
    "apply_value_override",
    "override_choices",
    "override_values",
    "parse_overrides",
    "split_overrides",
]


@dataclass
class SplitOverrides:
    """Command-line overrides sorted by who applies them."""

    experiment: list[str]  # the values of conf=
    groups: list[str]  # group choices, in Hydra's slash form (model/backbone=vit_b)
    hydra: list[str]  # hydra.* keys and hydra/... groups: passed to Hydra untouched
    values: list[Any]  # parsed value overrides (hydra Override objects), applied by lazydet


def parse_overrides(overrides: Iterable[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except OverrideParseException as e:
            raise ConfigError(f"Cannot parse the override '{text}': {e}") from None
    return parsed


def override_choices(override: Any) -> list[str]:
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()]
    value = override.value()
    return [str(value)] if value is not None else ["null"]


def split_overrides(overrides: Iterable[str], tree: ConfigTree) -> SplitOverrides:
    """Classify overrides and turn ``model.backbone=vit_b`` into ``model/backbone=vit_b``.

    Group choices are checked here: an unknown option fails with the group's options.
    """
    out = SplitOverrides([], [], [], [])
    groups = tree.groups()
    for text, override in zip(overrides, parse_overrides(overrides)):
        key = override.key_or_group
        if key == "hydra.searchpath":
            # Hydra would replace lazydet's own search path with it and lose lazydet's conf/.
            raise ConfigError(
                f"'{text}': lazydet builds hydra.searchpath itself; add your config directories "
                f"with {CONFIG_PATH_ENV}=dir1{os.pathsep}dir2 instead."
            )
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            out.hydra.append(text)
            continue
        if override.package is not None:
            raise ConfigError(f"'{text}': package overrides (@pkg) are not supported by lazydet.")
        group = key.replace(".", "/")
        if key == EXPERIMENT_GROUP:
            if override.is_delete() or override.is_add():
                raise ConfigError(f"'{text}': choose an experiment with conf=NAME.")
            for name in override_choices(override):
                tree.experiment_file(name)
            out.experiment.append(text)
        elif group in groups:
            for option in [] if override.is_delete() else override_choices(override):
                if option != "null":
                    tree.option_file(group, option)
            value_text = text.split("=", 1)[1] if "=" in text else ""
            prefix = "~" if override.is_delete() else ("+" if override.is_add() else "")
            if override.is_force_add():
                prefix = "++"
            out.groups.append(
                f"{prefix}{group}={value_text}" if "=" in text else f"{prefix}{group}"
            )
        else:
            out.values.append(override)
    return out


def _navigate(tree: Any, keys: list[str], full_key: str) -> Any:
    node = tree
    for i, key in enumerate(keys):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            where = ".".join(keys[:i]) or "the config"
            options = list(node.keys()) if isinstance(node, dict) else []
            raise ConfigError(
                f"Override '{full_key}': '{where}' has no key '{key}'.{did_you_mean(key, options)}"
            )
    return node


def apply_value_override(cfg: Config, override: Any, value: Any) -> None:
    """Apply one parsed ``key=value`` / ``+key=value`` / ``++key=value`` / ``~key`` to ``cfg``.

    Keys are checked against the target's signature the way ``L(...)`` checks them.
    """
    key = override.key_or_group
    parts = key.split(".")
    parent = _navigate(cfg, parts[:-1], key)
    leaf = parts[-1]
    shown = override.input_line or key
    if not isinstance(parent, dict):
        raise ConfigError(f"Override '{shown}': '{'.'.join(parts[:-1])}' is not a mapping.")
    target = parent.get(TARGET)
    sig = None
    if isinstance(target, str):
        sig = _target_signature(target)
    exists = leaf in parent
    if override.is_delete():
        if not exists:
            raise ConfigError(f"Override '{shown}': there is no '{key}' to delete.")
        dict.__delitem__(parent, leaf)
        return
    if sig is not None and not (leaf.startswith("_") and leaf.endswith("_")):
        check_key(sig, leaf, where=f"Override '{shown}'")
    if override.is_add() and not override.is_force_add() and exists:
        raise ConfigError(f"Override '{shown}': '{key}' is already set; drop the '+' to change it.")
    if not exists and not override.is_add():
        if sig is not None:
            raise ConfigError(
                f"Override '{shown}': '{leaf}' is an argument of {target} that the config does not "
                f"set yet; write +{key}=... to add it."
            )
        raise ConfigError(
            f"Override '{shown}': '{key}' is not in the config."
            f"{did_you_mean(leaf, [k for k in parent if isinstance(k, str)])} "
            f"Write +{key}=... to add a new key."
        )
    node_value = to_node(value, where=key)
    if sig is not None:
        check_value(sig, leaf, node_value, where=f"Override '{shown}'")
    dict.__setitem__(parent, leaf, node_value)


def override_values(override: Any) -> list[Any]:
    if override.is_sweep_override():
        return list(override.sweep_iterator())
    return [override.value()]
