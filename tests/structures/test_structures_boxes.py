"""Boxes, pairwise_iou and pairwise_ioa against torchvision, pycocotools and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as coco_mask
import pytest
import torch
from helpers import random_boxes
from torchvision.ops import box_area, box_iou, clip_boxes_to_image

from lazydet.structures import Boxes, pairwise_ioa, pairwise_iou


def xyxy_to_xywh(boxes: torch.Tensor) -> np.ndarray:
    array = boxes.double().numpy().copy()
    array[:, 2:] -= array[:, :2]
    return array


# ------------------------------------------------------------------------------------------
# Construction
# ------------------------------------------------------------------------------------------
def test_integer_tensor_becomes_float32_and_float_dtype_is_kept():
    assert Boxes(torch.tensor([[0, 0, 2, 3]])).tensor.dtype == torch.float32
    assert Boxes(torch.zeros(2, 4, dtype=torch.float64)).tensor.dtype == torch.float64


def test_float_tensor_is_not_copied():
    tensor = torch.zeros(3, 4)
    assert Boxes(tensor).tensor.data_ptr() == tensor.data_ptr()


def test_any_empty_tensor_becomes_zero_by_four():
    assert Boxes(torch.zeros(0)).tensor.shape == (0, 4)
    assert Boxes([]).tensor.shape == (0, 4)


def test_numpy_and_list_inputs():
    expected = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert torch.equal(Boxes(np.array([[1, 2, 3, 4]])).tensor, expected)
    assert torch.equal(Boxes([[1, 2, 3, 4]]).tensor, expected)


@pytest.mark.parametrize("shape", [(4,), (2, 5), (2, 2, 4)])
def test_bad_shape_is_a_value_error(shape):
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        Boxes(torch.zeros(shape))


def test_bad_type_is_a_type_error():
    with pytest.raises(TypeError, match="Boxes"):
        Boxes("0 0 1 1")
    with pytest.raises(TypeError, match="dtype"):
        Boxes(torch.zeros(1, 4, dtype=torch.bool))


# ------------------------------------------------------------------------------------------
# Geometry against torchvision / hand-computed values
# ------------------------------------------------------------------------------------------
def test_area_matches_torchvision_box_area():
    tensor = random_boxes(20, 0)
    torch.testing.assert_close(Boxes(tensor).area(), box_area(tensor))


def test_area_of_no_boxes_is_empty():
    assert Boxes(torch.zeros(0, 4)).area().shape == (0,)


def test_centers_hand_computed():
    boxes = Boxes(torch.tensor([[0.0, 0.0, 4.0, 2.0], [1.0, 3.0, 2.0, 7.0]]))
    assert torch.equal(boxes.centers(), torch.tensor([[2.0, 1.0], [1.5, 5.0]]))
    assert Boxes(torch.zeros(0, 4)).centers().shape == (0, 2)


def test_clip_matches_torchvision_and_updates_the_boxes():
    generator = torch.Generator().manual_seed(1)
    tensor = torch.rand(30, 4, generator=generator) * 80 - 20
    expected = clip_boxes_to_image(tensor, (30, 40))
    boxes = Boxes(tensor)
    returned = boxes.clip((30, 40))
    assert returned is boxes
    assert torch.equal(boxes.tensor, expected)


def test_clip_and_scale_keep_autograd_working():
    leaf = torch.tensor([[-1.0, 2.0, 30.0, 4.0]], requires_grad=True)
    boxes = Boxes(leaf).clip((10, 20)).scale(2.0, 3.0)
    boxes.tensor.sum().backward()
    # d/dx of clamp is 1 inside the range and 0 where clamped; times the scale factor.
    assert leaf.grad.tolist() == [[0.0, 3.0, 0.0, 3.0]]


def test_clip_hand_computed_and_empty():
    boxes = Boxes(torch.tensor([[-5.0, -1.0, 50.0, 8.0]]))
    boxes.clip((10, 20))
    assert torch.equal(boxes.tensor, torch.tensor([[0.0, 0.0, 20.0, 8.0]]))
    Boxes(torch.zeros(0, 4)).clip((10, 20))


def test_clip_refuses_non_finite_coordinates():
    with pytest.raises(ValueError, match="NaN or infinity"):
        Boxes(torch.tensor([[0.0, float("nan"), 1.0, 1.0]])).clip((10, 10))


def test_clip_bad_image_size():
    with pytest.raises(ValueError, match="height, width"):
        Boxes(torch.zeros(1, 4)).clip(10)


def test_nonempty_hand_computed():
    boxes = Boxes(
        torch.tensor(
            [
                [0.0, 0.0, 1.0, 1.0],  # 1 x 1
                [0.0, 0.0, 0.0, 5.0],  # zero width
                [0.0, 0.0, 5.0, 0.0],  # zero height
                [3.0, 3.0, 2.0, 4.0],  # inverted
                [0.0, 0.0, 2.0, 3.0],  # 2 x 3
            ]
        )
    )
    assert boxes.nonempty().tolist() == [True, False, False, False, True]
    assert boxes.nonempty(threshold=1.0).tolist() == [False, False, False, False, True]
    assert boxes.nonempty(threshold=2.0).tolist() == [False] * 5


def test_scale_hand_computed():
    boxes = Boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert boxes.scale(2.0, 0.5) is boxes
    assert torch.equal(boxes.tensor, torch.tensor([[2.0, 1.0, 6.0, 2.0]]))


# ------------------------------------------------------------------------------------------
# Indexing, cat, to
# ------------------------------------------------------------------------------------------
def test_getitem_forms():
    tensor = random_boxes(5, 2)
    boxes = Boxes(tensor)
    assert torch.equal(boxes[1].tensor, tensor[1:2])
    assert torch.equal(boxes[-1].tensor, tensor[4:5])
    assert torch.equal(boxes[np.int64(2)].tensor, tensor[2:3])
    assert torch.equal(boxes[torch.tensor(3)].tensor, tensor[3:4])
    assert torch.equal(boxes[1:3].tensor, tensor[1:3])
    mask = torch.tensor([True, False, True, False, False])
    assert torch.equal(boxes[mask].tensor, tensor[[0, 2]])
    assert torch.equal(boxes[torch.tensor([4, 0])].tensor, tensor[[4, 0]])
    assert boxes[torch.zeros(5, dtype=torch.bool)].tensor.shape == (0, 4)
    assert len(boxes) == 5


def test_getitem_out_of_range_and_bad_index():
    boxes = Boxes(random_boxes(2, 3))
    with pytest.raises(IndexError):
        boxes[2]
    with pytest.raises(IndexError, match="Boxes"):
        boxes[:, 0]


def test_cat():
    first, second = random_boxes(2, 4), random_boxes(3, 5)
    joined = Boxes.cat([Boxes(first), Boxes(second), Boxes(torch.zeros(0, 4))])
    assert torch.equal(joined.tensor, torch.cat([first, second]))
    assert Boxes.cat([]).tensor.shape == (0, 4)
    with pytest.raises(TypeError, match="element 1"):
        Boxes.cat([Boxes(first), first])


def test_to_device_and_dtype():
    boxes = Boxes(random_boxes(2, 6))
    moved = boxes.to("cpu")
    assert isinstance(moved, Boxes) and moved.device == torch.device("cpu")
    assert boxes.to(torch.float64).tensor.dtype == torch.float64


# ------------------------------------------------------------------------------------------
# pairwise_iou / pairwise_ioa
# ------------------------------------------------------------------------------------------
def test_pairwise_iou_matches_torchvision():
    first, second = random_boxes(7, 7), random_boxes(5, 8)
    torch.testing.assert_close(pairwise_iou(Boxes(first), Boxes(second)), box_iou(first, second))


def test_pairwise_iou_matches_pycocotools():
    first, second = random_boxes(6, 9), random_boxes(4, 10)
    # pycocotools.mask.iou(dt, gt, iscrowd) with xywh boxes returns [len(dt), len(gt)].
    expected = coco_mask.iou(xyxy_to_xywh(first), xyxy_to_xywh(second), [0] * 4)
    torch.testing.assert_close(
        pairwise_iou(Boxes(first), Boxes(second)).double(), torch.from_numpy(expected)
    )


def test_pairwise_iou_hand_computed_and_degenerate():
    first = Boxes(torch.tensor([[0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0]]))
    second = Boxes(torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 5.0, 5.0]]))
    iou = pairwise_iou(first, second)
    # [0,0,2,2] vs [1,1,3,3]: intersection 1, union 4 + 4 - 1 = 7.
    torch.testing.assert_close(iou, torch.tensor([[1 / 7, 0.0], [0.0, 0.0]]))
    assert not torch.isnan(iou).any()  # torchvision gives NaN for the 0/0 pair


def test_pairwise_iou_empty_shapes():
    some = Boxes(random_boxes(3, 11))
    none = Boxes(torch.zeros(0, 4))
    assert pairwise_iou(some, none).shape == (3, 0)
    assert pairwise_iou(none, some).shape == (0, 3)
    assert pairwise_ioa(none, some).shape == (0, 3)


def test_pairwise_iou_needs_boxes():
    with pytest.raises(TypeError, match="boxes1"):
        pairwise_iou(torch.zeros(1, 4), Boxes(torch.zeros(1, 4)))


def test_pairwise_ioa_matches_pycocotools_crowd_overlap():
    first, second = random_boxes(6, 12), random_boxes(4, 13)
    # For a crowd gt, pycocotools divides the intersection by the dt area: with dt = boxes2 and
    # gt = boxes1 (all crowd), entry [j, i] is |boxes1[i] ∩ boxes2[j]| / |boxes2[j]|.
    expected = coco_mask.iou(xyxy_to_xywh(second), xyxy_to_xywh(first), [1] * 6).T
    torch.testing.assert_close(
        pairwise_ioa(Boxes(first), Boxes(second)).double(), torch.from_numpy(expected)
    )


def test_pairwise_ioa_hand_computed():
    first = Boxes(torch.tensor([[0.0, 0.0, 2.0, 2.0]]))
    second = Boxes(torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.5, 0.5, 1.5, 1.5], [1.0, 1.0, 1.0, 3.0]]))
    # Intersections 1, 1, 0 over boxes2 areas 4, 1, 0 (zero area gives 0, not NaN).
    torch.testing.assert_close(pairwise_ioa(first, second), torch.tensor([[0.25, 1.0, 0.0]]))
