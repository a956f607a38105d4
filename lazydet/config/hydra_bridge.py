"""Hydra composes lazydet's Python config files.

Config directories (lazydet's own ``conf/``, installed as ``lazydet.conf``, and any directory named
in ``LAZYDET_CONFIG_PATH``) hold:

- experiments: the top-level ``*.py`` files, the options of ``conf=``;
- groups: folders whose ``*.py`` files are options that own one subtree: ``model/backbone/vit_b.py``
  fills ``model.backbone``.

An experiment declares the group options it starts from in a ``defaults`` dict and leaves the
slots those groups own as ``MISSING``::

    defaults = {"model/backbone": "resnet50", "optimizer": "sgd"}
    model = L(GeneralizedRCNN)(backbone=MISSING, ...)

A group option file defines its content under the group's last name (``backbone = L(...)`` in
``model/backbone/*.py``), or else all its public top-level values form the content.

Hydra reads these files through :class:`LazydetConfigSource` (scheme ``lazydet://``), which
executes only the files the defaults list and the overrides select. What lazydet adds on top of
Hydra: ``model.backbone=vit_b`` selects the group option (Hydra would set a string); a group
option replaces its subtree (a parent that also fills the slot is an error, not a silent merge);
value overrides are checked against the target's signature ("did you mean"); the composed config
is validated before anything is built. ``${...}`` interpolations are kept live in the composed
config and resolved when it is built (see :mod:`lazydet.config.interpolation`).
"""

from __future__ import annotations

import copy
import os
import secrets
from pathlib import Path
from typing import Any

from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from omegaconf import OmegaConf

from .errors import ConfigError
from .lazy import Config
from .overrides import (
    apply_value_override,
    override_choices,
    override_values,
    parse_overrides,
    split_overrides,
)
from .serialize import from_container, to_container
from .signature import MISSING_VALUE
from .tree import (
    CONFIG_PATH_ENV,
    EXPERIMENT_GROUP,
    ConfigTree,
    builtin_config_root,
    is_public_name,
    load_experiment,
    load_option,
    option_names,
)
from .validate import validate

__all__ = [
    "CONFIG_PATH_ENV",
    "EXPERIMENT_GROUP",
    "PRIMARY_CONFIG",
    "ConfigTree",
    "LazydetConfigSource",
    "builtin_config_root",
    "compose",
    "register_with_hydra",
    "split_overrides",
]

PRIMARY_CONFIG = "lazydet"
# Hydra's default job-logging format, for the console (its stdout option prints bare messages).
HYDRA_CONSOLE_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
SCHEME = "lazydet"


