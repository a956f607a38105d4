"""Hydra composition of Python config files: groups, overrides, validation, config directories."""

from __future__ import annotations

import textwrap

import pytest

from lazydet.config import ConfigError, compose, instantiate
from lazydet.config.tree import ConfigTree


def test_groups_and_experiments_are_found_without_executing_files(
    fixture_conf, tmp_path, monkeypatch
):
    tree = ConfigTree.from_environment()
    assert {"toy", "toy_derived", "toy_shared"} <= set(tree.experiments())
    groups = tree.groups()
    # lazydet's own conf/ stays on the search path: its options join the fixture's.
    assert {"conv", "mlp", "resnet50"} <= set(groups["model/backbone"])
    assert {"adamw", "sgd"} <= set(groups["optimizer"])
    # A broken option file does not stop listing or composing runs that do not use it.
    user = tmp_path / "conf"
    (user / "optimizer").mkdir(parents=True)
    (user / "optimizer" / "broken.py").write_text("this is not python\n")
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", f"{user}:{fixture_conf}")
    assert "broken" in ConfigTree.from_environment().groups()["optimizer"]
    assert compose("toy").optimizer.lr == 0.1


def test_dotted_and_slash_group_overrides_select_the_option(fixture_conf):
    for override in ("model.backbone=mlp", "model/backbone=mlp"):
        cfg = compose("toy", [override])
        assert cfg.model.backbone._target_ == "toy_modules.MLPBackbone"


def test_group_option_replaces_the_subtree(fixture_conf):
    cfg = compose("toy", ["model.backbone=mlp"])
    # Nothing of the conv option survives (Hydra alone would merge and keep 'channels').
    assert set(cfg.model.backbone) == {"_target_", "width", "hidden_sizes"}


def test_parent_filling_an_owned_slot_is_an_error_not_a_merge(fixture_conf):
    with pytest.raises(ConfigError, match=r"toy_inline.py sets 'model.backbone'.*owns that slot"):
        compose("toy_inline")


def test_value_overrides_are_checked_against_signatures(fixture_conf):
    cfg = compose("toy", ["optimizer.lr=0.02", "+optimizer.dampening=0.1", "~train.seed"])
    assert cfg.optimizer.lr == 0.02 and cfg.optimizer.dampening == 0.1 and "seed" not in cfg.train


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lrr=0.1", r"torch.optim.SGD has no argument 'lrr'. Did you mean 'lr'\?"),
        (
            "optimizer.dampening=0.1",
            r"'dampening' is an argument of torch.optim.SGD .* write \+optimizer.dampening=",
        ),
        ("optimizer.lr=fast", r"argument 'lr' of torch.optim.SGD got 'fast'"),
        ("+model.num_classes=4", r"'model.num_classes' is already set; drop the '\+'"),
        (
            "train.max_itr=3",
            r"'train' has no key 'max_itr'|'train.max_itr' is not in the config. Did you mean 'max_iter'",
        ),
        ("modle.num_classes=3", r"'the config' has no key 'modle'. Did you mean 'model'"),
    ],
)
def test_a_bad_value_override_is_one_error_naming_it(fixture_conf, override, message):
    with pytest.raises(ConfigError, match=message):
        compose("toy", [override])


def test_unknown_group_option_and_unknown_experiment(fixture_conf):
    with pytest.raises(
        ConfigError,
        match=r"Group 'model/backbone' has no option 'vitt'. Did you mean .*'vit_b'.*Options: conv, mlp, ",
    ):
        compose("toy", ["model.backbone=vitt"])
    with pytest.raises(ConfigError, match=r"No experiment 'toi' \(conf=toi\). Did you mean 'toy'"):
        compose("toi")


def test_missing_group_choice_names_the_options(fixture_conf):
    with pytest.raises(
        ConfigError, match=r"model.backbone is MISSING.*model/backbone=<conv\|mlp\|resnet101"
    ):
        compose("toy", ["~model/backbone"])


def test_sweeps_are_refused_outside_multirun(fixture_conf):
    with pytest.raises(ConfigError, match="is a sweep.*-m"):
        compose("toy", ["optimizer.lr=0.1,0.2"])
    # The multirun vetting checks every value of a sweep.
    with pytest.raises(ConfigError, match="got 'x'"):
        compose("toy", ["optimizer.lr=0.1,x"], allow_sweeps=True)


