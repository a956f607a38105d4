"""Import paths for config targets: object -> shortest import path string -> object.

A config stores every target as a dotted string (``torch.optim.SGD``), never as the object, so
that any dump of it (YAML, Python, Hydra's ``.hydra/config.yaml``) reloads to the same objects.
"""

from __future__ import annotations

import builtins
import enum
import functools
import importlib
import types
from typing import Any

from .errors import ConfigError, did_you_mean, make_importable_hint

__all__ = ["import_path", "is_importable_object", "locate"]


def _is_dtype(obj: Any) -> bool:
    # Checked by name so that lazydet.config needs no torch import.
    cls = type(obj)
    return cls.__module__ == "torch" and cls.__name__ == "dtype"


def is_importable_object(obj: Any) -> bool:
    """Whether ``obj`` is a class, function, dtype or enum member that has an import path."""
    return (
        isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType, enum.Enum))
        or _is_dtype(obj)
        or (callable(obj) and hasattr(obj, "__qualname__") and hasattr(obj, "__module__"))
    )


@functools.lru_cache(maxsize=4096)
def locate(path: str) -> Any:
    """The object named by the dotted ``path``, importing the longest module prefix that exists.

    Raises ConfigError naming the part of the path that could not be found.
    """
    if not isinstance(path, str) or not path or path.startswith(".") or path.endswith("."):
        raise ConfigError(f"{path!r} is not an import path; write it like 'torch.optim.SGD'.")
    parts = path.split(".")
    module = None
    module_end = 0
    first_error: Exception | None = None
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            # Only "this very module does not exist" means: try a shorter prefix. A missing
            # dependency inside an existing module is a real error the user must see.
            if e.name is not None and not name.startswith(e.name) and e.name != name:
                raise ConfigError(f"Importing '{name}' for '{path}' failed: {e}") from e
            first_error = first_error or e
            continue
        except Exception as e:
            raise ConfigError(
                f"Importing '{name}' for '{path}' failed: {type(e).__name__}: {e}"
            ) from e
        module_end = end
        break
    if module is None:
        if hasattr(builtins, parts[0]):
            module, module_end = builtins, 0
        else:
            raise ConfigError(
                f"Cannot import '{path}': no module '{parts[0]}' ({first_error})."
                + make_importable_hint(parts[0])
            )
    obj: Any = module
    for i in range(module_end, len(parts)):
        attr = parts[i]
        if not hasattr(obj, attr):
            owner = ".".join(parts[:i])
            hint = did_you_mean(attr, [a for a in dir(obj) if not a.startswith("_")])
            raise ConfigError(f"Cannot import '{path}': '{owner}' has no attribute '{attr}'.{hint}")
        obj = getattr(obj, attr)
    return obj


def _resolves_to(path: str, obj: Any) -> bool:
    try:
        return locate(path) is obj
    except ConfigError:
        return False


@functools.lru_cache(maxsize=4096)
def _shortest_path(module: str, qualname: str) -> str | None:
    full = f"{module}.{qualname}"
    target = locate(full)
    parts = module.split(".")
    # Try the package prefixes first: 'torch.optim.sgd.SGD' is best written 'torch.optim.SGD'.
    for end in range(1, len(parts)):
        candidate = ".".join([*parts[:end], qualname])
        if _resolves_to(candidate, target):
            return candidate
    return full


def import_path(obj: Any) -> str:
    """The shortest dotted path that ``locate`` turns back into ``obj`` itself.

    Raises ConfigError for objects that have none (lambdas, local functions, instances).
    """
    if _is_dtype(obj):
        name = str(obj)  # 'torch.float16'
        if _resolves_to(name, obj):
            return name
    if isinstance(obj, enum.Enum):
        return f"{import_path(type(obj))}.{obj.name}"
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname:
        raise ConfigError(
            f"{obj!r} has no import path; configs can name classes, functions, "
            "dtypes and enum members defined at module level."
        )
    if "<lambda>" in qualname:
        raise ConfigError(
            f"A lambda ({module}.{qualname}) cannot be stored in a config: it has no import path, "
            "so the config could not be saved and reloaded. Define a function at module level "
            "and use it, or use functools.partial(f, ...) of one."
        )
    if "<locals>" in qualname:
        raise ConfigError(
            f"The local function or class '{qualname}' (in {module}) cannot be stored in a config: "
            "it has no import path. Move it to module level and import it."
        )
    if module == "builtins":
        return f"builtins.{qualname}"  # Hydra's locate cannot import a bare 'dict'
    try:
        path = _shortest_path(module, qualname)
    except ConfigError as e:
        # C functions often report the class they hang off (torch.zeros gives
        # '_VariableFunctionsClass.zeros') while the module re-exports them by name.
        name = getattr(obj, "__name__", None)
        if name and name != qualname and _resolves_to(f"{module}.{name}", obj):
            return _shortest_path(module, name) or f"{module}.{name}"
        raise ConfigError(
            f"{obj!r} cannot be stored in a config: '{module}.{qualname}' does not import back "
            f"to it ({e}). Define it at module level in an importable module, or name it by "
            "the import path you use, as a string: L('package.function')(...)."
        ) from e
    if path is None or not _resolves_to(path, obj):
        raise ConfigError(
            f"{obj!r} cannot be stored in a config: '{module}.{qualname}' names another object."
        )
    return path
