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
            r"Error in config file .*broken.py, line 1: ModuleNotFoundError.*"
            r"add the folder that holds 'no_such_module_xyz' to PYTHONPATH",
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


def _module_level(x: int = 1) -> int:
    return x


def test_python_dump_round_trips_everything_a_config_can_hold(tmp_path):
    import functools
    import math

    from lazydet.config import MISSING, Config, L, ref

    cfg = Config(
        cls=torch.nn.Linear,  # top-level class, dtype, function and partial
        dtype=torch.float16,
        fn=math.sqrt,
        part=functools.partial(torch.nn.Linear, bias=False),
        factory=L(torch.nn.Linear)(in_features=2, _partial_=True),
        todo=MISSING,
        limits=dict(high=float("inf"), low=-float("inf"), nothing=float("nan")),
        zeros=L("torch.zeros")(2),
        L=dict(a=1),  # top-level keys that shadow the dump's own imports
        ref=[1, 2],
        torch=dict(note="shadows the module"),
        MISSING=3,
        net=L(torch.nn.Linear)(in_features=2, out_features=MISSING),
        shared=ref("net"),
        tup=(1, 2),
        odd={"not-an-identifier": 1, "class": 2},
    )
    save(cfg, tmp_path / "c.py")
    loaded = load(tmp_path / "c.py")
    assert set(loaded) == set(cfg)
    nan = loaded.limits.pop("nothing")
    assert math.isnan(nan)
    expected = Config(cfg)
    expected.limits = dict(high=float("inf"), low=-float("inf"))
    assert loaded == expected
    assert diff(expected, loaded) == ""
    built = {k: instantiate(loaded[k]) for k in ("cls", "dtype", "fn", "part", "factory", "zeros")}
    assert built["cls"] is torch.nn.Linear and built["dtype"] is torch.float16
    assert built["fn"] is math.sqrt and built["part"](3, 4).bias is None
    assert built["factory"](out_features=3).out_features == 3
    assert torch.equal(built["zeros"], torch.zeros(2))


def test_equality_and_diff_agree_on_tuples_and_lists(tmp_path):
    from lazydet.config import Config, L

    cfg = Config(sizes=(1, 2), nodes=(L(torch.nn.ReLU)(),))
    save(cfg, tmp_path / "c.yaml")
    reloaded = load(tmp_path / "c.yaml")  # YAML has no tuples
    assert reloaded != cfg
    text = diff(cfg, reloaded)
    assert "~ sizes: (1, 2) -> [1, 2]" in text
    assert "- nodes: '<tuple>'" in text


def test_untrusted_load_refuses_targets_outside_the_allow_list(tmp_path):
    (tmp_path / "evil.yaml").write_text(
        "model:\n  _target_: torch.nn.Linear\n  in_features: 2\n  out_features: 2\n"
        "run:\n  _target_: os.system\n  _args_: ['echo pwned']\n"
        "fn:\n  _target_: lazydet.config.locate\n  _args_: [subprocess.call]\n"
        "hub:\n  _target_: torch.hub.load\n"
    )
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "evil.yaml", trusted=False)
    message = str(info.value)
    assert "'run' names 'os.system'" in message and "'fn' names 'subprocess.call'" in message
    assert "'hub' names 'torch.hub.load'" in message and "'model'" in message
    ok = tmp_path / "ok.yaml"
    ok.write_text("model:\n  _target_: torch.nn.Linear\n  in_features: 2\n  out_features: 2\n")
    with pytest.raises(ConfigError, match="outside lazydet.config.SAFE_TARGETS"):
        load(ok, trusted=False)  # a class not on the list: added by name, never by prefix
    assert instantiate(load(ok, allowed_targets=["torch.nn.Linear"]))["model"].out_features == 2
    (tmp_path / "c.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="runs its code when it is loaded"):
        load(tmp_path / "c.py", trusted=False)


def test_user_config_packages_are_imported_fresh_on_every_load(tmp_path, monkeypatch):
    # A project config directory that is also a package on sys.path (LAZYDET_CONFIG_PATH).
    pkg = tmp_path / "projconf"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "base.py").write_text("model = dict(num_classes=3)\n")
    (pkg / "edits.py").write_text("from projconf.base import model\nmodel.num_classes = 9\n")
    (pkg / "reads.py").write_text("from projconf.base import model\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", str(pkg))
    assert load(pkg / "edits.py").model.num_classes == 9
    assert load(pkg / "reads.py").model.num_classes == 3  # the edit did not leak


def test_apply_overrides_has_the_command_lines_semantics(fixture_conf):
    from lazydet.config import apply_overrides

    cfg = load(fixture_conf / "toy.py")
    del cfg["defaults"]  # Hydra's, not the config's
    cfg.model.backbone = compose("toy").model.backbone
    cfg.optimizer = compose("toy").optimizer
    out = apply_overrides(cfg, ["model.backbone=mlp", "optimizer.lr=0.01", "++train.seed=4"])
    assert out is cfg
    expected = compose("toy", ["model.backbone=mlp", "optimizer.lr=0.01", "++train.seed=4"])
    assert to_container(cfg) == to_container(expected)
    # A bad override leaves the config as it was, and says why.
    with pytest.raises(ConfigError, match="Did you mean 'lr'"):
        apply_overrides(cfg, ["optimizer.lr=0.5", "optimizer.lrr=0.1"])
    assert cfg.optimizer.lr == 0.01
    apply_overrides(cfg, ["+train.extra.deep=1", "~train.max_iter"])
    assert cfg.train.extra.deep == 1 and "max_iter" not in cfg.train
    with pytest.raises(ConfigError, match="is a sweep"):
        apply_overrides(cfg, ["optimizer.lr=0.1,0.2"])
    apply_overrides(cfg, ["model.backbone.hidden_sizes.0=8"])
    assert cfg.model.backbone.hidden_sizes == (8, 32)  # still a tuple
    with pytest.raises(ConfigError, match=r"has 2 items; '3' is not an index"):
        apply_overrides(cfg, ["model.backbone.hidden_sizes.3=8"])
    with pytest.raises(ConfigError, match=r"item 0 \('x'\): expected int"):
        apply_overrides(cfg, ["model.backbone.hidden_sizes.0=x"])