def test_refs_survive_composition(fixture_conf):
    built = instantiate(compose("toy_shared"))
    assert built["pair"].first is built["pair"].second is built["backbone"]
    built = instantiate(compose("toy"))
    assert built["optimizer"].param_groups[0]["params"][0] is next(built["model"].parameters())


def test_notebook_flow(fixture_conf):
    cfg = compose("toy", overrides=["model.backbone=mlp"])
    cfg.optimizer.lr = 0.01
    with pytest.raises(ConfigError, match="Did you mean 'lr'"):
        cfg.optimizer.lrr = 0.01
    built = instantiate(cfg)
    assert built["optimizer"].param_groups[0]["lr"] == 0.01


def test_interpolations_resolve_after_overrides(interp_conf):
    cfg = compose("interp", ["width=6"])
    assert cfg.net.channels == "${width}"  # live: resolved when built
    assert instantiate(cfg.net).out_channels == 6


def test_user_config_directory_layers_over_builtin_ones(fixture_conf, tmp_path, monkeypatch):
    user = tmp_path / "myproject_conf"
    (user / "model" / "backbone").mkdir(parents=True)
    (user / "model" / "backbone" / "wide_conv.py").write_text(
        textwrap.dedent("""
        from lazydet.config import L
        from toy_modules import ConvBackbone
        backbone = L(ConvBackbone)(channels=32)
    """)
    )
    (user / "my_experiment.py").write_text(
        textwrap.dedent('''
        """Reuses the toy experiment with a project backbone."""
        from lazydet.config import MISSING
        defaults = {"model/backbone": "wide_conv", "optimizer": "adamw"}
        from toy_modules import ToyClassifier
        from lazydet.config import L
        model = L(ToyClassifier)(backbone=MISSING, num_classes=5)
    ''')
    )
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", f"{user}:{fixture_conf}")
    cfg = compose("my_experiment")
    assert cfg.model.backbone.channels == 32 and cfg.optimizer._target_ == "torch.optim.AdamW"
    # the project's option is also available to the fixture experiments, and theirs to it
    assert compose("toy", ["model.backbone=wide_conv"]).model.backbone.channels == 32
    assert compose("my_experiment", ["model.backbone=mlp"]).model.backbone.width == 16


def test_bad_config_path_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="LAZYDET_CONFIG_PATH names .*nope.*not a directory"):
        compose("toy")


def test_syntax_error_in_a_selected_option_names_the_file(fixture_conf, tmp_path, monkeypatch):
    user = tmp_path / "conf"
    (user / "optimizer").mkdir(parents=True)
    (user / "optimizer" / "broken.py").write_text("optimizer = dict(lr=0.1\n")
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", f"{user}:{fixture_conf}")
    with pytest.raises(
        ConfigError, match=r"Syntax error in config file .*optimizer/broken.py, line 1"
    ):
        compose("toy", ["optimizer=broken"])


def test_validation_reports_every_problem_with_its_key(fixture_conf, tmp_path, monkeypatch):
    user = tmp_path / "conf"
    user.mkdir()
    (user / "bad.py").write_text(
        textwrap.dedent("""
        model = dict(_target_="toy_modules.ConvBackbone", chanels=3)
        other = dict(_target_="toy_modules.NoSuchThing")
        net = dict(_target_="toy_modules.ConvBackbone", depth="two")
    """)
    )
    monkeypatch.setenv("LAZYDET_CONFIG_PATH", f"{user}:{fixture_conf}")
    with pytest.raises(ConfigError) as info:
        compose("bad")
    message = str(info.value)
    assert (
        "model: toy_modules.ConvBackbone has no argument 'chanels'. Did you mean 'channels'?"
        in message
    )
    assert "other: Cannot import 'toy_modules.NoSuchThing'" in message
    assert "net: argument 'depth' of toy_modules.ConvBackbone got 'two'" in message


def test_hydra_searchpath_override_points_to_the_environment_variable(fixture_conf):
    with pytest.raises(ConfigError, match="add your config directories with LAZYDET_CONFIG_PATH"):
        compose("toy", ["hydra.searchpath=[file:///tmp]"])
