"""Loading config files: Python files of ``L(...)`` nodes, or YAML dumps of them.

A Python config is executed, and its public top-level values (nodes, dicts, lists, primitives)
form the config. Other config files it imports (``from .base import model``, or
``from lazydet.conf.mask_rcnn_fpn import model``) are executed afresh on every load instead of
coming from Python's module cache: an edit made to ``model`` by one experiment never leaks into
the next load in the same process.
"""

from __future__ import annotations

import builtins
import os
import sys
import traceback
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .depth import MAX_DEPTH, OMEGACONF_FRAMES_PER_LEVEL, check_depth, recursion_room
from .errors import ConfigError, make_importable_hint
from .lazy import MISSING, Config, store, to_node
from .safe_targets import allowed_names, check_targets

__all__ = ["load", "load_file_namespace"]

_CONF_PACKAGE = "lazydet.conf"
# The user's config directories, before lazydet.conf (read by tree.ConfigTree too).
CONFIG_PATH_ENV = "LAZYDET_CONFIG_PATH"


def _conf_root() -> Path:
    import lazydet.conf

    return Path(lazydet.conf.__file__).resolve().parent


def _module_file(base: Path, dotted: str) -> Path | None:
    path = base.joinpath(*dotted.split(".")) if dotted else base
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _is_config_value(name: str, value: Any) -> bool:
    if name.startswith("_"):
        return False
    if value is MISSING:
        # `from lazydet.config import MISSING` binds the marker itself; any other name is a value.
        return name != "MISSING"
    return isinstance(value, (dict, list, tuple, str, int, float, bool)) or value is None


def _user_config_module(name: str) -> Path | None:
    """The file of module ``name`` when it lies in a config directory of LAZYDET_CONFIG_PATH.

    Such files are config files too: a project's ``from myproject.conf.base import model``
    must execute ``base.py`` afresh, as ``lazydet.conf`` imports are, or an edit that one
    experiment makes to ``model`` would leak into every later load in the process.
    """
    import importlib.util

    roots = []
    for entry in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep):
        if entry.strip():
            root = Path(entry).expanduser().resolve()
            if root.is_dir():
                roots.append(root)
    if not roots:
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    origin = Path(spec.origin).resolve()
    return origin if any(origin.is_relative_to(root) for root in roots) else None


def _make_import(path: Path, real_import: Any) -> Any:
    """An ``__import__`` that executes imported config files fresh instead of caching them."""

    def config_import(name, globals=None, locals=None, fromlist=(), level=0):
        target: Path | None = None
        if level > 0:
            base = path.parent
            for _ in range(level - 1):
                base = base.parent
            target = _module_file(base, name)
            if target is None:
                raise ImportError(
                    f"{path}: relative import {'.' * level}{name} found no config file under {base}."
                )
        elif name == _CONF_PACKAGE or name.startswith(_CONF_PACKAGE + "."):
            target = _module_file(_conf_root(), name[len(_CONF_PACKAGE) + 1 :])
        else:
            target = _user_config_module(name)
        if target is None:
            return real_import(name, globals, locals, fromlist, level)
        module = load_file_namespace(target)
        if fromlist:
            for item in fromlist:
                if item != "*" and not hasattr(module, item):
                    sub = (
                        _module_file(target.parent, item) if target.name == "__init__.py" else None
                    )
                    if sub is None:
                        raise ImportError(f"cannot import name '{item}' from config file {target}")
                    setattr(module, item, load_file_namespace(sub))
            return module
        if level == 0 and "." in name:
            # `import lazydet.conf.x` binds `lazydet`: hand back the real package for the root.
            return real_import(name.split(".")[0], globals, locals, (), 0)
        return module

    return config_import


