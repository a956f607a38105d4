"""The conf/ zoo: every experiment composes with every backbone option and runs a forward pass."""

from __future__ import annotations

import pytest
import torch

from lazydet.config import compose, instantiate
from lazydet.config.tree import ConfigTree, builtin_config_root

ZOO = ConfigTree((builtin_config_root(),))
# The torchvision_* presets pin the torchvision layout (ResNet-50); the equivalence tests cover them.
EXPERIMENTS = [e for e in ZOO.experiments() if not e.startswith("torchvision_")]
BACKBONES = ZOO.groups()["model/backbone"]


def test_zoo_has_the_promised_options():
    assert {"resnet18", "resnet50", "resnet101", "vit_b", "vit_l"} <= set(BACKBONES)
    assert {"sgd", "adamw"} <= set(ZOO.groups()["optimizer"])
    assert {"1x", "3x"} <= set(ZOO.groups()["schedule"])
    assert {"coco2017", "coco2017_keypoints", "voc2012", "shapes"} <= set(ZOO.groups()["dataset"])


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_with_every_backbone(experiment, backbone, monkeypatch):
    monkeypatch.delenv("LAZYDET_CONFIG_PATH", raising=False)
    cfg = compose(experiment, ["dataset=shapes", f"model.backbone={backbone}"])
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    shapes = model.backbone.output_shape()
    assert {"p2", "p3", "p4", "p5", "p6"} <= set(shapes)
    assert all(
        shapes[f"p{k}"].channels == 256 and shapes[f"p{k}"].stride == 2**k for k in range(2, 7)
    )
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)
    with torch.inference_mode():
        (output,) = model([{"image": image, "height": 48, "width": 64}])
    instances = output["instances"]
    assert instances.image_size == (48, 64)
    boxes = instances.pred_boxes.tensor
    assert boxes.shape[1] == 4 and torch.isfinite(boxes).all()
    assert (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 48).all()
