"""Crafted config inputs (issue #22): untrusted YAML, nesting past every limit, unsaveable configs.

Each case is one parametrized entry, so the suite's count of crafted inputs is the number of
test ids here. Every case fails on the code before the fix (prefix allow-list, RecursionError
tracebacks, a config.py written that does not load).
"""

import pytest

from lazydet.config import (
    SAFE_TARGETS,
    ConfigError,
    instantiate,
    load,
    save,
    validate,
)
from lazydet.config.depth import MAX_DEPTH

# The targets the probe ran code through under the old `torch.`/`lazydet.` prefixes.
PROBE_TARGETS = [
    ("torch.utils.collect_env.run", "['echo pwned']"),
    ("torch.fx.graph_module._exec_with_source", "['import os', {}]"),
    ("lazydet.checkpoint.config_from_metadata", "[{config: 'x = 1', format: py}]"),
    ("lazydet.train.main", "[['conf=quickstart']]"),
    ("torch.serialization.load", "['x.pth']"),
    ("torchvision.io.write_file", "['pwned.txt', null]"),
    ("torch.utils.model_zoo.load_url", "['http://example.invalid/x.pth']"),
    ("torch.jit._serialization.load", "['x.pt']"),
]


@pytest.mark.parametrize("target,args", PROBE_TARGETS, ids=[t for t, _ in PROBE_TARGETS])
@pytest.mark.parametrize("form", ["call", "located"])
def test_untrusted_yaml_refuses_targets_outside_the_list(tmp_path, target, args, form):
    path = tmp_path / "evil.yaml"
    if form == "call":
        path.write_text(f"run:\n  _target_: {target}\n  _args_: {args}\n")
    else:  # the function stored as a value (a class/function argument), built later by a caller
        path.write_text(f"fn:\n  _target_: lazydet.config.locate\n  _args_: [{target}]\n")
    with pytest.raises(ConfigError) as info:
        load(path, trusted=False)
    message = str(info.value)
    assert target in message and str(path) in message  # the target and the file
    assert f"allowed_targets=['{target}']" in message  # how to allow it
    assert target not in SAFE_TARGETS


@pytest.mark.parametrize("prefix", ["torch.", "lazydet.", "torch.utils.*", ""])
def test_allowed_targets_takes_no_prefix(tmp_path, prefix):
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  _target_: torch.utils.collect_env.run\n")
    with pytest.raises(ConfigError, match="exact import paths"):
        load(path, allowed_targets=[prefix])


def _deep_dict(depth: int) -> dict:
    cfg: dict = {"leaf": 1}
    for _ in range(depth - 1):
        cfg = {"a": cfg}
    return cfg


def _deep_args_node(depth: int) -> dict:
    cfg: dict = {"_target_": "builtins.dict", "leaf": 1}
    for _ in range(depth - 1):
        cfg = {"_target_": "collections.ChainMap", "_args_": [cfg]}
    return cfg


DEEP = 20_000


@pytest.mark.parametrize(
    "surface",
    ["instantiate", "instantiate_args", "validate", "save_py", "save_yaml", "load_py", "load_yaml"],
)
def test_a_20000_deep_config_gets_one_message_naming_the_key(tmp_path, surface):
    cfg = _deep_args_node(DEEP // 2) if surface == "instantiate_args" else _deep_dict(DEEP)
    target = tmp_path / "out"
    with pytest.raises(ConfigError) as info:
        if surface.startswith("instantiate"):
            instantiate(cfg)
        elif surface == "validate":
            validate(cfg)
        elif surface == "save_py":
            save({"model": cfg}, target.with_suffix(".py"))
        elif surface == "save_yaml":
            save({"model": cfg}, target.with_suffix(".yaml"))
        elif surface == "load_py":
            path = tmp_path / "deep.py"
            path.write_text(
                f"model = {{'leaf': 1}}\nfor _ in range({DEEP}):\n    model = {{'a': model}}\n"
            )
            load(path)
        else:
            path = tmp_path / "deep.yaml"
            path.write_text("model: " + "{a: " * DEEP + "1" + "}" * DEEP + "\n")
            load(path)
    message = str(info.value)
    assert f"more than {MAX_DEPTH}" in message or "deeper than" in message, message
    if surface != "load_yaml":  # the YAML reader stops before there is a key to name
        assert ".a.a.a." in message or "_args_.0._args_.0" in message, message
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("suffix", [".py", ".yaml"])
@pytest.mark.parametrize("depth", [50, 300])
def test_save_writes_what_load_reads_back_or_refuses_before_writing(tmp_path, suffix, depth):
    cfg = {"model": _deep_dict(depth - 1)}
    path = tmp_path / f"config{suffix}"
    path.write_bytes(b"# the previous run's config\n")
    try:
        save(cfg, path)
    except ConfigError as e:
        assert "Nothing was written" in str(e)
        assert path.read_bytes() == b"# the previous run's config\n"
        assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
        assert suffix == ".py" and depth >= 300  # only a Python file has a smaller limit
        return
    assert load(path) == cfg
