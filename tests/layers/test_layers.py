"""lazydet.layers: the norm factory, conv-norm-act, weight inits, the module-or-factory builder
and ShapeSpec, each against a hand-built reference."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from lazydet.layers import (
    ChannelLayerNorm,
    ShapeSpec,
    build_module,
    caffe2_msra_fill,
    caffe2_xavier_fill,
    check_positive_sizes,
    conv_norm_act,
    conv_norm_act_stack,
    get_norm,
    normal_fill,
)
from lazydet.modeling.backbone import ResNet
from lazydet.modeling.roi_heads import (
    FastRCNNConvFCHead,
    FastRCNNOutputLayers,
    KRCNNConvDeconvUpsampleHead,
    MaskRCNNConvUpsampleHead,
)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("BN", nn.BatchNorm2d),
        ("SyncBN", nn.SyncBatchNorm),
        ("FrozenBN", FrozenBatchNorm2d),
        ("GN", nn.GroupNorm),
        ("LN", ChannelLayerNorm),
    ],
)
def test_norm_names(name, cls) -> None:
    norm = get_norm(name, 64)
    assert type(norm) is cls
    if cls is nn.GroupNorm:
        assert (norm.num_groups, norm.num_channels) == (32, 64)  # Detectron2's GN
    else:
        assert norm.weight.shape == (64,)


def test_norm_class_partial_and_none() -> None:
    assert type(get_norm(nn.BatchNorm2d, 8)) is nn.BatchNorm2d
    partial = get_norm(functools.partial(nn.GroupNorm, 4), 8)
    assert (partial.num_groups, partial.num_channels) == (4, 8)
    assert get_norm(None, 8) is None and get_norm("", 8) is None
    x = torch.randn(2, 8, 3, 5)
    torch.testing.assert_close(
        get_norm("LN", 8)(x),
        nn.functional.layer_norm(x.permute(0, 2, 3, 1), (8,), eps=1e-6).permute(0, 3, 1, 2),
    )


def test_norm_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="FPN norm='BatchNorm' is not a known norm; use one of BN"):
        get_norm("BatchNorm", 8, owner="FPN norm")
    with pytest.raises(TypeError, match="got int"):
        get_norm(3, 8)
    with pytest.raises(TypeError, match="returned int for 8 channels, not an nn.Module"):
        get_norm(lambda channels: channels, 8)


def test_conv_norm_act_layout_bias_and_init() -> None:
    block = conv_norm_act(4, 6, 3, stride=2, norm="BN", activation=nn.ReLU)
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    conv = block[0]
    assert conv.bias is None and conv.stride == (2, 2) and conv.padding == (1, 1)
    plain = conv_norm_act(4, 6, 1)
    assert len(plain) == 1 and plain[0].bias is not None and plain[0].padding == (0, 0)
    # init runs on the conv, on the same random stream as a hand-built reference.
    torch.manual_seed(0)
    ours = conv_norm_act(4, 6, 3, init=caffe2_xavier_fill)[0]
    torch.manual_seed(0)
    reference = nn.Conv2d(4, 6, 3, padding=1)
    nn.init.kaiming_uniform_(reference.weight, a=1)
    torch.testing.assert_close(ours.weight, reference.weight)
    assert not ours.bias.any()


def test_conv_norm_act_stack_is_flat() -> None:
    stack = conv_norm_act_stack(3, [5, 7], norm=None)
    assert [type(m) for m in stack] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU]
    assert stack[2].in_channels == 5 and stack[2].out_channels == 7
    normed = conv_norm_act_stack(3, [32], norm="GN")
    assert [name for name, _ in normed.named_children()] == ["0", "1", "2"]
    assert len(conv_norm_act_stack(3, [])) == 0


def test_weight_inits_have_the_documented_distributions() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 128, 3)
    fan_in, fan_out = 64 * 9, 128 * 9
    caffe2_xavier_fill(conv)
    bound = math.sqrt(3 / fan_in)  # uniform with variance 1 / fan_in
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.95 * bound
    assert not conv.bias.any()
    caffe2_msra_fill(conv)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    normal_fill(conv, std=0.01)
    assert conv.weight.std().item() == pytest.approx(0.01, rel=0.05)
    linear = nn.Linear(10, 4)
    caffe2_xavier_fill(linear)
    assert linear.weight.abs().max() <= math.sqrt(3 / 10) and not linear.bias.any()


def test_build_module() -> None:
    module = nn.Linear(2, 3)
    assert build_module(module, owner="M", what="head", in_features=9) is module
    assert build_module(None, owner="M", what="head") is None
    built = build_module(
        functools.partial(nn.Linear, bias=False),
        owner="M",
        what="head",
        in_features=2,
        out_features=5,
    )
    assert isinstance(built, nn.Linear) and built.weight.shape == (5, 2) and built.bias is None
    with pytest.raises(TypeError, match="M head must be an nn.Module or a callable"):
        build_module("nn.Linear", owner="M", what="head")
    with pytest.raises(TypeError, match="M head factory returned a dict, not an nn.Module"):
        build_module(dict, owner="M", what="head")


def test_shape_spec_validates() -> None:
    assert ShapeSpec(channels=256, stride=4) == ShapeSpec(256, 4)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="must be a positive int"):
            ShapeSpec(channels=bad, stride=4)


@pytest.mark.parametrize(
    "norm", ["BN", nn.BatchNorm2d, functools.partial(nn.BatchNorm2d, eps=1e-3)]
)
def test_resnet_freezes_batch_norms_given_any_way(norm) -> None:
    model = ResNet(depth=18, norm=norm, freeze_at=2)
    eps = 1e-3 if isinstance(norm, functools.partial) else 1e-5
    frozen = [model.bn1, model.layer1[0].bn1, model.layer1[1].downsample or model.layer1[1].bn2]
    assert all(type(m) is FrozenBatchNorm2d and m.eps == eps for m in frozen)
    assert type(model.layer2[0].bn1) is nn.BatchNorm2d and model.layer2[0].bn1.eps == eps
    assert type(model.layer2[0].downsample[1]) is nn.BatchNorm2d


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: MaskRCNNConvUpsampleHead(in_channels=0, num_classes=3, conv_dims=[8]),
            "MaskRCNNConvUpsampleHead needs positive in_channels, num_classes and conv_dims, "
            "got in_channels=0, num_classes=3, conv_dims=(8,).",
        ),
        (
            lambda: KRCNNConvDeconvUpsampleHead(in_channels=8, num_keypoints=17, conv_dims=[8, -1]),
            "KRCNNConvDeconvUpsampleHead needs positive in_channels, num_keypoints and conv_dims, "
            "got in_channels=8, num_keypoints=17, conv_dims=(8, -1).",
        ),
        (
            lambda: FastRCNNConvFCHead(
                in_channels=8, pooler_resolution=7, conv_dims=[], fc_dims=[0]
            ),
            "FastRCNNConvFCHead needs positive in_channels, conv_dims and fc_dims, "
            "got in_channels=8, conv_dims=(), fc_dims=(0,).",
        ),
        (
            lambda: FastRCNNOutputLayers(input_size=16, num_classes=0),
            "FastRCNNOutputLayers needs positive input_size and num_classes, "
            "got input_size=16, num_classes=0.",
        ),
    ],
)
def test_heads_refuse_a_size_that_is_not_positive_naming_every_size(build, message):
    with pytest.raises(ValueError) as refused:
        build()
    assert str(refused.value) == message


def test_check_positive_sizes_passes_positive_sizes_and_one_name():
    check_positive_sizes("Head", in_channels=1, dims=(2, 3))
    with pytest.raises(ValueError) as refused:
        check_positive_sizes("Head", dims=(0,))
    assert str(refused.value) == "Head needs positive dims, got dims=(0,)."
