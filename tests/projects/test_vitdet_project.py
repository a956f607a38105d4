"""projects/vitdet: its config directory layers over lazydet's conf/, and its experiment goes
through compose -> validate -> build -> two training steps with LSJ data and layer-wise lr decay."""

from __future__ import annotations

import json

import pytest
import torch

from lazydet.config import compose, instantiate, validate
from lazydet.engine.run import build, seed_everything, train_built
from lazydet.modeling.backbone.vit_layer_decay import vit_lr_decay_rate


def test_experiments_are_found_on_the_search_path(project):
    project("vitdet")
    for name, backbone in [("vitdet_mask_rcnn_b", 768), ("vitdet_mask_rcnn_l", 1024)]:
        cfg = compose(name)  # validates: every target, argument and interpolation
        assert cfg.model.backbone.net.embed_dim == backbone
        assert cfg.optimizer.params.vit_lr_decay == "auto"
        assert cfg.schedule.max_iter == 184_375
        assert cfg.model.roi_heads.box_head.norm == "LN"
    # lazydet's own experiments still compose with the project's directory first on the path.
    assert compose("mask_rcnn_fpn").model.backbone.bottom_up.depth == 50


def test_vitdet_trains_a_few_steps(project, tiny_overrides, tmp_path):
    project("vitdet")
    cfg = compose(
        "vitdet_mask_rcnn_b",
        [
            *tiny_overrides,
            "model.backbone=vit_tiny",  # the project's own option of lazydet's group
            "lsj.image_size=128",
            "optimizer.params.vit_lr_decay=0.7",
            "optimizer.lr=0.0001",
            "train.eval_period=0",
        ],
    )
    validate(cfg)

    # LSJ: every training image is a 128 x 128 square, whatever the jitter drew.
    loader = instantiate(cfg.dataloader.train)
    batch = next(iter(loader))
    assert [tuple(d["image"].shape[1:]) for d in batch] == [(128, 128), (128, 128)]

    seed_everything(0)
    built = build(cfg)
    model, optimizer = built["model"], built["optimizer"]
    # Layer-wise decay: lr * 0.7 ** (num_blocks + 1 - layer_id), hand-computed for 2 blocks.
    # ("initial_lr": the group's lr before the warm-up scheduler scaled it down.)
    lr_of = {
        id(p): group["initial_lr"] for group in optimizer.param_groups for p in group["params"]
    }
    names = dict(model.named_parameters())
    expected = {
        "backbone.net.pos_embed": 1e-4 * 0.7**3,
        "backbone.net.patch_embed.proj.weight": 1e-4 * 0.7**3,
        "backbone.net.blocks.0.attn.qkv.weight": 1e-4 * 0.7**2,
        "backbone.net.blocks.1.mlp.fc1.weight": 1e-4 * 0.7,
        "roi_heads.box_predictor.cls_score.weight": 1e-4,
    }
    for name, lr in expected.items():
        assert lr_of[id(names[name])] == pytest.approx(lr), name
        assert vit_lr_decay_rate(name, lr_decay_rate=0.7, num_layers=2) == pytest.approx(lr / 1e-4)

    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result = train_built(cfg, built, tmp_path / "run")
    assert result.iteration == 2
    lines = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    losses = [line for line in lines if "total_loss" in line]
    assert [line["iteration"] for line in losses] == [1, 2]
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls"} <= set(losses[0])
    assert all(torch.isfinite(torch.tensor(line["total_loss"])) for line in losses)
    after = model.state_dict()
    assert not torch.equal(
        before["backbone.net.blocks.0.attn.qkv.weight"],
        after["backbone.net.blocks.0.attn.qkv.weight"],
    )
    assert (tmp_path / "run" / "model_final.pth").is_file()
