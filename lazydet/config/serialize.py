"""Config <-> text: a Python-like repr, runnable ``config.py`` files, YAML, plain containers."""

from __future__ import annotations

import keyword
import os
from pathlib import Path
from typing import Any

from .depth import OMEGACONF_FRAMES_PER_LEVEL, check_depth, recursion_room
from .errors import ConfigError
from .lazy import ARGS, LOCATE, REF, TARGET, Config, store
from .paths import import_path, locate
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
            store(node, str(k), from_container(v))
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


def _round_trips(path: str) -> bool:
    """Whether ``path`` is what ``import_path`` gives for the object it names.

    Only then may a dump write the bare name (``torch.optim.SGD``): loading turns the object back
    into a path, and another spelling (``torch.optim.sgd.SGD``, a builtin's odd name) would not
    come back equal. Other paths are written as strings.
    """
    try:
        return import_path(locate(path)) == path
    except Exception:
        return False


def _float_text(value: float) -> str:
    if value != value:
        return "float('nan')"
    if value in (float("inf"), float("-inf")):
        return "float('inf')" if value > 0 else "-float('inf')"
    return repr(value)


class _Renderer:
    """Python source for config values.

    ``aliases`` renames the helpers a dump imports (``L``, ``ref``, ``MISSING``) and the root
    modules of targets when a top-level key of the config has the same name and would shadow them.
    """

    def __init__(self, *, indent: str = "    ", aliases: dict[str, str] | None = None) -> None:
        self.indent = indent
        self.aliases = aliases or {}
        self.modules: set[str] = set()
        self.helpers: set[str] = set()

    def helper(self, name: str) -> str:
        self.helpers.add(name)
        return self.aliases.get(name, name)

    def name(self, path: str) -> str:
        module = _module_of(path)
        if module:
            self.modules.add(module)
        root, _, rest = path.partition(".")
        return f"{self.aliases[root]}.{rest}" if root in self.aliases and rest else path

    def target(self, path: Any) -> str:
        if isinstance(path, str) and _round_trips(path):
            return self.name(path)
        return repr(path)

    def render(self, value: Any, level: int = 0) -> str:
        if isinstance(value, dict):
            return self.render_dict(value, level)
        if isinstance(value, list):
            return self.render_seq(value, level, "[", "]")
        if isinstance(value, tuple):
            return self.render_seq(value, level, "(", ",)" if len(value) == 1 else ")")
        if isinstance(value, str) and value == MISSING_VALUE:
            return self.helper("MISSING")
        if isinstance(value, float):
            return _float_text(value)
        return repr(value)

    def render_top(self, value: Any) -> str:
        """A top-level value, written so that ``load`` keeps it.

        ``load`` takes a file's config values and skips the names it imports, so a class,
        dtype or function on its own (``dtype = torch.float16``) must be written as a node.
        """
        if isinstance(value, dict) and value.get(TARGET) == LOCATE:
            args = [self.render(a, 1) for a in value.get(ARGS, ())]
            kwargs = [
                f"{k}={self.render(v, 1)}" for k, v in value.items() if k not in (TARGET, ARGS)
            ]
            return self.render_call(f"{self.helper('L')}({LOCATE!r})", [*args, *kwargs], 0)
        return self.render(value)

    def render_call(self, head: str, args: list[str], level: int) -> str:
        one_line = f"{head}({', '.join(args)})"
        if len(one_line) + len(self.indent) * level <= 96 and "\n" not in one_line:
            return one_line
        pad = self.indent * (level + 1)
        body = "".join(f"{pad}{a},\n" for a in args)
        return f"{head}(\n{body}{self.indent * level})"

    def render_dict(self, node: dict, level: int) -> str:
        if REF in node and len(node) == 1:
            return f"{self.helper('ref')}({node[REF]!r})"
        target = node.get(TARGET)
        if (
            target == LOCATE
            and len(node) == 2
            and len(node.get(ARGS, ())) == 1
            and isinstance(node[ARGS][0], str)
            and _round_trips(node[ARGS][0])
        ):
            return self.name(node[ARGS][0])
        args = [self.render(a, level + 1) for a in node.get(ARGS, ())]
        items = [(k, v) for k, v in node.items() if k not in (TARGET, ARGS)]
        keyword_form = all(k.isidentifier() and not keyword.iskeyword(k) for k, _ in items)
        if isinstance(target, str):
            if keyword_form:
                args += [f"{k}={self.render(v, level + 1)}" for k, v in items]
            else:
                pairs = ", ".join(f"{k!r}: {self.render(v, level + 1)}" for k, v in items)
                args.append(f"**{{{pairs}}}")
            return self.render_call(f"{self.helper('L')}({self.target(target)})", args, level)
        if keyword_form and TARGET not in node:
            args += [f"{k}={self.render(v, level + 1)}" for k, v in items]
            return self.render_call("dict", args, level)
        pairs = [f"{k!r}: {self.render(v, level + 1)}" for k, v in node.items()]
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


