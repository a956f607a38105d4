"""BitMasks and PolygonMasks against torchvision roi_align, pycocotools and hand-computed masks."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as coco_mask
import pytest
import torch
from torchvision.ops import roi_align

from lazydet.structures import BitMasks, Boxes, PolygonMasks

# pycocotools (Cython, built for numpy 1) warns about numpy 2's copy keyword on every decode.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def square_mask(height: int, width: int, rows: slice, columns: slice) -> torch.Tensor:
    mask = torch.zeros(1, height, width, dtype=torch.bool)
    mask[0, rows, columns] = True
    return mask


def random_masks(count: int, height: int, width: int, *, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, height, width, generator=generator) > 0.6


def coco_boxes_xyxy(masks: torch.Tensor) -> torch.Tensor:
    """Boxes from pycocotools' RLE toBbox (xywh, width = last - first + 1) as XYXY."""
    rles = coco_mask.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))
    xywh = torch.from_numpy(coco_mask.toBbox(rles)).float()
    return torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)


# ------------------------------------------------------------------------------------------
# BitMasks
# ------------------------------------------------------------------------------------------
def test_bitmasks_construction():
    assert BitMasks(torch.ones(2, 3, 4, dtype=torch.uint8)).tensor.dtype == torch.bool
    assert BitMasks(np.zeros((1, 2, 2), dtype=np.uint8)).tensor.shape == (1, 2, 2)
    assert len(BitMasks(torch.zeros(0, 5, 6, dtype=torch.bool))) == 0
    with pytest.raises(TypeError, match="binarise"):
        BitMasks(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        BitMasks(torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="BitMasks"):
        BitMasks([[[1]]])


@pytest.mark.parametrize("mask_size", [1, 2, 4])
def test_bitmask_crop_of_box_covering_filled_square_is_all_ones(mask_size):
    # Pixels rows/columns 2..5 are filled: the region [2, 6) x [2, 6) in continuous coordinates.
    masks = BitMasks(square_mask(10, 10, slice(2, 6), slice(2, 6)))
    crop = masks.crop_and_resize(torch.tensor([[2.0, 2.0, 6.0, 6.0]]), mask_size)
    assert crop.dtype == torch.float32 and crop.shape == (1, mask_size, mask_size)
    assert torch.equal(crop, torch.ones(1, mask_size, mask_size))


def test_bitmask_crop_of_half_filled_box_is_left_half_ones():
    masks = BitMasks(square_mask(10, 10, slice(2, 6), slice(2, 4)))
    crop = masks.crop_and_resize(Boxes(torch.tensor([[2.0, 2.0, 6.0, 6.0]])), 4)
    expected = torch.zeros(1, 4, 4)
    expected[:, :, :2] = 1
    assert torch.equal(crop, expected)


def test_bitmask_crop_matches_torchvision_roi_align_per_mask():
    masks = random_masks(4, 12, 16, seed=0)
    generator = torch.Generator().manual_seed(1)
    top_left = torch.rand(4, 2, generator=generator) * 8
    boxes = torch.cat([top_left, top_left + 1 + torch.rand(4, 2, generator=generator) * 6], 1)
    crops = BitMasks(masks).crop_and_resize(boxes, 7)
    for index in range(4):
        # One mask, one ROI with batch index 0: checks that box i really crops mask i.
        roi = torch.cat([torch.zeros(1), boxes[index]])[None]
        expected = roi_align(masks[index][None, None].float(), roi, 7, 1.0, 0, aligned=True)
        torch.testing.assert_close(crops[index], expected[0, 0])
    assert crops.min() >= 0 and crops.max() <= 1


def test_bitmask_crop_empty_and_errors():
    empty = BitMasks(torch.zeros(0, 5, 5, dtype=torch.bool))
    assert empty.crop_and_resize(torch.zeros(0, 4), 3).shape == (0, 3, 3)
    masks = BitMasks(random_masks(2, 5, 5, seed=2))
    with pytest.raises(ValueError, match=r"\[2, 4\]"):
        masks.crop_and_resize(torch.zeros(3, 4), 3)
    with pytest.raises(ValueError, match="mask_size"):
        masks.crop_and_resize(torch.zeros(2, 4), 0)


def test_bitmask_bounding_boxes_match_pycocotools():
    masks = random_masks(3, 9, 11, seed=3) & square_mask(9, 11, slice(2, 7), slice(1, 9))
    masks = torch.cat([masks, square_mask(9, 11, slice(4, 5), slice(10, 11))])
    boxes = BitMasks(masks).get_bounding_boxes()
    torch.testing.assert_close(boxes.tensor, coco_boxes_xyxy(masks))


def test_bitmask_bounding_boxes_hand_computed_and_empty():
    masks = torch.cat(
        [square_mask(6, 8, slice(1, 3), slice(4, 7)), torch.zeros(1, 6, 8, dtype=bool)]
    )
    boxes = BitMasks(masks).get_bounding_boxes()
    assert torch.equal(boxes.tensor, torch.tensor([[4.0, 1.0, 7.0, 3.0], [0.0, 0.0, 0.0, 0.0]]))
    assert BitMasks(torch.zeros(0, 3, 3, dtype=bool)).get_bounding_boxes().tensor.shape == (0, 4)


def test_bitmask_area_matches_pycocotools_and_nonempty():
    masks = torch.cat([random_masks(3, 7, 9, seed=4), torch.zeros(1, 7, 9, dtype=torch.bool)])
    rles = coco_mask.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))
    assert BitMasks(masks).area().tolist() == coco_mask.area(rles).tolist()
    assert BitMasks(masks).nonempty().tolist() == [True, True, True, False]


