"""Optimizer parameter groups and lr schedules built from the config groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lazydet.config import compose, instantiate
from lazydet.engine.optim import param_groups
from lazydet.modeling.backbone import ViT
from lazydet.modeling.backbone.vit_layer_decay import vit_lr_decay_rate, vit_num_layers


def _group_of(groups: list[dict], param: torch.Tensor) -> dict:
    (group,) = [g for g in groups if any(p is param for p in g["params"])]
    return group


class _TinyViTModel(nn.Module):
    """A model whose parameter names follow the detector's (``backbone.net.blocks.i``)."""

    def __init__(self, depth: int = 3) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.net = ViT(
            img_size=32, patch_size=16, embed_dim=16, depth=depth, num_heads=2, use_rel_pos=False
        )
        self.head = nn.Linear(16, 2)


def test_no_decay_on_norms_and_biases_and_each_param_once():
    conv = nn.Conv2d(3, 4, 3)
    model = nn.Sequential(conv, nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.Conv2d(4, 4, 1))
    model.append(model[0])  # shared: must appear once
    model[3].weight.requires_grad_(False)  # frozen: must not appear
    groups = param_groups(module=model, weight_decay_norm=0.0, weight_decay_bias=0.0)
    all_params = [p for g in groups for p in g["params"]]
    assert len(all_params) == len({id(p) for p in all_params})
    assert not any(p is model[3].weight for p in all_params)
    assert "weight_decay" not in _group_of(groups, conv.weight)  # the optimizer's own decay
    for p in (conv.bias, model[3].bias, *model[1].parameters(), *model[2].parameters()):
        assert _group_of(groups, p)["weight_decay"] == 0.0
    # And the optimizer applies it: one SGD step moves a zero-grad decayed weight, not a bias.
    optimizer = torch.optim.SGD(groups, lr=1.0, weight_decay=0.5)
    before_w, before_b = conv.weight.detach().clone(), conv.bias.detach().clone()
    for p in all_params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.testing.assert_close(conv.weight, before_w * 0.5)
    torch.testing.assert_close(conv.bias, before_b)


def test_vit_lr_decay_rate_matches_vitdet_rule():
    # Hand-computed with Detectron2's rule for 12 layers and rate 0.7.
    rate, n = 0.7, 12
    assert vit_lr_decay_rate("backbone.net.pos_embed", lr_decay_rate=rate, num_layers=n) == rate**13
    assert vit_lr_decay_rate(
        "backbone.net.patch_embed.proj.weight", lr_decay_rate=rate, num_layers=n
    ) == pytest.approx(rate**13)
    assert vit_lr_decay_rate(
        "backbone.net.blocks.0.attn.qkv.weight", lr_decay_rate=rate, num_layers=n
    ) == pytest.approx(rate**12)
    assert vit_lr_decay_rate(
        "backbone.net.blocks.11.mlp.fc2.bias", lr_decay_rate=rate, num_layers=n
    ) == pytest.approx(rate)
    for name in ("backbone.simfp_2.0.weight", "roi_heads.box_head.fc1.weight"):
        assert vit_lr_decay_rate(name, lr_decay_rate=rate, num_layers=n) == 1.0


def test_layer_decay_sets_group_lrs_and_norm_decay():
    model = _TinyViTModel(depth=3)
    assert vit_num_layers(model) == 3
    groups = param_groups(module=model, weight_decay_norm=0.0, vit_lr_decay=0.5, base_lr=0.1)
    net = model.backbone.net
    assert _group_of(groups, net.pos_embed)["lr"] == pytest.approx(0.1 * 0.5**4)
    assert _group_of(groups, net.blocks[0].attn.qkv.weight)["lr"] == pytest.approx(0.1 * 0.5**3)
    assert _group_of(groups, net.blocks[2].mlp.fc1.weight)["lr"] == pytest.approx(0.1 * 0.5)
    norm_group = _group_of(groups, net.blocks[1].norm1.weight)
    assert norm_group["lr"] == pytest.approx(0.1 * 0.5**2) and norm_group["weight_decay"] == 0.0
    assert "lr" not in _group_of(groups, model.head.weight)  # follows the optimizer's lr
    # The scheduler scales every group from its own starting lr.
    optimizer = torch.optim.SGD(groups, lr=0.1)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.5, total_iters=2)
    optimizer.step()
    scheduler.step()
    assert _group_of(optimizer.param_groups, net.pos_embed)["lr"] == pytest.approx(
        0.1 * 0.5**4 * 0.75
    )


