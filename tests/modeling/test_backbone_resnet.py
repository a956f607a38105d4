"""ResNet backbone against torchvision's ResNets (same names, same weights, same outputs)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from lazydet.layers import ShapeSpec
from lazydet.modeling.backbone import ResNet

TORCHVISION_RESNETS = {
    18: torchvision.models.resnet18,
    50: torchvision.models.resnet50,
    101: torchvision.models.resnet101,
}


def _randomize_norm_statistics(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine terms (init leaves them 0/1).

    Scales below 1 keep random-weight activations O(1) down to res5, so float32 rounding stays
    far below the 1e-5 tolerance (with scales near 1, ResNet-50's res5 reaches ~600).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d | FrozenBatchNorm2d):
                n = module.running_mean.numel()
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) * 0.4 + 0.2)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def _torchvision_stages(model: torchvision.models.ResNet, images: torch.Tensor) -> dict:
    """torchvision's layer1..layer4 outputs, computed with torchvision's own modules."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    outputs = {}
    for index, name in enumerate(("res2", "res3", "res4", "res5")):
        x = getattr(model, f"layer{index + 1}")(x)
        outputs[name] = x
    return outputs


def _without_fc(state_dict: dict) -> dict:
    return {k: v for k, v in state_dict.items() if not k.startswith("fc.")}


@pytest.mark.parametrize("depth", [18, 50, 101])
def test_state_dict_names_and_shapes_match_torchvision(depth: int) -> None:
    reference = TORCHVISION_RESNETS[depth]().state_dict()
    ours = ResNet(depth=depth, norm="BN", freeze_at=0).state_dict()
    expected = {k: tuple(v.shape) for k, v in _without_fc(reference).items()}
    assert {k: tuple(v.shape) for k, v in ours.items()} == expected


def test_resnext_names_match_torchvision() -> None:
    reference = torchvision.models.resnext50_32x4d().state_dict()
    ours = ResNet(depth=50, groups=32, width_per_group=4, norm="BN", freeze_at=0).state_dict()
    expected = {k: tuple(v.shape) for k, v in _without_fc(reference).items()}
    assert {k: tuple(v.shape) for k, v in ours.items()} == expected


@pytest.mark.parametrize("depth", [18, 50])
def test_frozen_bn_outputs_match_torchvision(depth: int) -> None:
    torch.manual_seed(depth)
    reference = TORCHVISION_RESNETS[depth](weights=None).eval()
    _randomize_norm_statistics(reference)
    ours = ResNet(depth=depth, norm="FrozenBN").eval()
    # FrozenBatchNorm2d drops BatchNorm's num_batches_tracked, so the load is strict otherwise.
    ours.load_state_dict(_without_fc(reference.state_dict()))

    images = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        expected = _torchvision_stages(reference, images)
        actual = ours(images)
    assert list(actual) == ["res2", "res3", "res4", "res5"]
    for name in expected:
        assert expected[name].abs().max() > 0.1  # a real signal, not vanishing activations
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-5)


def test_stride_in_1x1_matches_torchvision_with_strides_moved() -> None:
    torch.manual_seed(1)
    reference = torchvision.models.resnet50(weights=None).eval()
    _randomize_norm_statistics(reference)
    # The reference for the original (Caffe2/MSRA) layout: torchvision's modules with the
    # stride of every first bottleneck moved from the 3x3 conv to the first 1x1 conv.
    for layer in (reference.layer2, reference.layer3, reference.layer4):
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    ours = ResNet(depth=50, stride_in_1x1=True).eval()
    ours.load_state_dict(_without_fc(reference.state_dict()))

    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = _torchvision_stages(reference, images)["res5"]
        actual = ours(images)["res5"]
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    # And it really is a different network than the default layout.
    default_layout = ResNet(depth=50, stride_in_1x1=False).eval()
    default_layout.load_state_dict(_without_fc(reference.state_dict()))
    with torch.no_grad():
        assert not torch.allclose(default_layout(images)["res5"], expected, atol=1e-2)