class LazydetConfigSource(ConfigSource):
    """Hydra ConfigSource for a directory of lazydet Python configs (``lazydet:///abs/dir``)."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    @property
    def tree(self) -> ConfigTree:
        return ConfigTree((Path(self.path),))

    def available(self) -> bool:
        return Path(self.path).is_dir() or Path(self.path).suffix == ".py"

    @staticmethod
    def _split(config_path: str) -> tuple[str, str]:
        config_path = config_path.strip("/")
        if config_path.endswith(".yaml"):
            config_path = config_path[: -len(".yaml")]
        group, _, name = config_path.rpartition("/")
        return group, name

    def is_group(self, config_path: str) -> bool:
        config_path = config_path.strip("/")
        if config_path in ("", EXPERIMENT_GROUP):
            return True
        return self.tree.is_group(config_path)

    def is_config(self, config_path: str) -> bool:
        return self.tree.config_file(*self._split(config_path)) is not None

    def list(self, config_path: str, results_filter: Any) -> list[str]:
        config_path = config_path.strip("/")
        root = Path(self.path)
        groups: list[str] = []
        configs: list[str] = []
        if root.suffix == ".py":  # a single experiment file: conf=path/to/exp.py
            groups = [EXPERIMENT_GROUP] if config_path == "" else []
            configs = option_names(root) if config_path == EXPERIMENT_GROUP else []
        elif config_path == "":
            groups = [EXPERIMENT_GROUP] + [
                p.name for p in root.iterdir() if p.is_dir() and is_public_name(p.name)
            ]
        elif config_path == EXPERIMENT_GROUP:
            configs = option_names(root)
        else:
            folder = root / config_path
            if folder.is_dir():
                groups = [p.name for p in folder.iterdir() if p.is_dir() and is_public_name(p.name)]
                configs = option_names(folder)
        out = []
        if results_filter in (None, ObjectType.GROUP):
            out += groups
        if results_filter in (None, ObjectType.CONFIG):
            out += configs
        return sorted(set(out))

    def load_config(self, config_path: str) -> Any:
        group, name = self._split(config_path)
        try:
            if group == EXPERIMENT_GROUP:
                content, defaults = load_experiment(self.tree, name)
                header = {"package": "_global_"}
            else:
                content, defaults = load_option(self.tree, group, name)
                header = {"package": None}
        except ConfigError as e:
            # Hydra re-wraps errors; keep ours reachable through __cause__.
            raise ConfigLoadError(str(e)) from e
        container = to_container(content)
        if not isinstance(container, dict):
            raise ConfigLoadError(
                f"{config_path}: a group option must define a mapping or an L(...) node; "
                f"got {type(container).__name__}."
            )
        container["defaults"] = defaults
        return ConfigResult(
            provider=self.provider,
            path=f"{self.scheme()}://{self.path}",
            config=OmegaConf.create(container),
            header=header,
        )


def _launch_id() -> str:
    # Distinguishes two multiruns started in the same second (also from two processes).
    return f"{os.getpid()}-{secrets.token_hex(2)}"


# Set by the command line for the Hydra run it starts (see ``set_launch_options``).
_LAUNCH: dict[str, Any] = {"callbacks": {}, "experiment": MISSING_VALUE}


def set_launch_options(*, callbacks: dict[str, Any], experiment: str | None) -> None:
    """Hydra callbacks, and the experiment Hydra composes its master config from, for one run.

    In a multirun Hydra composes a master config without the sweep overrides; with ``conf=a,b``
    that master has no experiment, so the groups the experiments select are unknown and every
    group override fails ("Could not override 'dataset'"). Naming the sweep's first experiment
    as the default fixes that; each job still composes its own experiment.
    """
    _LAUNCH["callbacks"] = dict(callbacks)
    _LAUNCH["experiment"] = experiment or MISSING_VALUE


def register_with_hydra(tree: ConfigTree | None = None) -> ConfigTree:
    """Register the ``lazydet://`` source and the primary config ``lazydet`` with Hydra.

    Safe to call repeatedly; the primary config is re-stored so that a change of
    ``LAZYDET_CONFIG_PATH`` takes effect.
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from .hydra_private import register_config_source

    tree = tree or ConfigTree.from_environment()
    register_config_source(LazydetConfigSource)
    if not OmegaConf.has_resolver("lazydet_launch_id"):
        OmegaConf.register_new_resolver("lazydet_launch_id", _launch_id, use_cache=True)
    ConfigStore.instance().store(
        name=PRIMARY_CONFIG,
        node={
            # One log file per run: lazydet's log.txt (lazydet.utils.logging, one per rank).
            # Hydra's job logging keeps its console and its line format, without its file.
            "defaults": [
                "_self_",
                {EXPERIMENT_GROUP: _LAUNCH["experiment"]},
                {"override hydra/job_logging": "stdout"},
            ],
            "hydra": {
                "job_logging": {"formatters": {"simple": {"format": HYDRA_CONSOLE_FORMAT}}},
                "callbacks": _LAUNCH["callbacks"],
                "searchpath": [f"{SCHEME}://{root}" for root in tree.roots],
                "job": {"chdir": False},
                "run": {"dir": "outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}"},
                "sweep": {
                    "dir": "multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}_${lazydet_launch_id:}",
                    "subdir": "${hydra.job.num}",
                },
            },
        },
    )
    return tree


