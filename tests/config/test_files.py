"""Config files: loading Python configs, saving YAML and runnable Python, diff."""

from __future__ import annotations

import textwrap

import pytest
import torch
from omegaconf import OmegaConf

from lazydet.config import ConfigError, compose, diff, instantiate, load, save, to_container


def _structure(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.shape)) for name, p in module.state_dict().items()]


def test_relative_imports_are_re_executed_on_every_load(fixture_conf):
    derived = load(fixture_conf / "toy_derived.py")
    assert derived.model.num_classes == 7  # toy_derived edits the model it imported from toy
    base = load(fixture_conf / "toy.py")
    assert base.model.num_classes == 3  # the edit did not leak into the next load
    again = load(fixture_conf / "toy_derived.py")
    assert again.model.num_classes == 7 and again.model is not derived.model


def test_load_picks_keys(fixture_conf):
    _model, train = load(fixture_conf / "toy.py", keys=["model", "train"])
    assert train.max_iter == 10
    with pytest.raises(ConfigError, match="defines no 'modle'. Did you mean 'model'"):
        load(fixture_conf / "toy.py", keys="modle")


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        ("model = dict(a=1\n", r"Syntax error in config file .*broken.py, line 1"),
        (
            "import no_such_module_xyz\n",
            r"Error in config file .*broken.py, line 1: ModuleNotFoundError",
        ),
        (
            "from .missing_sibling import x\n",
            r"relative import .missing_sibling found no config file",
        ),
        ("x = 1\nraise RuntimeError('boom')\n", r"broken.py, line 2: RuntimeError: boom"),
    ],
)
def test_bad_config_files_give_one_clear_message(tmp_path, source, pattern):
    path = tmp_path / "broken.py"
    path.write_text(source)
    with pytest.raises(ConfigError, match=pattern):
        load(path)


def test_missing_file_and_bad_suffix(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.py")
    with pytest.raises(ConfigError, match=r"must end in \.py or \.yaml"):
        load(tmp_path / "cfg.json")


def test_yaml_round_trip_rebuilds_identical_objects(fixture_conf, tmp_path):
    cfg = compose("toy", ["model.backbone=mlp"])
    save(cfg, tmp_path / "config.yaml")
    reloaded = OmegaConf.load(tmp_path / "config.yaml")  # plain OmegaConf, as a user would
    torch.manual_seed(0)
    a = instantiate(cfg)
    torch.manual_seed(0)
    b = instantiate(reloaded)
    assert _structure(a["model"]) == _structure(b["model"])
    for (na, pa), (nb, pb) in zip(a["model"].state_dict().items(), b["model"].state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    assert type(b["optimizer"]) is type(a["optimizer"])
    assert b["model"].dtype is torch.float32
    assert load(tmp_path / "config.yaml") == to_container(cfg)


def test_python_round_trip_reloads_an_equal_config(fixture_conf, tmp_path):
    cfg = compose("toy", ["optimizer=adamw"])
    save(cfg, tmp_path / "config.py")
    text = (tmp_path / "config.py").read_text()
    assert "L(torch.optim.AdamW)(" in text and "ref('model')" in text
    reloaded = load(tmp_path / "config.py")
    assert to_container(reloaded) == to_container(cfg)
    assert diff(cfg, reloaded) == ""
    built = instantiate(reloaded)
    assert built["optimizer"].param_groups[0]["params"][0] is next(built["model"].parameters())


def test_save_is_atomic_and_checks_suffix(tmp_path, fixture_conf):
    cfg = compose("toy")
    with pytest.raises(ConfigError, match=r"use a \.py or \.yaml"):
        save(cfg, tmp_path / "config.txt")
    save(cfg, tmp_path / "c.py")
    assert [p.name for p in tmp_path.iterdir()] == ["c.py"]  # no temporary file left behind


def test_diff_is_readable(fixture_conf):
    a = compose("toy")
    b = compose("toy", ["model.backbone=mlp", "optimizer.lr=0.02"])
    text = diff(a, b)
    assert text.splitlines()[:2] == ["--- a", "+++ b"]
    lines = text.splitlines()[2:]
    assert (
        "~ model.backbone._target_: 'toy_modules.ConvBackbone' -> 'toy_modules.MLPBackbone'"
        in lines
    )
    assert "- model.backbone.channels: 8" in lines
    assert "+ model.backbone.width: 16" in lines
    assert "~ optimizer.lr: 0.1 -> 0.02" in lines
    assert "- model.backbone.activation: '<toy_modules.Activation.RELU>'" in lines
    # the target line of a node comes before its arguments
    assert lines.index(
        "~ model.backbone._target_: 'toy_modules.ConvBackbone' -> 'toy_modules.MLPBackbone'"
    ) < lines.index("- model.backbone.channels: 8")
    assert diff(a, a) == ""


def test_absolute_import_of_a_builtin_conf_file_is_fresh(tmp_path, monkeypatch):
    # lazydet.conf.* imports go through the same loader: no module cache, no leaked edits.
    import lazydet.conf

    conf_dir = tmp_path / "pkgconf"
    conf_dir.mkdir()
    (conf_dir / "__init__.py").write_text("")
    (conf_dir / "base.py").write_text("value = dict(a=1)\n")
    monkeypatch.setattr(lazydet.conf, "__file__", str(conf_dir / "__init__.py"))
    user = tmp_path / "user.py"
    user.write_text(
        textwrap.dedent("""
        from lazydet.conf.base import value
        value.a = 2
    """)
    )
    assert load(user).value.a == 2
    other = tmp_path / "other.py"
    other.write_text("from lazydet.conf.base import value\n")
    assert load(other).value.a == 1
