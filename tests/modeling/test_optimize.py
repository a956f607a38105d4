"""Inference optimisations give the unoptimised model's outputs (the reference), to 1e-4."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from lazydet.modeling.anchor_generator import DefaultAnchorGenerator
from lazydet.modeling.backbone import FPN, LastLevelP6P7, ResNet
from lazydet.modeling.meta_arch.retinanet import RetinaNet
from lazydet.modeling.optimize import fold_frozen_batchnorm, optimize_for_inference


def _random_frozen_norms(model: nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            n = module.weight.numel()
            module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)


def _assert_same_detections(got, expected, *, same_classes: bool) -> None:
    """The 50 detections of ``got`` are ``expected``'s up to float rounding (boxes and scores
    within 1e-4), and with ``same_classes`` the very same classes."""
    assert len(got) == len(expected) == 50
    torch.testing.assert_close(
        got.pred_boxes.tensor, expected.pred_boxes.tensor, rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(got.scores, expected.scores, rtol=1e-4, atol=1e-4)
    if same_classes:
        assert torch.equal(got.pred_classes, expected.pred_classes)


def test_fold_frozen_batchnorm_keeps_resnet_features() -> None:
    torch.manual_seed(0)
    model = ResNet(depth=18).eval()
    _random_frozen_norms(model)
    reference = copy.deepcopy(model)
    num_norms = sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules())

    assert fold_frozen_batchnorm(model) == num_norms == 20  # stem + 16 in blocks + 3 shortcuts
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    image = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected, got = reference(image), model(image)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-4)


def test_fold_frozen_batchnorm_on_torchvision_resnet() -> None:
    """torchvision's own ResNet with frozen norms (its detection backbones) folds the same way."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(norm_layer=FrozenBatchNorm2d).eval()
    _random_frozen_norms(model, seed=1)
    reference = copy.deepcopy(model)
    assert fold_frozen_batchnorm(model) == 20
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(image), reference(image), rtol=1e-4, atol=1e-4)


def _small_retinanet() -> RetinaNet:
    model = RetinaNet(
        backbone=FPN(bottom_up=ResNet(depth=18), out_channels=32),
        top_block=LastLevelP6P7(in_channels=32, out_channels=32, in_feature="p5"),
        head_in_features=["p3", "p4", "p5", "p6", "p7"],
        anchor_generator=DefaultAnchorGenerator(sizes=[[32], [64], [128], [256], [512]]),
        num_classes=3,
        score_threshold=0.0,
        max_detections_per_image=50,
    ).eval()
    _random_frozen_norms(model)
    with torch.no_grad():  # well-separated scores, so float rounding cannot reorder detections
        nn.init.normal_(model.head.cls_score.weight, 0.0, 0.5)
        nn.init.normal_(model.head.bbox_pred.weight, 0.0, 0.05)
    return model


def test_optimize_for_inference_keeps_detections() -> None:
    torch.manual_seed(0)
    model = _small_retinanet()
    reference = copy.deepcopy(model)
    optimize_for_inference(model)
    assert model.backbone.bottom_up.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(p.requires_grad for p in model.parameters())

    inputs = [{"image": torch.rand(3, 128, 160) * 255, "height": 100, "width": 125}]
    with torch.inference_mode():
        expected = reference(inputs)[0]["instances"]
        got = model(inputs)[0]["instances"]
    _assert_same_detections(got, expected, same_classes=True)


@pytest.mark.slow  # Inductor compiles C++ for the backbone: ~30 s on 2 CPU cores
def test_compiled_backbone_keeps_detections() -> None:
    torch.manual_seed(0)
    model = _small_retinanet()
    reference = copy.deepcopy(model)
    optimize_for_inference(model, compile_backbone=True)
    inputs = [{"image": torch.rand(3, 128, 160) * 255}]
    with torch.inference_mode():
        expected = reference(inputs)[0]["instances"]
        got = model(inputs)[0]["instances"]
    _assert_same_detections(got, expected, same_classes=False)
