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
from .lazy import TARGET, Config, _target_signature, store, to_node
from .signature import check_key, check_value, type_mismatch
from .tree import CONFIG_PATH_ENV, EXPERIMENT_GROUP, ConfigTree

__all__ = [
    "SplitOverrides",
    "apply_overrides",
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


def _sweep_kind(override: Any) -> str:
    from hydra.core.override_parser.types import ValueType

    return {
        ValueType.GLOB_CHOICE_SWEEP: "glob",
        ValueType.INTERVAL_SWEEP: "interval",
    }.get(override.value_type, "")


def override_choices(override: Any, options: list[str] | None = None) -> list[str]:
    """The values a (sweep) override names, as text; ``glob(...)`` picks among ``options``."""
    kind = _sweep_kind(override)
    if kind == "glob":
        if options is None:
            raise ConfigError(
                f"'{override.input_line}': glob(...) chooses among the options of a group; "
                f"'{override.key_or_group}' is not a group. List the values: key=a,b,c."
            )
        chosen = override.value().filter(options)
        if not chosen:
            raise ConfigError(
                f"'{override.input_line}' matches no option of '{override.key_or_group}'. "
                f"Options: {', '.join(options)}."
            )
        return chosen
    if kind == "interval":
        raise ConfigError(
            f"'{override.input_line}': interval(...) is a search range for a sweeper plugin such "
            "as Optuna (hydra/sweeper=optuna); the basic sweeper cannot list its values. Use "
            "range(start,stop,step) or a list a,b,c, or choose such a sweeper."
        )
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
            for option in [] if override.is_delete() else override_choices(override, groups[group]):
                if option != "null":
                    tree.option_file(group, option)
            value_text = text.split("=", 1)[1] if "=" in text else ""
            prefix = "~" if override.is_delete() else ("+" if override.is_add() else "")
            if override.is_force_add():
                prefix = "++"
            if not override.is_delete() and override.value() is None:
                # dataset=null: no option for the group. Hydra spells that ~dataset.
                out.groups.append(f"~{group}")
            else:
                out.groups.append(
                    f"{prefix}{group}={value_text}" if "=" in text else f"{prefix}{group}"
                )
        else:
            _refuse_group_without_parent(text, override, groups)
            out.values.append(override)
    return out


def _refuse_group_without_parent(text: str, override: Any, groups: dict[str, list[str]]) -> None:
    """``backbone=resnet50``: a group named without its parent (``model/backbone``) is the
    usual slip; say the full name rather than "'backbone' is not in the config".

    Only when the value names options of that group, so a key of the config that happens to end
    like a group is left alone.
    """
    if override.is_delete() or "=" not in text:
        return
    key = override.key_or_group.replace(".", "/")
    parents = [g for g in groups if g.endswith("/" + key)]
    for group in parents:
        try:
            choices = override_choices(override, groups[group])
        except ConfigError:
            continue
        if choices and all(c in groups[group] or c == "null" for c in choices):
            value = text.split("=", 1)[1]
            dotted = group.replace("/", ".")
            raise ConfigError(
                f"'{text}': '{override.key_or_group}' is the group {dotted} (options: "
                f"{', '.join(groups[group])}); write {dotted}={value}."
            )


def _navigate(tree: Any, keys: list[str], full_key: str, *, create: bool = False) -> Any:
    node = tree
    for i, key in enumerate(keys):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, (list, tuple)) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        elif create and isinstance(node, dict) and TARGET not in node:
            # +a.b.c=1 makes the plain dicts on the way, as Hydra does.
            store(node, key, Config())
            node = node[key]
        else:
            where = ".".join(keys[:i]) or "the config"
            if isinstance(node, (list, tuple)):
                raise ConfigError(
                    f"Override '{full_key}': '{where}' is a list of {len(node)} items; "
                    f"'{key}' is not an index of it (0..{len(node) - 1})."
                )
            options = list(node.keys()) if isinstance(node, dict) else []
            raise ConfigError(
                f"Override '{full_key}': '{where}' has no key '{key}'.{did_you_mean(key, options)}"
            )
    return node


def _set_list_item(cfg: Config, override: Any, parts: list[str], value: Any) -> None:
    """``in_features.0=p3``: replace one item, then check the whole list against its owner."""
    key = override.key_or_group
    shown = override.input_line or key
    seq = _navigate(cfg, parts[:-1], key)
    index = parts[-1]
    if override.is_delete() or override.is_add() or override.is_force_add():
        raise ConfigError(
            f"Override '{shown}': lists take KEY.INDEX=VALUE only; to add or remove items, "
            f"give the whole list: {'.'.join(parts[:-1])}=[a,b,c]."
        )
    if not index.isdigit() or int(index) >= len(seq):
        raise ConfigError(
            f"Override '{shown}': '{'.'.join(parts[:-1])}' has {len(seq)} items; "
            f"'{index}' is not an index of it (0..{len(seq) - 1})."
        )
    items = list(seq)
    items[int(index)] = to_node(value, where=key)
    owner = _navigate(cfg, parts[:-2], key)
    new = type(seq)(items) if isinstance(seq, tuple) else items
    if isinstance(owner, dict):
        target = owner.get(TARGET)
        sig = _target_signature(target) if isinstance(target, str) else None
        if sig is not None:
            check_value(sig, parts[-2], new, where=f"Override '{shown}'")
        store(owner, parts[-2], new)
    else:
        owner[int(parts[-2])] = new


