"""detector_postprocess and paste_masks_in_image against torchvision and hand-computed cases."""

from __future__ import annotations

import pytest
import torch
from helpers import random_boxes
from torchvision.models.detection.roi_heads import (
    paste_masks_in_image as torchvision_paste_masks_in_image,
)

from lazydet.modeling.postprocessing import (
    detector_postprocess,
    paste_masks_grid_sample,
    paste_masks_in_image,
)
from lazydet.structures import Boxes, Instances


def image_boxes(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Boxes around an image: some across its border, some thinner than a pixel."""
    extent = (float(width), float(height))
    return random_boxes(n, generator, extent=extent, offset=-5.0, min_side=0.3, side_spread=40.0)


@pytest.mark.parametrize("padding", [1, 0, 3])
def test_paste_masks_matches_torchvision(padding: int) -> None:
    g = torch.Generator().manual_seed(0)
    height, width = 45, 60
    # Boxes inside, across the border, fractional, thinner than a pixel.
    boxes = torch.cat(
        (
            image_boxes(12, height, width, g),
            torch.tensor(
                [[-3.7, -2.2, 10.4, 8.9], [50.5, 40.1, 70.0, 52.0], [5.2, 5.2, 5.4, 30.0]]
            ),
        )
    )
    masks = torch.rand(len(boxes), 14, 14, generator=g)
    ours = paste_masks_in_image(masks, boxes, (height, width), padding=padding)
    theirs = torchvision_paste_masks_in_image(
        masks[:, None], boxes, (height, width), padding=padding
    )[:, 0]
    assert ours.shape == (len(boxes), height, width)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_paste_masks_empty_and_bad_input() -> None:
    assert paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 7)).shape == (
        0,
        5,
        7,
    )
    with pytest.raises(ValueError, match="boxes must be"):
        paste_masks_in_image(torch.zeros(2, 28, 28), torch.zeros(3, 4), (5, 7))
    with pytest.raises(ValueError, match=r"\[N, M, M\]"):
        paste_masks_in_image(torch.zeros(2, 28, 14), torch.zeros(2, 4), (5, 7))


def test_paste_masks_box_outside_image_gives_empty_mask() -> None:
    masks = torch.ones(1, 28, 28)
    pasted = paste_masks_in_image(masks, torch.tensor([[100.0, 100.0, 120.0, 130.0]]), (50, 50))
    assert pasted.sum() == 0


def test_detector_postprocess_rescales_clips_and_drops_empty() -> None:
    # Network input 50 x 100 (h, w); report at 100 x 50: x halves, y doubles.
    results = Instances(
        (50, 100),
        pred_boxes=Boxes(
            torch.tensor(
                [[10.0, 10.0, 30.0, 20.0], [90.0, 40.0, 110.0, 60.0], [120.0, 5.0, 130.0, 9.0]]
            )
        ),
        scores=torch.tensor([0.9, 0.8, 0.7]),
        pred_classes=torch.tensor([1, 2, 3]),
        pred_keypoints=torch.tensor([[[12.0, 14.0, 0.5]], [[95.0, 45.0, 0.3]], [[1.0, 1.0, 1.0]]]),
    )
    out = detector_postprocess(results, 100, 50)
    assert out.image_size == (100, 50)
    # Box 2 lies right of the image: zero width after clipping, dropped.
    expected_boxes = torch.tensor([[5.0, 20.0, 15.0, 40.0], [45.0, 80.0, 50.0, 100.0]])
    torch.testing.assert_close(out.pred_boxes.tensor, expected_boxes)
    torch.testing.assert_close(out.scores, torch.tensor([0.9, 0.8]))
    torch.testing.assert_close(out.pred_classes, torch.tensor([1, 2]))
    torch.testing.assert_close(
        out.pred_keypoints, torch.tensor([[[6.0, 28.0, 0.5]], [[47.5, 90.0, 0.3]]])
    )
    # The input is left untouched.
    assert results.pred_boxes.tensor[0, 0] == 10.0 and results.pred_keypoints[0, 0, 0] == 12.0


def test_detector_postprocess_pastes_masks_at_output_size() -> None:
    g = torch.Generator().manual_seed(1)
    box_masks = torch.rand(2, 28, 28, generator=g)
    results = Instances(
        (40, 60),
        pred_boxes=Boxes(torch.tensor([[4.0, 6.0, 30.0, 20.0], [20.5, 10.0, 58.0, 39.0]])),
        scores=torch.tensor([0.9, 0.8]),
        pred_classes=torch.tensor([0, 1]),
        pred_masks=box_masks,
    )
    out = detector_postprocess(results, 80, 90)
    scaled_boxes = results.pred_boxes.tensor * torch.tensor([1.5, 2.0, 1.5, 2.0])
    reference = torchvision_paste_masks_in_image(box_masks[:, None], scaled_boxes, (80, 90))[:, 0]
    assert out.pred_masks.dtype == torch.bool and out.pred_masks.shape == (2, 80, 90)
    assert torch.equal(out.pred_masks, reference >= 0.5)

    soft = detector_postprocess(results, 80, 90, mask_threshold=None)
    torch.testing.assert_close(soft.pred_masks, reference, rtol=0, atol=0)


def test_detector_postprocess_full_box_mask_covers_the_box() -> None:
    # A mask that is 1 over its whole box pastes to (about) the box, at the output resolution.
    results = Instances(
        (32, 32),
        pred_boxes=Boxes(torch.tensor([[8.0, 4.0, 24.0, 20.0]])),
        pred_masks=torch.ones(1, 28, 28),
    )
    out = detector_postprocess(results, 64, 64)
    mask = out.pred_masks[0]
    rows = mask.any(dim=1).nonzero().squeeze(1)
    cols = mask.any(dim=0).nonzero().squeeze(1)
    # Box [16, 8, 48, 40] at 64 x 64: pixel columns 16..47 and rows 8..39 (within a pixel).
    assert abs(int(cols.min()) - 16) <= 1 and abs(int(cols.max()) - 47) <= 1
    assert abs(int(rows.min()) - 8) <= 1 and abs(int(rows.max()) - 39) <= 1
    assert mask.sum() == mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].numel()


@pytest.mark.parametrize("paste", ["torchvision", "detectron2"])
def test_thresholded_paste_equals_threshold_of_float_paste(paste: str) -> None:
    """``threshold=`` pastes bool masks box by box: the same pixels as thresholding the float
    paste (torchvision's paste thresholded, for the torchvision variant), with zeros outside."""
    g = torch.Generator().manual_seed(3)
    height, width = 45, 60
    boxes = image_boxes(15, height, width, g)  # some across the border, some sub-pixel
    masks = torch.rand(len(boxes), 14, 14, generator=g)
    function = paste_masks_in_image if paste == "torchvision" else paste_masks_grid_sample
    if paste == "torchvision":
        reference = torchvision_paste_masks_in_image(masks[:, None], boxes, (height, width), 1)
        reference = reference[:, 0]
    else:
        reference = function(masks, boxes, (height, width))
    for threshold in (0.5, 0.25):
        pasted = function(masks, boxes, (height, width), threshold=threshold)
        assert pasted.dtype == torch.bool and pasted.shape == (len(boxes), height, width)
        assert torch.equal(pasted, reference >= threshold)
    assert function(torch.zeros(0, 14, 14), torch.zeros(0, 4), (5, 7), threshold=0.5).dtype == (
        torch.bool
    )
