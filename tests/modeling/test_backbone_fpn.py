"""FPN against torchvision's ResNet-FPN backbones (weights copied by name) and hand cases."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops import feature_pyramid_network as tv_fpn

from lazydet.layers import ShapeSpec
from lazydet.modeling.backbone import (
    FPN,
    Backbone,
    LastLevelMaxPool,
    LastLevelP6P7,
    ResNet,
    convert_torchvision_fpn_state_dict,
)


def _randomize_frozen_bn(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                n = module.weight.numel()
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def _compare(ours: FPN, reference: nn.Module, images: Tensor, names: dict[str, str]) -> None:
    ours.load_state_dict(convert_torchvision_fpn_state_dict(reference.state_dict()))
    ours.eval()
    reference.eval()
    with torch.no_grad():
        expected = reference(images)
        actual = ours(images)
    assert list(actual) == list(names.values())
    for reference_name, name in names.items():
        torch.testing.assert_close(actual[name], expected[reference_name], rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [(64, 96), (72, 100)], ids=["divisible", "not-divisible"])
def test_maxpool_fpn_matches_torchvision(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    reference = resnet_fpn_backbone(backbone_name="resnet18", weights=None)
    _randomize_frozen_bn(reference)
    ours = FPN(bottom_up=ResNet(depth=18), top_block=LastLevelMaxPool())
    names = {"0": "p2", "1": "p3", "2": "p4", "3": "p5", "pool": "p6"}
    _compare(ours, reference, torch.randn(1, 3, *size), names)


@pytest.mark.parametrize("in_feature", ["res5", "p5"])
def test_retinanet_p6p7_matches_torchvision(in_feature: str) -> None:
    torch.manual_seed(1)
    # torchvision picks p5 when in_channels == out_channels, else c5 (res5, 512 ch for ResNet-18).
    in_channels = 512 if in_feature == "res5" else 256
    reference = resnet_fpn_backbone(
        backbone_name="resnet18",
        weights=None,
        returned_layers=[2, 3, 4],
        extra_blocks=tv_fpn.LastLevelP6P7(in_channels, 256),
    )
    _randomize_frozen_bn(reference)
    ours = FPN(
        bottom_up=ResNet(depth=18),
        in_features=("res3", "res4", "res5"),
        top_block=LastLevelP6P7(in_channels=in_channels, out_channels=256, in_feature=in_feature),
    )
    assert ours.output_shape() == {
        f"p{k}": ShapeSpec(channels=256, stride=2**k) for k in (3, 4, 5, 6, 7)
    }
    names = {"0": "p3", "1": "p4", "2": "p5", "p6": "p6", "p7": "p7"}
    _compare(ours, reference, torch.randn(1, 3, 96, 96), names)


def test_torchvision_mask_rcnn_backbone_loads_strictly() -> None:
    detector = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None
    )
    ours = FPN(bottom_up=ResNet(depth=50), top_block=LastLevelMaxPool())
    converted = convert_torchvision_fpn_state_dict(detector.state_dict(), prefix="backbone.")
    ours.load_state_dict(converted)  # strict: every name maps
    torch.testing.assert_close(
        ours.lateral_convs[3][0].weight, detector.backbone.fpn.inner_blocks[3][0].weight
    )


def test_converter_rejects_foreign_keys() -> None:
    with pytest.raises(ValueError, match="rpn.head"):
        convert_torchvision_fpn_state_dict({"rpn.head.conv.weight": torch.zeros(1)})


class _FixedFeatures(Backbone):
    """A stub bottom-up backbone returning given maps (strides 16 and 32, 1 channel)."""

    def __init__(self, features: dict[str, Tensor]) -> None:
        super().__init__()
        self.features = features

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {"c4": ShapeSpec(channels=1, stride=16), "c5": ShapeSpec(channels=1, stride=32)}

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return self.features


@pytest.mark.parametrize("fuse_type", ["sum", "avg"])
def test_top_down_merge_hand_computed(fuse_type: str) -> None:
    c4 = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    c5 = torch.tensor([[10.0]]).view(1, 1, 1, 1)
    fpn = FPN(
        bottom_up=_FixedFeatures({"c4": c4, "c5": c5}),
        in_features=("c4", "c5"),
        out_channels=1,
        top_block=None,
        fuse_type=fuse_type,
    )
    # Identity lateral (1x1 weight 1) and output (3x3 with a centre 1) convs, zero bias.
    with torch.no_grad():
        for sequential in [*fpn.lateral_convs, *fpn.output_convs]:
            conv = sequential[0]
            conv.weight.zero_()
            conv.weight[0, 0, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] = 1.0
            conv.bias.zero_()
        out = fpn(torch.zeros(1, 3, 32, 32))
    assert list(out) == ["p4", "p5"]
    # p5 = c5; p4 = c4 + nearest-upsampled p5 (halved for "avg").
    expected_p4 = torch.tensor([[11.0, 12.0], [13.0, 14.0]])
    if fuse_type == "avg":
        expected_p4 = expected_p4 / 2
    torch.testing.assert_close(out["p5"].view(1, 1), c5.view(1, 1))
    torch.testing.assert_close(out["p4"].view(2, 2), expected_p4)


def test_convs_use_caffe2_xavier_fill() -> None:
    torch.manual_seed(0)
    fpn = FPN(bottom_up=ResNet(depth=50), top_block=LastLevelMaxPool())
    lateral = fpn.lateral_convs[3][0]  # 256 x 2048 x 1 x 1
    fan_in = 2048
    # Caffe2 XavierFill: U(-sqrt(3 / fan_in), sqrt(3 / fan_in)), variance 1 / fan_in, zero bias.
    assert lateral.weight.abs().max() <= math.sqrt(3 / fan_in)
    assert lateral.weight.var().item() == pytest.approx(1 / fan_in, rel=0.02)
    assert torch.count_nonzero(lateral.bias) == 0
    output = fpn.output_convs[0][0]
    assert output.weight.var().item() == pytest.approx(1 / (256 * 9), rel=0.02)


def test_group_norm_variant_names_and_no_bias() -> None:
    fpn = FPN(bottom_up=ResNet(depth=18), norm="GN")
    names = set(fpn.state_dict())
    assert {
        "lateral_convs.0.0.weight",
        "lateral_convs.0.1.weight",
        "output_convs.3.1.bias",
    } <= names
    assert "lateral_convs.0.0.bias" not in names
    assert isinstance(fpn.output_convs[0][1], nn.GroupNorm)


def test_size_divisibility_is_the_coarsest_bottom_up_stride() -> None:
    assert FPN(bottom_up=ResNet(depth=18)).size_divisibility == 32
    assert FPN(bottom_up=ResNet(depth=18), in_features=("res2", "res3")).size_divisibility == 8


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"in_features": ("res2", "res9")}, ValueError, "res9"),
        ({"in_features": ("res2", "res4")}, ValueError, "twice"),
        ({"fuse_type": "max"}, ValueError, "fuse_type"),
        ({"norm": "BatchNorm"}, ValueError, "FPN norm=.BatchNorm. is not a known norm"),
        (
            {"top_block": LastLevelP6P7(in_channels=256, out_channels=256, in_feature="res5")},
            ValueError,
            "in_channels=512",
        ),
        ({"top_block": LastLevelMaxPool(in_feature="res9")}, ValueError, "res9"),
        ({"top_block": LastLevelMaxPool(in_feature="p3")}, ValueError, "coarsest"),
        ({"top_block": nn.Identity()}, TypeError, "num_levels"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        FPN(bottom_up=ResNet(depth=18), **kwargs)


def test_bottom_up_must_be_a_backbone() -> None:
    with pytest.raises(TypeError, match="bottom_up"):
        FPN(bottom_up=torchvision.models.resnet18())
