"""The multi-scale backbone contract shared by ResNet+FPN and ViT+SimpleFeaturePyramid:
``p2..p6``, 256 channels, strides 4..64, maps of ``input / stride``, described by output_shape().
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from helpers import tiny_vit

from lazydet.layers import ShapeSpec
from lazydet.modeling.backbone import (
    FPN,
    Backbone,
    LastLevelMaxPool,
    ResNet,
    SimpleFeaturePyramid,
)

CONTRACT = {f"p{k}": ShapeSpec(channels=256, stride=2**k) for k in range(2, 7)}


def _resnet_fpn(depth: int) -> Callable[[], Backbone]:
    return lambda: FPN(bottom_up=ResNet(depth=depth), top_block=LastLevelMaxPool())


def _tiny_vit_sfp() -> Backbone:
    vit = tiny_vit(img_size=128, window_size=4)
    return SimpleFeaturePyramid(net=vit, top_block=LastLevelMaxPool())


BUILDERS = {
    "resnet18_fpn": _resnet_fpn(18),
    "resnet50_fpn": _resnet_fpn(50),
    "tiny_vit_sfp": _tiny_vit_sfp,
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_multiscale_backbones_follow_the_p2_p6_contract(name: str) -> None:
    torch.manual_seed(0)
    backbone = BUILDERS[name]().eval()
    assert backbone.output_shape() == CONTRACT
    height, width = 128, 192  # multiples of 64, the coarsest stride
    assert height % backbone.size_divisibility == 0 and width % backbone.size_divisibility == 0
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, height, width))
    assert list(features) == list(CONTRACT)
    for level, spec in CONTRACT.items():
        expected = (2, spec.channels, height // spec.stride, width // spec.stride)
        assert features[level].shape == expected, level
        assert torch.isfinite(features[level]).all(), level


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_output_shape_describes_its_outputs(depth: int) -> None:
    backbone = ResNet(depth=depth).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 96))
    shapes = backbone.output_shape()
    assert list(features) == list(shapes) == ["res2", "res3", "res4", "res5"]
    for name, spec in shapes.items():
        assert features[name].shape == (1, spec.channels, 64 // spec.stride, 96 // spec.stride)


def test_backbone_is_abstract() -> None:
    with pytest.raises(TypeError):
        Backbone()  # type: ignore[abstract]