def test_auto_layer_decay_is_a_no_op_without_vit():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    groups = param_groups(module=model, vit_lr_decay="auto")
    assert all("lr" not in g for g in groups)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(vit_lr_decay=0.7), "no ViT backbone"),
        (dict(vit_lr_decay=1.5), r"must be in \(0, 1\]"),
        (dict(overrides={"weight": {"momentum": 0.0}}), "allowed"),
        (dict(overrides={"weight": {"lr_factor": 0.1}}), "base_lr"),
    ],
)
def test_param_groups_errors_name_the_setting(kwargs, message):
    with pytest.raises(ValueError, match=message):
        param_groups(module=nn.Linear(2, 2), **kwargs)


def test_auto_rate_unknown_depth_asks_for_a_number():
    with pytest.raises(ValueError, match="vit_lr_decay to a number"):
        param_groups(module=_TinyViTModel(depth=3), vit_lr_decay="auto", base_lr=0.1)


def _lrs(scheduler, optimizer, iters: int) -> list[float]:
    lrs = []
    for _ in range(iters):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def _build_schedule(name: str):
    cfg = compose("quickstart", [f"schedule={name}"])
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.02)
    scheduler = instantiate(cfg.schedule.lr_scheduler, refs={"optimizer": optimizer}, root=cfg)
    return cfg.schedule, optimizer, scheduler


def test_quickstart_schedule_warmup_then_steps():
    schedule, optimizer, scheduler = _build_schedule("quickstart")
    warmup = schedule.lr_scheduler.milestones[0]
    steps = [m + warmup for m in schedule.lr_scheduler.schedulers[1].milestones]
    lrs = _lrs(scheduler, optimizer, schedule.max_iter)
    # Linear warm-up from 0.1% of the lr (torch's LinearLR: factor 0.001 + 0.999 * t / warmup).
    for t in (0, warmup // 2, warmup - 1):
        assert lrs[t] == pytest.approx(0.02 * (0.001 + 0.999 * t / warmup), rel=1e-6)
    assert lrs[warmup] == pytest.approx(0.02)
    assert lrs[steps[0] - 1] == pytest.approx(0.02)
    assert lrs[steps[0]] == pytest.approx(0.002)
    assert lrs[steps[1]] == pytest.approx(0.0002)
    assert lrs[-1] == pytest.approx(0.0002)


def test_cosine_schedule_follows_the_formula():
    schedule, optimizer, scheduler = _build_schedule("1x_cosine")
    warmup = schedule.lr_scheduler.milestones[0]
    total = schedule.max_iter - warmup
    lrs = _lrs(scheduler, optimizer, warmup + total // 2 + 1)
    for t in (warmup, warmup + total // 4, warmup + total // 2):
        expected = 0.02 * 0.5 * (1 + math.cos(math.pi * (t - warmup) / total))
        assert lrs[t] == pytest.approx(expected, rel=1e-4)


def test_optimizer_groups_follow_the_lr_override():
    # base_lr is "${optimizer.lr}": a command-line lr reaches the decayed groups too.
    cfg = compose(
        "mask_rcnn_fpn", ["dataset=shapes", "model.backbone=resnet18", "optimizer.lr=0.05"]
    )
    assert cfg.optimizer.params.base_lr == "${optimizer.lr}"  # resolved when built
    model = _TinyViTModel(depth=2)
    cfg.optimizer.params.vit_lr_decay = 0.5
    optimizer = instantiate(cfg.optimizer, refs={"model": model}, root=cfg)
    assert _group_of(optimizer.param_groups, model.head.weight)["lr"] == 0.05
    net = model.backbone.net
    assert _group_of(optimizer.param_groups, net.pos_embed)["lr"] == pytest.approx(0.05 * 0.5**3)
    decays = {g.get("weight_decay") for g in optimizer.param_groups}
    assert decays == {1e-4, 0.0}


@pytest.mark.slow
def test_vit_b_gets_vitdet_decay_from_the_config():
    cfg = compose("mask_rcnn_fpn", ["dataset=shapes", "model.backbone=vit_b", "optimizer=adamw"])
    model = instantiate(cfg.model)
    optimizer = instantiate(cfg.optimizer, refs={"model": model})
    lr = cfg.optimizer.lr
    net = model.backbone.net
    assert _group_of(optimizer.param_groups, net.pos_embed)["lr"] == pytest.approx(lr * 0.7**13)
    assert _group_of(optimizer.param_groups, net.pos_embed)["weight_decay"] == 0.0
    assert _group_of(optimizer.param_groups, net.blocks[11].attn.qkv.weight)["lr"] == (
        pytest.approx(lr * 0.7)
    )
