"""Box2BoxTransform against torchvision's BoxCoder, a hand-computed case and round trips."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import random_boxes
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import generalized_box_iou_loss

from lazydet.modeling.box_coder import Box2BoxTransform, box_regression_loss

WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]


def coder_boxes(n: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    return random_boxes(n, generator, extent=200.0, min_side=1.0, side_spread=100.0, dtype=dtype)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_encode_matches_torchvision(weights):
    g = torch.Generator().manual_seed(0)
    src, tgt = coder_boxes(50, g), coder_boxes(50, g)
    ours = Box2BoxTransform(weights=weights).get_deltas(src, tgt)
    # torchvision's encode_single(reference=target, proposals=source).
    theirs = BoxCoder(weights).encode_single(tgt, src)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_decode_matches_torchvision_including_clamp(weights):
    g = torch.Generator().manual_seed(1)
    boxes = coder_boxes(40, g, dtype=torch.float32)
    # Three sets of deltas per box, some with dw/dh far beyond the clamp.
    deltas = torch.randn(40, 12, generator=g) * 3
    deltas[::5, 2] = 50.0
    ours = Box2BoxTransform(weights=weights).apply_deltas(deltas, boxes)
    theirs = BoxCoder(weights).decode_single(deltas, boxes)
    assert ours.shape == (40, 12)
    torch.testing.assert_close(ours, theirs)
    assert torch.isfinite(ours).all()


@pytest.mark.parametrize("weights", WEIGHTS)
def test_round_trip(weights):
    g = torch.Generator().manual_seed(2)
    src, tgt = coder_boxes(100, g), coder_boxes(100, g)
    transform = Box2BoxTransform(weights=weights)
    torch.testing.assert_close(transform.apply_deltas(transform.get_deltas(src, tgt), src), tgt)


def test_hand_computed_case():
    # Source: centre (15, 30), size 10 x 20. Target: centre (20, 20), size 20 x 10.
    src = torch.tensor([[10.0, 20.0, 20.0, 40.0]])
    tgt = torch.tensor([[10.0, 15.0, 30.0, 25.0]])
    deltas = Box2BoxTransform(weights=(10, 10, 5, 5)).get_deltas(src, tgt)
    expected = torch.tensor([[10 * 5 / 10, 10 * -10 / 20, 5 * math.log(2), 5 * math.log(0.5)]])
    torch.testing.assert_close(deltas, expected)


def test_scale_clamp_bounds_decoded_size():
    box = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    out = Box2BoxTransform().apply_deltas(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), box)
    # Width and height may grow at most exp(log(1000 / 16)) = 62.5 times: 16 -> 1000.
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(1000.0))


def test_half_precision_deltas_decode_in_float32():
    boxes = torch.tensor([[0.0, 0.0, 1000.0, 1000.0]])
    out = Box2BoxTransform().apply_deltas(torch.zeros(1, 4, dtype=torch.float16), boxes)
    assert out.dtype == torch.float32


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="weights"):
        Box2BoxTransform(weights=(1, 1, 1))
    transform = Box2BoxTransform()
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        transform.get_deltas(torch.zeros(3, 5), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="one row"):
        transform.apply_deltas(torch.zeros(2, 4), torch.zeros(3, 4))


def test_regression_losses_match_torch_references():
    g = torch.Generator().manual_seed(3)
    anchors, gt = coder_boxes(20, g, torch.float32), coder_boxes(20, g, torch.float32)
    pred = torch.randn(20, 4, generator=g) * 0.1
    inputs = dict(
        box2box_transform=Box2BoxTransform(), anchors=anchors, pred_deltas=pred, gt_boxes=gt
    )
    l1 = box_regression_loss(**inputs)
    targets = BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(gt, anchors)
    torch.testing.assert_close(l1, (pred - targets).abs().sum())
    giou = box_regression_loss(**inputs, loss_type="giou")
    decoded = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(pred, anchors)
    torch.testing.assert_close(giou, generalized_box_iou_loss(decoded, gt, reduction="sum"))