def test_bitmask_indexing_cat_to():
    tensor = random_masks(3, 4, 5, seed=5)
    masks = BitMasks(tensor)
    assert torch.equal(masks[1].tensor, tensor[1:2])
    assert torch.equal(masks[-1].tensor, tensor[2:3])
    assert torch.equal(masks[torch.tensor([True, False, True])].tensor, tensor[[0, 2]])
    assert torch.equal(masks[torch.tensor([2, 0])].tensor, tensor[[2, 0]])
    assert torch.equal(BitMasks.cat([masks[:1], masks[1:]]).tensor, tensor)
    with pytest.raises(ValueError, match="H x W"):
        BitMasks.cat([masks, BitMasks(torch.zeros(1, 5, 5, dtype=torch.bool))])
    moved = masks.to("cpu")
    assert moved.device == torch.device("cpu") and moved.image_size == (4, 5)


# ------------------------------------------------------------------------------------------
# PolygonMasks
# ------------------------------------------------------------------------------------------
SQUARE = [2.0, 2.0, 6.0, 2.0, 6.0, 6.0, 2.0, 6.0]  # covers pixels rows/columns 2..5
LEFT_HALF = [2.0, 2.0, 4.0, 2.0, 4.0, 6.0, 2.0, 6.0]  # covers columns 2..3, rows 2..5
L_SHAPE = [1.0, 1.0, 7.0, 1.0, 7.0, 3.0, 3.0, 3.0, 3.0, 7.0, 1.0, 7.0]


def test_polygon_validation():
    with pytest.raises(TypeError, match="list"):
        PolygonMasks(np.zeros((1, 8)))
    with pytest.raises(TypeError, match="instance 0"):
        PolygonMasks([np.array(SQUARE)])
    with pytest.raises(ValueError, match="polygon 1 of instance 0"):
        PolygonMasks([[SQUARE, [0.0, 0.0, 1.0, 1.0]]])
    with pytest.raises(ValueError, match="polygon 0 of instance 1"):
        PolygonMasks([[SQUARE], [SQUARE[:-1]]])
    masks = PolygonMasks([[torch.tensor(SQUARE)], [np.array(SQUARE, dtype=np.float32)]])
    assert all(polygon.dtype == np.float64 for polygons in masks.polygons for polygon in polygons)


def test_to_bitmasks_hand_computed():
    bitmasks = PolygonMasks([[SQUARE], [LEFT_HALF, [7.0, 0.0, 9.0, 0.0, 9.0, 1.0, 7.0, 1.0]], []])
    result = bitmasks.to_bitmasks(8, 10)
    expected = torch.zeros(3, 8, 10, dtype=torch.bool)
    expected[0, 2:6, 2:6] = True
    expected[1, 2:6, 2:4] = True
    expected[1, 0:1, 7:9] = True  # second polygon of instance 1 joins the union
    assert torch.equal(result.tensor, expected)
    assert PolygonMasks([]).to_bitmasks(4, 5).tensor.shape == (0, 4, 5)


@pytest.mark.parametrize("mask_size", [2, 4, 8])
def test_polygon_crop_of_box_covering_square_is_all_ones(mask_size):
    crop = PolygonMasks([[SQUARE]]).crop_and_resize(torch.tensor([[2.0, 2.0, 6.0, 6.0]]), mask_size)
    assert crop.dtype == torch.float32
    assert torch.equal(crop, torch.ones(1, mask_size, mask_size))