def _check_tree(value: Any, open_: frozenset[int] = frozenset(), where: str = "") -> None:
    if isinstance(value, (dict, list, tuple)):
        if id(value) in open_:
            raise ConfigError(f"{where or 'config'} contains itself; a config must be a tree.")
        open_ = open_ | {id(value)}
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            _check_tree(v, open_, f"{where}.{k}" if where else str(k))


def to_py(cfg: dict) -> str:
    """A runnable config file; ``lazydet.config.load`` on it gives a config equal to ``cfg``."""
    if not isinstance(cfg, dict):
        raise ConfigError("to_py() takes a whole config (a mapping of top-level names).")
    _check_tree(cfg)
    for key in cfg:
        if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
            raise ConfigError(f"Top-level key {key!r} is not a Python identifier; rename it.")
        if key.startswith("_"):
            raise ConfigError(
                f"Top-level key {key!r} starts with '_': a config file's names starting with '_' "
                "are helpers that load() skips. Rename it."
            )
    # First pass: which helpers and modules the text needs; then rename those a key shadows.
    probe = _Renderer()
    for value in cfg.values():
        probe.render_top(value)
    needed = probe.helpers | {m.split(".")[0] for m in probe.modules}
    aliases = {name: f"_{name}" for name in needed if name in cfg}
    renderer = _Renderer(aliases=aliases)
    lines = [f"{key} = {renderer.render_top(value)}\n" for key, value in cfg.items()]
    header = [
        "# A lazydet config written by lazydet.config.to_py; load it with lazydet.config.load.\n"
    ]
    # `import torch.optim` also binds `torch`: import only the modules no other one contains.
    modules = sorted(renderer.modules)
    modules = [m for m in modules if not any(o.startswith(m + ".") for o in modules)]
    header += [f"import {m}\n" for m in modules]
    header += [
        f"import {root} as {alias}\n"
        for root, alias in sorted(aliases.items())
        if root not in ("L", "ref", "MISSING")
    ]
    names = sorted(renderer.helpers | {"L"}, key=["L", "MISSING", "ref"].index)
    imports = ", ".join(f"{n} as {aliases[n]}" if n in aliases else n for n in names)
    header.append(f"from lazydet.config import {imports}\n\n")
    return "".join(header) + "\n".join(lines)


def _check_reads_back_py(text: str, path: Path, depth: int) -> None:
    # Python's parser has fixed nesting limits (200 open brackets, a parser stack): a deep
    # config renders to text it refuses. Parse (not run) the text to know before writing.
    import ast

    try:
        ast.parse(text)
    except (SyntaxError, RecursionError, MemoryError) as e:
        raise ConfigError(
            f"save({str(path)!r}): the config nests {depth} levels deep, more than a Python file "
            f"can express ({type(e).__name__}: {e}). Nothing was written. Save it as .yaml "
            "(lazydet.config.save(cfg, 'config.yaml')), or flatten it."
        ) from None


def _check_reads_back_yaml(text: str, path: Path) -> None:
    import yaml
    from omegaconf._utils import get_yaml_loader

    try:
        yaml.load(text, Loader=get_yaml_loader())
    except RecursionError:
        raise ConfigError(
            f"save({str(path)!r}): the config nests deeper than the YAML reader can follow. "
            "Nothing was written; flatten it."
        ) from None


def save(cfg: dict, path: str | os.PathLike) -> Path:
    """Write ``cfg`` to ``path``: ``.py`` as a runnable config, ``.yaml``/``.yml`` as YAML.

    The file is written to a temporary name and renamed, so a failure leaves no partial file.
    The text is checked to read back before anything is written: a config nesting deeper than
    Python's parser allows (about 100 levels of brackets) is refused as ``.py`` (save it as
    ``.yaml``), and one past :data:`lazydet.config.depth.MAX_DEPTH` levels is refused.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".py", ".yaml", ".yml"):
        raise ConfigError(f"save({str(path)!r}): use a .py or .yaml file name.")
    depth = check_depth(cfg, what=f"save({str(path)!r})")
    with recursion_room(depth, frames_per_level=OMEGACONF_FRAMES_PER_LEVEL):
        if suffix == ".py":
            text = to_py(cfg)
            _check_reads_back_py(text, path, depth)
        else:
            text = to_yaml(cfg)
            _check_reads_back_yaml(text, path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
