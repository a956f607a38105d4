"""Config directories: which experiments and group options exist, and reading one file.

A config directory holds experiments (its top-level ``*.py`` files, the options of ``conf=``) and
groups (folders whose ``*.py`` files are options that fill one subtree: ``model/backbone/vit_b.py``
fills ``model.backbone``). Files whose names start with ``_`` are helpers, not options. Listing
reads names and docstrings only; a file is executed when a run selects it.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, did_you_mean
from .files import CONFIG_PATH_ENV, load
from .lazy import Config
from .signature import MISSING_VALUE

__all__ = [
    "CONFIG_PATH_ENV",
    "EXPERIMENT_GROUP",
    "ConfigTree",
    "builtin_config_root",
    "config_roots",
    "is_public_name",
    "load_experiment",
    "load_option",
    "option_names",
]

EXPERIMENT_GROUP = "conf"


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
        if not (path.is_dir() or (path.suffix == ".py" and path.is_file())):
            raise ConfigError(
                f"{CONFIG_PATH_ENV} names '{entry}', which is not a directory. Point it at a folder "
                "of config files (experiments at its top, groups in sub-folders), or at one "
                "experiment file (.py)."
            )
        roots.append(path)
    roots.append(builtin_config_root())
    return roots


def is_public_name(name: str) -> bool:
    """Names starting with ``_`` or ``.`` are helpers (``_steps.py``), not options or groups."""
    return not name.startswith(("_", "."))


def option_names(folder: Path) -> list[str]:
    """The config files of ``folder`` (without ``.py``), sorted; none if it does not exist.

    A root may be a single experiment file (``conf=path/to/exp.py``): its one option is its name.
    """
    if folder.suffix == ".py" and folder.is_file():
        return [folder.stem]
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.py") if is_public_name(p.stem))


@dataclass(frozen=True)
class ConfigTree:
    """The experiments and groups found in a list of config directories (no file is executed)."""

    roots: tuple[Path, ...]

    @classmethod
    def from_environment(cls) -> ConfigTree:
        return cls(tuple(config_roots()))

    def experiments(self) -> list[str]:
        return sorted({name for root in self.roots for name in option_names(root)})

    def config_file(self, group: str, name: str) -> Path | None:
        """The file of experiment ``name`` (``group`` is ``conf``) or of option ``group/name``.

        The first root that has it wins; None when no root does.
        """
        if not group or not is_public_name(name):
            return None
        for root in self.roots:
            if root.suffix == ".py":  # a single experiment file
                if group == EXPERIMENT_GROUP and root.stem == name and root.is_file():
                    return root
                continue
            folder = root if group == EXPERIMENT_GROUP else root / group
            path = folder / f"{name}.py"
            if path.is_file():
                return path
        return None

    def experiment_file(self, name: str) -> Path:
        path = self.config_file(EXPERIMENT_GROUP, name)
        if path is not None:
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
            if not root.is_dir():
                continue
            for folder in sorted(root.rglob("*")):
                if not folder.is_dir():
                    continue
                rel = folder.relative_to(root)
                if not all(is_public_name(part) for part in rel.parts):
                    continue
                options = option_names(folder)
                if options:
                    found.setdefault(rel.as_posix(), set()).update(options)
        return {group: sorted(options) for group, options in sorted(found.items())}

    def is_group(self, group: str) -> bool:
        return any((root / group).is_dir() and option_names(root / group) for root in self.roots)

    def option_file(self, group: str, option: str) -> Path:
        path = self.config_file(group, option)
        if path is not None:
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