@pytest.mark.parametrize("mask_size", [2, 4, 8])
def test_polygon_crop_of_half_filled_box_is_left_half_ones(mask_size):
    crop = PolygonMasks([[LEFT_HALF]]).crop_and_resize(
        Boxes(torch.tensor([[2.0, 2.0, 6.0, 6.0]])), mask_size
    )
    expected = torch.zeros(1, mask_size, mask_size)
    expected[:, :, : mask_size // 2] = 1
    assert torch.equal(crop, expected)


def test_polygon_crop_equals_cropping_the_full_raster_for_pixel_aligned_boxes():
    polygons = PolygonMasks([[L_SHAPE], [SQUARE]])
    # Boxes on pixel boundaries with mask_size equal to their 6 x 6 size: cropping then
    # resizing must equal cutting the box out of the full-image raster.
    boxes = torch.tensor([[1.0, 1.0, 7.0, 7.0], [0.0, 1.0, 6.0, 7.0]])
    full = polygons.to_bitmasks(10, 10).tensor
    crops = polygons.crop_and_resize(boxes, 6)
    for index, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        assert torch.equal(crops[index], full[index, y1:y2, x1:x2].float())
    # The ROIAlign path on the rasterised masks agrees on this grid-aligned case.
    assert torch.equal(BitMasks(full).crop_and_resize(boxes, 6), crops)


def test_polygon_crop_empty_instance_and_errors():
    crops = PolygonMasks([[], [SQUARE]]).crop_and_resize(
        torch.tensor([[0.0, 0, 4, 4], [2, 2, 6, 6]]), 3
    )
    assert torch.equal(crops[0], torch.zeros(3, 3))
    assert PolygonMasks([]).crop_and_resize(torch.zeros(0, 4), 5).shape == (0, 5, 5)
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        PolygonMasks([[SQUARE]]).crop_and_resize(torch.zeros(2, 4), 3)
    degenerate = PolygonMasks([[SQUARE]]).crop_and_resize(torch.tensor([[3.0, 3.0, 3.0, 3.0]]), 3)
    assert torch.isfinite(degenerate).all()


def test_polygon_area_matches_pycocotools_for_grid_aligned_shapes():
    masks = PolygonMasks([[SQUARE], [L_SHAPE], [SQUARE, [7.0, 7.0, 9.0, 7.0, 9.0, 9.0, 7.0, 9.0]]])
    expected = []
    for polygons in masks.polygons:
        rle = coco_mask.merge(coco_mask.frPyObjects([p.tolist() for p in polygons], 12, 12))
        expected.append(float(coco_mask.area(rle)))
    assert masks.area().tolist() == expected == [16.0, 20.0, 20.0]


def test_polygon_area_of_triangle():
    triangle = [0.0, 0.0, 40.0, 0.0, 0.0, 30.0]  # legs 40 and 30: area 600
    area = PolygonMasks([[triangle]]).area()
    assert area.tolist() == [600.0]
    rle = coco_mask.frPyObjects([triangle], 50, 50)[0]
    assert abs(float(coco_mask.area(rle)) - 600.0) / 600.0 < 0.05  # rasterised, approximately


def test_polygon_bounding_boxes():
    masks = PolygonMasks([[L_SHAPE, [8.0, 0.5, 9.5, 0.5, 9.0, 2.0]], [], [SQUARE]])
    expected = torch.tensor([[1.0, 0.5, 9.5, 7.0], [0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 6.0, 6.0]])
    assert torch.equal(masks.get_bounding_boxes().tensor, expected)
    # For grid-aligned shapes they equal the boxes of the rasterised masks.
    grid = PolygonMasks([[L_SHAPE], [SQUARE]])
    assert torch.equal(
        grid.get_bounding_boxes().tensor, grid.to_bitmasks(10, 10).get_bounding_boxes().tensor
    )


def test_polygon_indexing_cat_to():
    masks = PolygonMasks([[SQUARE], [L_SHAPE], [LEFT_HALF]])
    first = masks[0]
    assert isinstance(first, PolygonMasks) and len(first) == 1
    assert first.polygons[0][0].tolist() == SQUARE
    assert masks[-1].polygons[0][0].tolist() == LEFT_HALF
    assert [p[0].tolist() for p in masks[1:].polygons] == [L_SHAPE, LEFT_HALF]
    assert [p[0].tolist() for p in masks[torch.tensor([True, False, True])].polygons] == [
        SQUARE,
        LEFT_HALF,
    ]
    assert [p[0].tolist() for p in masks[np.array([2, 0])].polygons] == [LEFT_HALF, SQUARE]
    with pytest.raises(IndexError, match="out of range"):
        masks[3]
    with pytest.raises(IndexError, match="bool mask"):
        masks[torch.tensor([True])]
    joined = PolygonMasks.cat([masks[:1], masks[1:]])
    assert len(joined) == 3 and joined.polygons[1][0].tolist() == L_SHAPE
    assert masks.to("cpu") is masks and masks.device == torch.device("cpu")