def load_file_namespace(path: str | os.PathLike) -> types.ModuleType:
    """Execute the Python config file ``path`` and return its namespace as a fresh module."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        source = path.read_text()
    except OSError as e:
        raise ConfigError(f"Cannot read config file {path}: {e}") from e
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as e:
        raise ConfigError(
            f"Syntax error in config file {path}, line {e.lineno}: {e.msg}\n    {(e.text or '').rstrip()}"
        ) from None
    # The namespace is never put in sys.modules: each load executes the file afresh.
    module = types.ModuleType(f"lazydet_config_file.{path.stem}")
    module.__file__ = str(path)
    patched = dict(vars(builtins))
    patched["__import__"] = _make_import(path, builtins.__import__)
    module.__dict__["__builtins__"] = patched
    try:
        exec(code, module.__dict__)
    except ConfigError:
        raise
    except Exception as e:
        line = _line_in(path, e)
        where = f"{path}, line {line}" if line else str(path)
        hint = ""
        if isinstance(e, ModuleNotFoundError) and e.name and "." not in e.name:
            hint = make_importable_hint(e.name)
        raise ConfigError(f"Error in config file {where}: {type(e).__name__}: {e}.{hint}") from e
    # Files importing this one get Config values (attribute access), like the loaded config.
    values = {n: v for n, v in vars(module).items() if _is_config_value(n, v)}
    with recursion_room(check_depth(values, what=str(path))):
        for name, value in values.items():
            setattr(module, name, to_node(value, where=f"{path.name}: {name}"))
    return module


def _line_in(path: Path, error: BaseException) -> int | None:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
    return frames[-1].lineno if frames else None


def load(
    path: str | os.PathLike,
    keys: str | list[str] | None = None,
    *,
    trusted: bool = True,
    allowed_targets: Iterable[str] | None = None,
) -> Any:
    """Load a config file (``.py`` or ``.yaml``) as a :class:`Config`.

    A config is code: instantiating it calls whatever its ``_target_`` names (``os.system``
    included), and a ``.py`` config runs when it is loaded. For files from others, pass
    ``trusted=False``: only ``.yaml`` is accepted, read as data, and every target (``_target_``,
    or a class/function stored as a value) must be named in
    :data:`lazydet.config.SAFE_TARGETS` or in ``allowed_targets`` (exact import paths added to
    that list, never prefixes). Giving ``allowed_targets`` implies ``trusted=False``. A config
    nesting more than :data:`lazydet.config.depth.MAX_DEPTH` levels is refused, naming the key.

    Args:
        path: the file.
        keys: a top-level name (or a list of them) to return instead of the whole config.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if allowed_targets is not None:
        trusted = False
    if not trusted:
        allowed = allowed_names(allowed_targets)
        if suffix == ".py":
            raise ConfigError(
                f"{path}: a Python config runs its code when it is loaded, so it cannot be loaded "
                "untrusted. Ask for a YAML dump (lazydet.config.save(cfg, 'x.yaml')) or read the "
                "file and load it with trusted=True."
            )
        cfg = load(path, trusted=True)
        check_targets(cfg, allowed, source=str(path))
        return cfg if keys is None else load_keys(cfg, keys, path)
    if suffix in (".yaml", ".yml"):
        from omegaconf import OmegaConf

        from .serialize import from_container

        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist.")
        import yaml
        from omegaconf._utils import get_yaml_loader

        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=get_yaml_loader())
        except RecursionError:
            raise ConfigError(
                f"Cannot parse YAML config {path}: it nests deeper than the YAML reader can "
                f"follow (more than {sys.getrecursionlimit() // 4} levels; a config may nest "
                f"{MAX_DEPTH} at most)."
            ) from None
        except Exception as e:
            raise ConfigError(f"Cannot parse YAML config {path}: {e}") from e
        depth = check_depth(data, what=str(path))
        with recursion_room(depth, frames_per_level=OMEGACONF_FRAMES_PER_LEVEL):
            try:
                cfg = from_container(OmegaConf.to_container(OmegaConf.create(data), resolve=False))
            except ConfigError:
                raise
            except Exception as e:
                raise ConfigError(f"Cannot parse YAML config {path}: {e}") from e
    elif suffix == ".py":
        module = load_file_namespace(path)
        cfg = Config()
        for name, value in vars(module).items():
            if _is_config_value(name, value):
                store(cfg, name, to_node(value, where=name))
    else:
        raise ConfigError(f"Config file {path} must end in .py or .yaml.")
    if keys is None:
        return cfg
    return load_keys(cfg, keys, path)


def load_keys(cfg: Config, keys: str | list[str], path: Path) -> Any:
    if isinstance(keys, str):
        return _pick(cfg, keys, path)
    return [_pick(cfg, k, path) for k in keys]


def _pick(cfg: Config, key: str, path: Path) -> Any:
    if key not in cfg:
        from .errors import did_you_mean

        raise ConfigError(f"Config file {path} defines no '{key}'.{did_you_mean(key, cfg.keys())}")
    return cfg[key]