def _hydra_error_message(error: BaseException) -> str:
    seen = error
    while seen is not None:
        if isinstance(seen, ConfigError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return f"{type(error).__name__}: {error}"


def _missing_hint(tree: ConfigTree) -> Any:
    groups = tree.groups()

    def hint(path: str) -> str:
        group = path.replace(".", "/")
        if group in groups:
            return f"Choose an option: {group}=<{'|'.join(groups[group])}>."
        return "Set it, e.g. on the command line with KEY=VALUE."

    return hint


def compose(
    name: str,
    overrides: list[str] | None = None,
    *,
    check: bool = True,
    allow_sweeps: bool = False,
    return_hydra_config: bool = False,
) -> Any:
    """Compose the experiment ``name`` and apply ``overrides``, as ``lazydet.train`` does.

    Args:
        name: an experiment, i.e. the name of a top-level file of a config directory.
        overrides: Hydra override strings: group choices (``model/backbone=vit_b`` or
            ``model.backbone=vit_b``), value changes (``optimizer.lr=0.02``), additions
            (``+model.foo=1``) and deletions (``~model.foo``).
        check: validate the composed config (targets, arguments, types, MISSING, refs).
        allow_sweeps: accept sweep overrides (``a=1,2``) and check every value they name; the
            first value is applied. The CLI uses this to vet a multirun before launching it.
        return_hydra_config: also return Hydra's composed DictConfig (with its ``hydra`` node).

    Returns:
        The composed :class:`Config` (and Hydra's DictConfig if asked). Interpolations in it are
        live: ``instantiate`` resolves them, ``resolve(cfg)`` gives a resolved copy.
    """
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from .hydra_private import config_loader

    overrides = list(overrides or [])
    tree = register_with_hydra()
    tree.experiment_file(name)
    split = split_overrides(overrides, tree)
    if split.experiment:
        raise ConfigError(
            f"compose('{name}', ...) got {split.experiment[0]!r}: the experiment is the first argument."
        )
    sweeps = [o.input_line for o in split.values if o.is_sweep_override()]
    if sweeps and not allow_sweeps:
        raise ConfigError(
            f"'{sweeps[0]}' is a sweep (several values); run it with -m (multirun) to launch one "
            "job per value."
        )
    groups = group_overrides_for(tree, name, split.groups)
    hydra_overrides = [f"{EXPERIMENT_GROUP}={name}", *groups, *split.hydra]
    if allow_sweeps:
        hydra_overrides = [_first_choice(o, tree) for o in hydra_overrides]
    loader = config_loader()
    try:
        composed = loader.load_configuration(
            config_name=PRIMARY_CONFIG,
            overrides=hydra_overrides,
            run_mode=RunMode.RUN,
            from_shell=False,
            validate_sweep_overrides=False,
        )
    except Exception as e:
        raise ConfigError(_composition_message(_hydra_error_message(e), name)) from None
    body = OmegaConf.to_container(composed, resolve=False)
    body.pop("hydra", None)
    cfg = from_container(body)
    for override in split.values:
        values = override_values(override) if allow_sweeps else [override.value()]
        for value in values[1:]:
            apply_value_override(copy.deepcopy(cfg), override, value)
        apply_value_override(cfg, override, values[0])
    # Interpolations stay live (resolved when the config is built); validate checks them.
    if check:
        try:
            validate(cfg, missing_hint=_missing_hint(tree))
        except ConfigError as e:
            removed = [g.lstrip("~") for g in groups if g.startswith("~")]
            raise ConfigError(_removed_group_message(cfg, removed) or str(e)) from None
    if return_hydra_config:
        return cfg, composed
    return cfg


def _first_choice(text: str, tree: ConfigTree) -> str:
    """``model/backbone=a,b`` -> ``model/backbone=a`` (sweeps are vetted one value at a time)."""
    (override,) = parse_overrides([text])
    if not override.is_sweep_override():
        return text
    key = text.split("=", 1)[0]
    options = tree.groups().get(override.key_or_group)
    return f"{key}={override_choices(override, options)[0]}"


def group_overrides_for(tree: ConfigTree, name: str, groups: list[str]) -> list[str]:
    """``++group=option`` means add-or-choose: Hydra has no ``++`` for groups, so pick ``+`` or
    the plain form by whether the experiment's defaults already select the group."""
    if not any(g.startswith("++") for g in groups):
        return groups
    _, defaults = load_experiment(tree, name)
    selected = {next(iter(d)).strip("/") for d in defaults if isinstance(d, dict) and len(d) == 1}
    out = []
    for text in groups:
        if text.startswith("++"):
            group = text[2:].split("=", 1)[0]
            text = text[2:] if group in selected else text[1:]
        out.append(text)
    return out


def _composition_message(message: str, name: str) -> str:
    """Hydra's "No match in the defaults list" in lazydet's words."""
    import re

    match = re.search(r"Could not override '([^']+)'\. No match in the defaults list", message)
    if not match:
        return message
    group = match.group(1)
    return (
        f"conf={name} does not choose an option of the group '{group}' in its defaults (a saved "
        f"config.py holds every value inline), so '{group}=...' has nothing to replace. "
        f"Override values instead ({group.replace('/', '.')}.KEY=VALUE), or run the experiment "
        "the file was saved from (its .hydra/overrides.yaml) with this choice."
    )


def _removed_group_message(cfg: Config, removed: list[str]) -> str:
    """One line for ``dataset=null`` when other keys still interpolate the removed slot."""
    from .diff import flatten

    for group in removed:
        slot = group.replace("/", ".")
        users = sorted(
            key
            for key, value in flatten(cfg).items()
            if (isinstance(value, str) and f"${{{slot}." in value) or value == f"${{{slot}}}"
        )
        if users:
            shown = ", ".join(users[:3]) + (f" and {len(users) - 3} more" if len(users) > 3 else "")
            return (
                f"{group}=null removes '{slot}', but {shown} refer to it (${{{slot}...}}). "
                f"Choose an option of {group} instead, or override those keys too."
            )
    return ""