def test_trainable_bn_matches_torchvision_in_train_mode() -> None:
    torch.manual_seed(2)
    reference = torchvision.models.resnet18(weights=None).train()
    ours = ResNet(depth=18, norm="BN", freeze_at=0).train()
    ours.load_state_dict(_without_fc(reference.state_dict()))
    images = torch.randn(2, 3, 64, 64)
    expected = _torchvision_stages(reference, images)["res5"]
    actual = ours(images)["res5"]
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    # Batch statistics were updated the same way.
    torch.testing.assert_close(ours.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)


@pytest.mark.parametrize(
    ("freeze_at", "frozen_prefixes"),
    [
        (0, ()),
        (1, ("conv1.", "bn1.")),
        (2, ("conv1.", "bn1.", "layer1.")),
        (3, ("conv1.", "bn1.", "layer1.", "layer2.")),
        (5, ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")),
    ],
)
def test_freeze_at_freezes_the_leading_parts(freeze_at: int, frozen_prefixes: tuple) -> None:
    model = ResNet(depth=18, norm="BN", freeze_at=freeze_at)
    for name, parameter in model.named_parameters():
        assert parameter.requires_grad == (not name.startswith(frozen_prefixes)), name
    # Frozen BatchNorms use fixed statistics; trainable ones stay BatchNorm2d.
    for name, module in model.named_modules():
        if name.startswith(("bn1", "layer")) and name.endswith(("bn1", "bn2", "downsample.1")):
            frozen = f"{name}.".startswith(frozen_prefixes)
            expected = FrozenBatchNorm2d if frozen else nn.BatchNorm2d
            assert type(module) is expected, name


def test_frozen_stages_get_no_gradient() -> None:
    model = ResNet(depth=18, norm="BN", freeze_at=2).train()
    model(torch.randn(2, 3, 64, 64))["res5"].sum().backward()
    assert model.conv1.weight.grad is None
    assert model.layer1[0].conv1.weight.grad is None
    assert model.layer2[0].conv1.weight.grad is not None


def test_out_features_subset_builds_only_needed_stages() -> None:
    torch.manual_seed(3)
    full = ResNet(depth=18).eval()
    partial = ResNet(depth=18, out_features=("res4", "res3")).eval()
    assert not hasattr(partial, "layer4")
    partial.load_state_dict(
        {k: v for k, v in full.state_dict().items() if not k.startswith("layer4.")}
    )
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = full(images)
        actual = partial(images)
    assert list(actual) == ["res3", "res4"]
    assert partial.output_shape() == {
        "res3": ShapeSpec(channels=128, stride=8),
        "res4": ShapeSpec(channels=256, stride=16),
    }
    torch.testing.assert_close(actual["res4"], expected["res4"], rtol=0, atol=0)


def test_output_shape_of_resnet50() -> None:
    assert ResNet(depth=50).output_shape() == {
        "res2": ShapeSpec(channels=256, stride=4),
        "res3": ShapeSpec(channels=512, stride=8),
        "res4": ShapeSpec(channels=1024, stride=16),
        "res5": ShapeSpec(channels=2048, stride=32),
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 42}, "depth=42"),
        ({"out_features": ("res6",)}, "out_features"),
        ({"out_features": ()}, "out_features"),
        ({"freeze_at": 6}, "freeze_at=6"),
        ({"norm": "XN"}, "norm='XN' is not a known norm"),
        ({"norm": None}, "norm=None"),
        ({"depth": 18, "groups": 32}, "basic blocks"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ResNet(**kwargs)


def test_wrong_input_channels_raise() -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        ResNet(depth=18)(torch.zeros(1, 1, 32, 32))


def test_shape_spec_is_frozen_and_validated() -> None:
    spec = ShapeSpec(channels=256, stride=4)
    with pytest.raises(AttributeError):
        spec.channels = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="stride"):
        ShapeSpec(channels=256, stride=0)
