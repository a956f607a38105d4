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
is validated before anything is built.
"""

from __future__ import annotations

import ast
import copy
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from omegaconf import OmegaConf

from .errors import ConfigError, did_you_mean
from .files import load
from .lazy import TARGET, Config, to_node
from .serialize import from_container, to_container
from .signature import MISSING_VALUE, check_key, check_value
from .validate import validate

__all__ = [
    "CONFIG_PATH_ENV",
    "PRIMARY_CONFIG",
    "ConfigTree",
    "LazydetConfigSource",
    "compose",
    "config_roots",
    "register_with_hydra",
    "split_overrides",
]

CONFIG_PATH_ENV = "LAZYDET_CONFIG_PATH"
PRIMARY_CONFIG = "lazydet"
EXPERIMENT_GROUP = "conf"
SCHEME = "lazydet"


# ------------------------------------------------------------------------------------------------
# The tree of config directories


def builtin_config_root() -> Path:
    import lazydet.conf

    return Path(lazydet.conf.__file__).resolve().parent


def config_roots() -> list[Path]:
    """Config directories, highest priority first: ``LAZYDET_CONFIG_PATH`` entries, then lazydet's."""
    roots = []
    for entry in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep):
        if not entry.strip():
            continue
        path = Path(entry).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(
                f"{CONFIG_PATH_ENV} names '{entry}', which is not a directory. Point it at a folder "
                "of config files (experiments at its top, groups in sub-folders)."
            )
        roots.append(path)
    roots.append(builtin_config_root())
    return roots


def _is_public(name: str) -> bool:
    return not name.startswith(("_", "."))


