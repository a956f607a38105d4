"""SimpleFeaturePyramid: hand-computed levels from a fixed feature, names, norms and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lazydet.layers import ChannelLayerNorm, ShapeSpec
from lazydet.modeling.backbone import (
    Backbone,
    LastLevelMaxPool,
    LastLevelP6P7,
    SimpleFeaturePyramid,
)


class _FixedFeature(Backbone):
    """A stub plain backbone returning one given map as ``last_feat`` (stride 16)."""

    def __init__(self, feature: Tensor) -> None:
        super().__init__()
        self.feature = feature

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {"last_feat": ShapeSpec(channels=self.feature.shape[1], stride=16)}

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"last_feat": self.feature}


def _make_identity(conv: nn.Conv2d) -> None:
    with torch.no_grad():
        conv.weight.zero_()
        for channel in range(min(conv.in_channels, conv.out_channels)):
            conv.weight[channel, channel, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] = 1
        conv.bias.zero_()


def test_levels_hand_computed_with_identity_convs() -> None:
    torch.manual_seed(0)
    feature = torch.randn(1, 4, 4, 6)
    sfp = SimpleFeaturePyramid(
        net=_FixedFeature(feature),
        out_channels=4,
        scale_factors=(2.0, 1.0, 0.5),
        top_block=LastLevelMaxPool(),
        norm=None,
    )
    for stage in sfp.stages:
        _make_identity(stage.lateral[0])
        _make_identity(stage.output[0])
    convt = sfp.stages[0].resample[0]  # 4 -> 2 channels, kernel 2, stride 2
    with torch.no_grad():
        convt.weight.copy_(torch.arange(4 * 2 * 2 * 2, dtype=torch.float32).view(4, 2, 2, 2))
        convt.bias.copy_(torch.tensor([0.5, -0.5]))
    with torch.no_grad():
        out = sfp(torch.zeros(1, 3, 64, 96))
    assert list(out) == ["p3", "p4", "p5", "p6"]
    # p3: each input pixel becomes a 2x2 block: out[o, 2y+i, 2x+j] = sum_c f[c,y,x] w[c,o,i,j] + b[o].
    expected_p3 = torch.einsum("cyx,coij->oyixj", feature[0], convt.weight).reshape(2, 8, 12)
    expected_p3 = expected_p3 + convt.bias[:, None, None]
    # The identity 1x1 lateral maps 2 channels into 4: the last two stay zero.
    torch.testing.assert_close(out["p3"][0, :2], expected_p3)
    assert torch.count_nonzero(out["p3"][0, 2:]) == 0
    torch.testing.assert_close(out["p4"], feature)
    torch.testing.assert_close(out["p5"], F.max_pool2d(feature, 2))
    torch.testing.assert_close(out["p6"], out["p5"][:, :, ::2, ::2])


def test_channel_layer_norm_matches_layer_norm_over_channels() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 8, 3, 5)
    norm = ChannelLayerNorm(8)
    reference = nn.LayerNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
        reference.weight.copy_(norm.weight)
        reference.bias.copy_(norm.bias)
        expected = reference(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(norm(x), expected)


def test_layer_names_follow_the_documented_layout() -> None:
    sfp = SimpleFeaturePyramid(net=_FixedFeature(torch.zeros(1, 64, 2, 2)))
    names = set(sfp.state_dict())
    # scale 4.0: ConvTranspose, LayerNorm, GELU, ConvTranspose; then 1x1 and 3x3 convs + LN.
    for name in (
        "stages.0.resample.0.weight",
        "stages.0.resample.1.weight",
        "stages.0.resample.3.weight",
        "stages.0.lateral.0.weight",
        "stages.0.lateral.1.weight",
        "stages.3.output.0.weight",
        "stages.3.output.1.bias",
    ):
        assert name in names, name
    # With LayerNorm the convs carry no bias (the norm's shift replaces it).
    assert "stages.0.lateral.0.bias" not in names
    assert sfp.stages[0].resample[3].out_channels == 16  # 64 / 4


def test_size_divisibility_is_the_coarsest_pyramid_stride() -> None:
    net = _FixedFeature(torch.zeros(1, 64, 2, 2))
    assert SimpleFeaturePyramid(net=net).size_divisibility == 32
    assert SimpleFeaturePyramid(net=net, scale_factors=(4.0, 2.0, 1.0)).size_divisibility == 16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale_factors": (3.0,)}, "scale factor 3.0"),
        ({"scale_factors": (1.0, 2.0)}, "decreasing"),
        ({"in_feature": "res5"}, "res5"),
        ({"norm": "BatchNorm"}, "SimpleFeaturePyramid norm=.BatchNorm. is not a known norm"),
        (
            {"top_block": LastLevelP6P7(in_channels=2048, out_channels=256, in_feature="res5")},
            "res5",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimpleFeaturePyramid(net=_FixedFeature(torch.zeros(1, 64, 2, 2)), **kwargs)
