"""Config <-> text: a Python-like repr, runnable ``config.py`` files, YAML, plain containers."""

from __future__ import annotations

import keyword
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .lazy import ARGS, LOCATE, PARTIAL, REF, TARGET, Config
from .signature import MISSING_VALUE

__all__ = ["format_node", "from_container", "save", "to_container", "to_py", "to_yaml"]


def from_container(value: Any) -> Any:
    """Plain (or OmegaConf) containers -> Config trees, without validation (see ``validate``)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=False)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, dict):
        node = Config()
        for k, v in value.items():
            dict.__setitem__(node, str(k), from_container(v))
        return node
    if isinstance(value, list):
        return [from_container(v) for v in value]
    if isinstance(value, tuple):
        return tuple(from_container(v) for v in value)
    return value


def to_container(value: Any) -> Any:
    """Config trees -> plain dicts and lists (tuples become lists, as in YAML)."""
    if isinstance(value, dict):
        return {k: to_container(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_container(v) for v in value]
    return value


def to_yaml(cfg: Any) -> str:
    """YAML text that ``OmegaConf.load`` + ``lazydet.config.instantiate`` rebuild identically."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(to_container(cfg)))


# ---------------------------------------------------------------------------------------------
# Python rendering


def _module_of(path: str) -> str | None:
    """The importable module part of a dotted object path ('torch.optim' for torch.optim.SGD)."""
    import importlib

    parts = path.split(".")
    for end in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:end])
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        return name
    return None  # a builtin such as 'int'


class _Renderer:
    def __init__(self, *, indent: str = "    ") -> None:
        self.indent = indent
        self.modules: set[str] = set()
        self.uses_partial = False
        self.uses_ref = False
        self.uses_missing = False

    def name(self, path: str) -> str:
        module = _module_of(path)
        if module:
            self.modules.add(module)
        return path

    def render(self, value: Any, level: int = 0) -> str:
        if isinstance(value, dict):
            return self.render_dict(value, level)
        if isinstance(value, list):
            return self.render_seq(value, level, "[", "]")
        if isinstance(value, tuple):
            return self.render_seq(value, level, "(", ",)" if len(value) == 1 else ")")
        if value == MISSING_VALUE:
            self.uses_missing = True
            return "MISSING"
        return repr(value)

    def render_call(self, head: str, args: list[str], level: int) -> str:
        one_line = f"{head}({', '.join(args)})"
        if len(one_line) + len(self.indent) * level <= 96 and "\n" not in one_line:
            return one_line
        pad = self.indent * (level + 1)
        body = "".join(f"{pad}{a},\n" for a in args)
        return f"{head}(\n{body}{self.indent * level})"

    def render_dict(self, node: dict, level: int) -> str:
        if REF in node:
            self.uses_ref = True
            return f"ref({node[REF]!r})"
        target = node.get(TARGET)
        if target == LOCATE and len(node.get(ARGS, ())) == 1 and len(node) == 2:
            return self.name(node[ARGS][0])
        args = [self.render(a, level + 1) for a in node.get(ARGS, ())]
        items = [(k, v) for k, v in node.items() if k not in (TARGET, ARGS, PARTIAL)]
        if all(k.isidentifier() and not keyword.iskeyword(k) for k, _ in items):
            args += [f"{k}={self.render(v, level + 1)}" for k, v in items]
            keyword_form = True
        else:
            keyword_form = False
        if isinstance(target, str):
            if not keyword_form:
                raise ConfigError(
                    f"Keys {[k for k, _ in items]} of L({target}) are not identifiers."
                )
            if node.get(PARTIAL):
                self.uses_partial = True
                return self.render_call("partial", [self.name(target), *args], level)
            return self.render_call(f"L({self.name(target)})", args, level)
        if keyword_form:
            return self.render_call("dict", args, level)
        pairs = [f"{k!r}: {self.render(v, level + 1)}" for k, v in items]
        return self.render_seq_raw(pairs, level, "{", "}")

    def render_seq(self, seq: Any, level: int, open_: str, close: str) -> str:
        return self.render_seq_raw([self.render(v, level + 1) for v in seq], level, open_, close)

    def render_seq_raw(self, items: list[str], level: int, open_: str, close: str) -> str:
        one_line = open_ + ", ".join(items) + (close if close != ",)" else ",)")
        if len(one_line) + len(self.indent) * level <= 96 and "\n" not in one_line:
            return one_line
        pad = self.indent * (level + 1)
        close = ")" if close == ",)" else close
        return open_ + "\n" + "".join(f"{pad}{i},\n" for i in items) + self.indent * level + close


def format_node(value: Any) -> str:
    """A readable, Python-like rendering (what a notebook shows for a config)."""
    return _Renderer().render(value)


def to_py(cfg: dict) -> str:
    """A runnable config file; ``lazydet.config.load`` on it gives a config equal to ``cfg``."""
    if not isinstance(cfg, dict):
        raise ConfigError("to_py() takes a whole config (a mapping of top-level names).")
    renderer = _Renderer()
    lines = []
    for key, value in cfg.items():
        if not key.isidentifier() or keyword.iskeyword(key):
            raise ConfigError(f"Top-level key {key!r} is not a Python identifier; rename it.")
        lines.append(f"{key} = {renderer.render(value)}\n")
    roots = {m.split(".")[0] for m in renderer.modules}
    clash = roots.intersection(cfg)
    if clash:
        raise ConfigError(f"Top-level keys {sorted(clash)} shadow modules the config imports.")
    header = [
        "# A lazydet config written by lazydet.config.to_py; load it with lazydet.config.load.\n"
    ]
    if renderer.uses_partial:
        header.append("from functools import partial\n\n")
    # `import torch.optim` also binds `torch`: import only the modules no other one contains.
    modules = sorted(renderer.modules)
    modules = [m for m in modules if not any(o.startswith(m + ".") for o in modules)]
    header += [f"import {m}\n" for m in modules]
    names = (
        ["L"]
        + (["MISSING"] if renderer.uses_missing else [])
        + (["ref"] if renderer.uses_ref else [])
    )
    header.append(f"from lazydet.config import {', '.join(names)}\n\n")
    return "".join(header) + "\n".join(lines)


def save(cfg: dict, path: str | os.PathLike) -> Path:
    """Write ``cfg`` to ``path``: ``.py`` as a runnable config, ``.yaml``/``.yml`` as YAML.

    The file is written to a temporary name and renamed, so a failure leaves no partial file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".py":
        text = to_py(cfg)
    elif suffix in (".yaml", ".yml"):
        text = to_yaml(cfg)
    else:
        raise ConfigError(f"save({str(path)!r}): use a .py or .yaml file name.")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