def _py_options(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.py") if _is_public(p.stem))


@dataclass(frozen=True)
class ConfigTree:
    """The experiments and groups found in a list of config directories (no file is executed)."""

    roots: tuple[Path, ...]

    @classmethod
    def from_environment(cls) -> ConfigTree:
        return cls(tuple(config_roots()))

    def experiments(self) -> list[str]:
        return sorted({name for root in self.roots for name in _py_options(root)})

    def experiment_file(self, name: str) -> Path:
        for root in self.roots:
            path = root / f"{name}.py"
            if path.is_file() and _is_public(name):
                return path
        raise ConfigError(
            f"No experiment '{name}' (conf={name}).{did_you_mean(name, self.experiments())} "
            f"Experiments: {', '.join(self.experiments()) or '(none)'}; searched "
            f"{', '.join(str(r) for r in self.roots)}."
        )

    def groups(self) -> dict[str, list[str]]:
        """``{"model/backbone": ["resnet50", "vit_b", ...], ...}`` over all roots."""
        found: dict[str, set[str]] = {}
        for root in self.roots:
            for folder in sorted(root.rglob("*")):
                if not folder.is_dir():
                    continue
                rel = folder.relative_to(root)
                if not all(_is_public(part) for part in rel.parts):
                    continue
                options = _py_options(folder)
                if options:
                    found.setdefault(rel.as_posix(), set()).update(options)
        return {group: sorted(options) for group, options in sorted(found.items())}

    def is_group(self, group: str) -> bool:
        return any((root / group).is_dir() and _py_options(root / group) for root in self.roots)

    def option_file(self, group: str, option: str) -> Path:
        for root in self.roots:
            path = root / group / f"{option}.py"
            if path.is_file() and _is_public(option):
                return path
        options = self.groups().get(group, [])
        raise ConfigError(
            f"Group '{group}' has no option '{option}'.{did_you_mean(option, options)} "
            f"Options: {', '.join(options) or '(none)'}."
        )

    def describe(self, path: Path) -> str:
        """The first line of a config file's docstring, read without executing the file."""
        try:
            doc = ast.get_docstring(ast.parse(path.read_text()))
        except (SyntaxError, OSError):
            return ""
        return doc.strip().splitlines()[0] if doc else ""


# ------------------------------------------------------------------------------------------------
# Reading one file into what Hydra expects


def _content_of_file(path: Path) -> tuple[Config, Any]:
    """A config file's values, and its ``defaults`` (taken out: they are Hydra's, not the config's)."""
    values = load(path)
    defaults = values.pop("defaults", None)
    return values, defaults


def _hydra_defaults(defaults: Any, path: Path) -> list[Any]:
    """``{"model/backbone": "resnet50"}`` -> Hydra's ``["_self_", {"/model/backbone": "resnet50"}]``.

    ``_self_`` comes first: the file's own values are the base and the selected options fill the
    slots their groups own.
    """
    if defaults is None:
        return ["_self_"]
    if isinstance(defaults, dict):
        out: list[Any] = ["_self_"]
        for group, option in defaults.items():
            if not isinstance(group, str) or not isinstance(option, (str, type(None))):
                raise ConfigError(f"{path}: defaults must map group names to option names.")
            out.append({"/" + group.strip("/"): option})
        return out
    if isinstance(defaults, list):
        return list(defaults)
    raise ConfigError(f"{path}: 'defaults' must be a dict like {{'model/backbone': 'resnet50'}}.")


def _selected_groups(defaults: Any) -> list[str]:
    if isinstance(defaults, dict):
        return [g.strip("/") for g in defaults]
    if isinstance(defaults, list):
        return [next(iter(d)).strip("/") for d in defaults if isinstance(d, dict) and len(d) == 1]
    return []


def _check_owned_slots(content: dict, defaults: Any, path: Path) -> None:
    """A file may not fill a slot that a group it selects owns: that would merge two configs."""
    for group in _selected_groups(defaults):
        node: Any = content
        for key in group.split("/"):
            if not isinstance(node, dict) or key not in node:
                node = None
                break
            node = node[key]
        if node is not None and node != MISSING_VALUE:
            key = group.replace("/", ".")
            raise ConfigError(
                f"{path} sets '{key}', but its defaults select the group '{group}', which owns that "
                f"slot. Write {key}=MISSING in the file and put the value in an option of "
                f"'{group}' (or drop '{group}' from defaults)."
            )


def load_experiment(tree: ConfigTree, name: str) -> tuple[Config, list[Any]]:
    path = tree.experiment_file(name)
    content, defaults = _content_of_file(path)
    _check_owned_slots(content, defaults, path)
    return content, _hydra_defaults(defaults, path)


def load_option(tree: ConfigTree, group: str, option: str) -> tuple[Any, list[Any]]:
    path = tree.option_file(group, option)
    content, defaults = _content_of_file(path)
    leaf = group.rsplit("/", 1)[-1]
    node = content.get(leaf, content)
    return node, _hydra_defaults(defaults, path)


# ------------------------------------------------------------------------------------------------
# Hydra plumbing


class LazydetConfigSource(ConfigSource):
    """Hydra ConfigSource for a directory of lazydet Python configs (``lazydet:///abs/dir``)."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    @property
    def tree(self) -> ConfigTree:
        return ConfigTree((Path(self.path),))

    def available(self) -> bool:
        return Path(self.path).is_dir()

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
        group, name = self._split(config_path)
        if not _is_public(name):
            return False
        root = Path(self.path)
        if group == EXPERIMENT_GROUP:
            return (root / f"{name}.py").is_file()
        return bool(group) and (root / group / f"{name}.py").is_file()

    def list(self, config_path: str, results_filter: Any) -> list[str]:
        config_path = config_path.strip("/")
        root = Path(self.path)
        groups: list[str] = []
        configs: list[str] = []
        if config_path == "":
            groups = [EXPERIMENT_GROUP] + [
                p.name for p in root.iterdir() if p.is_dir() and _is_public(p.name)
            ]
        elif config_path == EXPERIMENT_GROUP:
            configs = _py_options(root)
        else:
            folder = root / config_path
            if folder.is_dir():
                groups = [p.name for p in folder.iterdir() if p.is_dir() and _is_public(p.name)]
                configs = _py_options(folder)
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


def register_with_hydra(tree: ConfigTree | None = None) -> ConfigTree:
    """Register the ``lazydet://`` source and the primary config ``lazydet`` with Hydra.

    Safe to call repeatedly; the primary config is re-stored so that a change of
    ``LAZYDET_CONFIG_PATH`` takes effect.
    """
    from hydra._internal.sources_registry import SourcesRegistry
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    tree = tree or ConfigTree.from_environment()
    SourcesRegistry.instance().register(LazydetConfigSource)
    if not OmegaConf.has_resolver("lazydet_launch_id"):
        OmegaConf.register_new_resolver("lazydet_launch_id", _launch_id, use_cache=True)
    ConfigStore.instance().store(
        name=PRIMARY_CONFIG,
        node={
            "defaults": ["_self_", {EXPERIMENT_GROUP: MISSING_VALUE}],
            "hydra": {
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


# ------------------------------------------------------------------------------------------------
# Overrides


@dataclass
class SplitOverrides:
    """Command-line overrides sorted by who applies them."""

    experiment: list[str]  # the values of conf=
    groups: list[str]  # group choices, in Hydra's slash form (model/backbone=vit_b)
    hydra: list[str]  # hydra.* keys and hydra/... groups: passed to Hydra untouched
    values: list[Any]  # parsed value overrides (hydra Override objects), applied by lazydet


def _parse(overrides: Iterable[str]) -> list[Any]:
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


def _choices(override: Any) -> list[str]:
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
    for text, override in zip(overrides, _parse(overrides)):
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
            for name in _choices(override):
                tree.experiment_file(name)
            out.experiment.append(text)
        elif group in groups:
            for option in [] if override.is_delete() else _choices(override):
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
        from .lazy import _target_signature

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


def _override_values(override: Any) -> list[Any]:
    if override.is_sweep_override():
        return list(override.sweep_iterator())
    return [override.value()]


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
        The composed :class:`Config` (and Hydra's DictConfig if asked).
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode
    from omegaconf import OmegaConf

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
    hydra_overrides = [f"{EXPERIMENT_GROUP}={name}", *split.groups, *split.hydra]
    if allow_sweeps:
        hydra_overrides = [_first_choice(o) for o in hydra_overrides]
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(None))
    try:
        composed = loader.load_configuration(
            config_name=PRIMARY_CONFIG,
            overrides=hydra_overrides,
            run_mode=RunMode.RUN,
            from_shell=False,
            validate_sweep_overrides=False,
        )
    except Exception as e:
        raise ConfigError(_hydra_error_message(e)) from None
    body = OmegaConf.to_container(composed, resolve=False)
    body.pop("hydra", None)
    cfg = from_container(body)
    for override in split.values:
        values = _override_values(override) if allow_sweeps else [override.value()]
        for value in values[1:]:
            apply_value_override(copy.deepcopy(cfg), override, value)
        apply_value_override(cfg, override, values[0])
    cfg = _resolve_interpolations(cfg)
    if check:
        validate(cfg, missing_hint=_missing_hint(tree))
    if return_hydra_config:
        return cfg, composed
    return cfg


def _first_choice(text: str) -> str:
    """``model/backbone=a,b`` -> ``model/backbone=a`` (sweeps are vetted one value at a time)."""
    (override,) = _parse([text])
    if not override.is_sweep_override():
        return text
    key = text.split("=", 1)[0]
    return f"{key}={_choices(override)[0]}"


def _resolve_interpolations(cfg: Config) -> Config:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    container = to_container(cfg)
    try:
        resolved = OmegaConf.to_container(OmegaConf.create(container), resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ConfigError(
            f"Cannot resolve an interpolation{f' at {key}' if key else ''}: {e.msg if hasattr(e, 'msg') else e}"
        ) from None
    return from_container(resolved)
