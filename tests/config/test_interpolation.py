"""``${...}`` interpolations stay live until the config is built, and validate() checks them."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lazydet.config import (
    Config,
    ConfigError,
    L,
    compose,
    instantiate,
    load,
    ref,
    resolve,
    save,
    validate,
)


def _net_config() -> Config:
    return Config(
        width=4,
        dataset=dict(num_classes=3),
        model=L(torch.nn.Linear)(in_features="${width}", out_features="${dataset.num_classes}"),
    )


def test_compose_keeps_the_link_and_a_part_builds_against_the_whole(fixture_conf):
    # Detectron2's notebook habit: edit one value, build a part; the part follows the edit.
    cfg = compose("mask_rcnn_fpn", ["dataset=shapes", "model.backbone=resnet18"])
    assert cfg.model.roi_heads.num_classes == "${dataset.num_classes}"
    cfg.dataset.num_classes = 5
    model = instantiate(cfg.model)
    assert model.roi_heads.box_predictor.cls_score.out_features == 5 + 1  # + background
    assert resolve(cfg.model).roi_heads.num_classes == 5
    assert cfg.model.roi_heads.num_classes == "${dataset.num_classes}"  # resolve() copies


def test_loaded_and_edited_configs_pass_values_not_strings(tmp_path):
    cfg = _net_config()
    layer = instantiate(cfg.model)
    assert (layer.in_features, layer.out_features) == (4, 3)
    cfg.width = 6  # an edit in Python is seen by the next build
    assert instantiate(cfg).get("model").in_features == 6
    for name in ("c.py", "c.yaml"):
        save(cfg, tmp_path / name)
        assert "${width}" in (tmp_path / name).read_text()  # dumps keep the link
        loaded = load(tmp_path / name)
        assert loaded.model.in_features == "${width}"
        assert instantiate(loaded.model).in_features == 6
    # Hydra's own loader agrees.
    assert instantiate(OmegaConf.load(tmp_path / "c.yaml"))["model"].in_features == 6


def test_validate_names_the_key_of_a_dangling_or_misspelled_interpolation():
    cfg = _net_config()
    cfg.model.out_features = "${dataset.num_clases}"
    with pytest.raises(
        ConfigError, match=r"model.out_features: cannot resolve '\$\{dataset.num_clases\}'"
    ):
        validate(cfg)
    with pytest.raises(Exception, match=r"model.out_features: cannot resolve"):
        instantiate(cfg.model)
    # A resolved value of the wrong type is caught like a literal one.
    cfg.dataset.name = "coco"
    cfg.model.out_features = "${dataset.name}"
    with pytest.raises(ConfigError, match=r"argument 'out_features' of torch.nn.Linear got 'coco'"):
        validate(cfg)


def test_interpolation_cycles_are_one_message():
    cfg = Config(a="${b}", b="${a}", n=L(torch.nn.Linear)(in_features="${a}", out_features=2))
    with pytest.raises(ConfigError, match=r"n.in_features: cannot resolve"):
        validate(cfg)


def test_resolve_gives_the_values_on_request(interp_conf, capsys):
    cfg = compose("interp", ["width=6"])
    assert resolve(cfg).net.channels == 6 and cfg.net.channels == "${width}"


def test_refs_given_to_a_part_of_a_config_do_not_collide_with_its_argument_names():
    # schedule.lr_scheduler has an argument named 'optimizer' that is ref("optimizer"): building
    # the part alone with refs={"optimizer": obj} must hand over obj, not report a cycle.
    cfg = Config(
        optimizer=L(dict)(lr=0.1),
        schedule=dict(lr_scheduler=L(dict)(optimizer=ref("optimizer"), step="${optimizer.lr}")),
    )
    given = object()
    built = instantiate(cfg.schedule.lr_scheduler, refs={"optimizer": given})
    assert built["optimizer"] is given
    assert built["step"] == 0.1