def apply_value_override(cfg: Config, override: Any, value: Any) -> None:
    """Apply one parsed ``key=value`` / ``+key=value`` / ``++key=value`` / ``~key`` to ``cfg``.

    Keys are checked against the target's signature the way ``L(...)`` checks them. ``++`` adds
    the key or changes it (Hydra's meaning); ``a.0=x`` changes one item of a list.
    """
    key = override.key_or_group
    parts = key.split(".")
    shown = override.input_line or key
    if len(parts) > 1 and isinstance(_navigate_or_none(cfg, parts[:-1]), (list, tuple)):
        _set_list_item(cfg, override, parts, value)
        return
    # Hydra's Override.is_add() is False for ++ (force-add): ++ may add as well as change.
    adding = override.is_add() or override.is_force_add()
    parent = _navigate(cfg, parts[:-1], key, create=adding and not override.is_delete())
    leaf = parts[-1]
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
    if override.is_add() and exists:
        raise ConfigError(
            f"Override '{shown}': '{key}' is already set; drop the '+' to change it "
            "(or write ++ to add or change)."
        )
    if not exists and not adding:
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
    elif exists and not override.is_force_add():
        _check_plain_value(parent[leaf], node_value, shown=shown, key=key)
    store(parent, leaf, node_value)


def _check_plain_value(old: Any, new: Any, *, shown: str, key: str) -> None:
    """A key of a plain mapping (no ``_target_``: ``schedule.max_iter``, ``dataset.num_classes``)
    that holds a number or a bool keeps its kind: the code that reads it has no signature to be
    checked against, so the value the config wrote is the type. ``++key=...`` replaces freely."""
    if isinstance(old, bool):
        expected: type = bool
    elif isinstance(old, int):
        expected = int
    elif isinstance(old, float):
        expected = float
    else:
        return  # a string, a node, None: any value may replace it
    reason = type_mismatch(new, expected)
    if reason:
        raise ConfigError(
            f"Override '{shown}': '{key}' holds {type(old).__name__} {old!r} and is read as "
            f"one; got {new!r} ({reason}). Give a {_kind_name(expected)}, e.g. {key}={old!r} "
            f"(or ++{key}=... to replace it with a value of another type)."
        )


def _kind_name(kind: type) -> str:
    return {bool: "boolean (true/false)", int: "whole number", float: "number"}[kind]


def _navigate_or_none(cfg: Any, keys: list[str]) -> Any:
    try:
        return _navigate(cfg, keys, ".".join(keys))
    except ConfigError:
        return None


def override_values(override: Any) -> list[Any]:
    if _sweep_kind(override) == "glob":
        override_choices(override)  # raises: glob(...) is for group options only
    if _sweep_kind(override) == "interval":
        # A sweeper plugin draws from the range: vet its two ends.
        sweep = override.value()
        return [sweep.start, sweep.end]
    if override.is_sweep_override():
        return list(override.sweep_iterator())
    return [override.value()]


def apply_overrides(
    cfg: Config, overrides: Iterable[str], *, tree: ConfigTree | None = None
) -> Config:
    """Apply command-line style overrides to any config (a notebook's, a loaded file's), in place.

    The same semantics as ``python -m lazydet.train``: ``optimizer.lr=0.01`` changes a value
    (checked against the target's signature), ``+key=v`` adds, ``++key=v`` adds or changes,
    ``~key`` removes, ``a.0=x`` changes a list item, and ``model.backbone=vit_b`` (or
    ``model/backbone=vit_b``) replaces the subtree with that option of the group, as composing
    with it would; ``dataset=null`` removes the group's subtree. Every override is checked before
    any is applied, so a bad one leaves ``cfg`` unchanged. Returns ``cfg``.
    """
    import copy

    overrides = list(overrides)
    tree = tree or ConfigTree.from_environment()
    trial = copy.deepcopy(cfg)
    _apply_all(trial, overrides, tree)
    _apply_all(cfg, overrides, tree)
    return cfg


def _apply_all(cfg: Config, overrides: list[str], tree: ConfigTree) -> None:
    from .tree import load_option

    split = split_overrides(overrides, tree)
    if split.experiment or split.hydra:
        raise ConfigError(
            f"apply_overrides: {(split.experiment + split.hydra)[0]!r} only means something when "
            "composing (compose(name, overrides) or the command line)."
        )
    for text, override in zip(split.groups, parse_overrides(split.groups)):
        if override.is_sweep_override():
            raise ConfigError(f"'{text}' is a sweep; apply one value at a time.")
        group = override.key_or_group
        keys = group.split("/")
        parent = _navigate(cfg, keys[:-1], group.replace("/", "."), create=True)
        if override.is_delete() or override.value() is None:
            if isinstance(parent, dict) and keys[-1] in parent:
                dict.__delitem__(parent, keys[-1])
            continue
        node, defaults = load_option(tree, group, str(override.value()))
        if len(defaults) > 1:
            raise ConfigError(
                f"'{text}': the option {group}={override.value()} selects further options in "
                "its defaults; compose the experiment with it instead of applying it."
            )
        if not isinstance(parent, dict):
            raise ConfigError(f"'{text}': '{'.'.join(keys[:-1])}' is not a mapping.")
        parent[keys[-1]] = node  # checked against the parent's signature like any assignment
    for override in split.values:
        if override.is_sweep_override():
            raise ConfigError(f"'{override.input_line}' is a sweep; apply one value at a time.")
        apply_value_override(cfg, override, override.value())
