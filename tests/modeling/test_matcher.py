"""Matcher against torchvision's Matcher (labels and matched indices) and hand-made cases."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection._utils import Matcher as TorchvisionMatcher

from lazydet.modeling.matcher import Matcher


def torchvision_labels(matches: torch.Tensor) -> torch.Tensor:
    """torchvision's encoding -> ours: >=0 matched (1), -1 below low (0), -2 between (-1)."""
    labels = torch.ones_like(matches, dtype=torch.int8)
    labels[matches == TorchvisionMatcher.BELOW_LOW_THRESHOLD] = 0
    labels[matches == TorchvisionMatcher.BETWEEN_THRESHOLDS] = -1
    return labels


def quantized_iou(num_gt: int, num_pred: int, seed: int) -> torch.Tensor:
    # Few distinct values (multiples of 0.05) make ties in both directions common.
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 21, (num_gt, num_pred), generator=g).float() / 20 * 0.9


@pytest.mark.parametrize("allow_low_quality", [False, True])
@pytest.mark.parametrize(("low", "high"), [(0.3, 0.7), (0.4, 0.5), (0.5, 0.5)])
@pytest.mark.parametrize("seed", range(4))
def test_matches_torchvision_on_random_iou(allow_low_quality, low, high, seed):
    num_gt = 1 + seed * 2
    iou = quantized_iou(num_gt, 60, seed)
    if seed % 2:
        iou = iou * 0.5  # mostly low-quality: low-quality matching decides most positives
    theirs = TorchvisionMatcher(high, low, allow_low_quality_matches=allow_low_quality)(iou.clone())
    matched_idxs, labels = Matcher(
        thresholds=[low, high], labels=[0, -1, 1], allow_low_quality_matches=allow_low_quality
    )(iou)
    assert labels.dtype == torch.int8 and matched_idxs.dtype == torch.int64
    torch.testing.assert_close(labels, torchvision_labels(theirs))
    positive = labels == 1
    torch.testing.assert_close(matched_idxs[positive], theirs[positive])


def test_single_threshold_like_fast_rcnn():
    iou = quantized_iou(3, 40, 7)
    theirs = TorchvisionMatcher(0.5, 0.5)(iou.clone())
    matched_idxs, labels = Matcher(thresholds=[0.5], labels=[0, 1])(iou)
    torch.testing.assert_close(labels, torchvision_labels(theirs))
    torch.testing.assert_close(matched_idxs[labels == 1], theirs[labels == 1])


def test_hand_made_low_quality_and_ties():
    # gt0's best predictions (0.4) are p1 and p2 (a tie); p2 overlaps gt1 more (0.6), so it
    # stays matched to gt1. gt1's best is p3 (0.9, a regular match). p0 is background.
    iou = torch.tensor(
        [
            [0.1, 0.4, 0.4, 0.0],
            [0.0, 0.2, 0.6, 0.9],
        ]
    )
    matcher = Matcher(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True)
    matched_idxs, labels = matcher(iou)
    assert labels.tolist() == [0, 1, 1, 1]
    assert matched_idxs.tolist()[1:] == [0, 1, 1]
    _, labels_strict = Matcher(thresholds=[0.3, 0.7], labels=[0, -1, 1])(iou)
    assert labels_strict.tolist() == [0, -1, -1, 1]


def test_no_ground_truth_gives_lowest_interval_label():
    matched_idxs, labels = Matcher(thresholds=[0.3, 0.7], labels=[0, -1, 1])(torch.zeros(0, 5))
    assert labels.tolist() == [0] * 5
    assert matched_idxs.tolist() == [0] * 5


def test_no_predictions_gives_empty_results():
    matcher = Matcher(thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True)
    matched_idxs, labels = matcher(torch.zeros(2, 0))
    assert matched_idxs.shape == (0,) and labels.shape == (0,)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="increasing"):
        Matcher(thresholds=[0.7, 0.3], labels=[0, -1, 1])
    with pytest.raises(ValueError, match="one label per interval"):
        Matcher(thresholds=[0.3, 0.7], labels=[0, 1])
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        Matcher(thresholds=[0.5], labels=[0, 2])
    with pytest.raises(ValueError, match="2-D"):
        Matcher(thresholds=[0.5], labels=[0, 1])(torch.zeros(3))
