"""Keypoints: heatmap targets (hand-computed, Detectron2 convention) and horizontal flips
(round trip, and consistency with torchvision's box flip)."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from lazydet.structures import Boxes, Instances, Keypoints


def test_construction():
    assert Keypoints(torch.zeros(2, 17, 3, dtype=torch.int64)).tensor.dtype == torch.float32
    assert len(Keypoints([[[1, 2, 2]]])) == 1
    assert Keypoints(torch.zeros(0, 17, 3)).tensor.shape == (0, 17, 3)
    with pytest.raises(ValueError, match=r"\[N, K, 3\]"):
        Keypoints(torch.zeros(2, 17, 2))
    with pytest.raises(TypeError, match="Keypoints"):
        Keypoints("x")


def test_to_heatmap_hand_computed():
    keypoints = Keypoints(
        torch.tensor(
            [
                [
                    [0.0, 0.0, 2],  # top-left corner -> bin (0, 0)
                    [3.9, 1.0, 2],  # column floor(1.95) = 1, row floor(0.5) = 0 -> 1
                    [8.0, 8.0, 2],  # on the right and bottom edges -> last bin (3, 3) -> 15
                    [8.01, 4.0, 2],  # just right of the box -> invalid
                    [-0.1, 4.0, 2],  # just left of the box -> invalid
                    [4.0, 6.0, 0],  # not labelled -> invalid
                    [7.99, 2.0, 1],  # occluded but labelled: column 3, row 1 -> 7
                ],
                [
                    [11.5, 27.0, 2],  # scale x 1, scale y 0.5: column 1, row 3 -> 13
                    [14.0, 20.0, 2],  # right edge, top edge -> column 3, row 0 -> 3
                    [12.0, 28.5, 2],  # below the box -> invalid
                    [float("nan"), 21.0, 2],  # NaN -> invalid
                    [10.0, 20.0, 1],  # top-left corner -> 0
                    [14.0, 28.0, 2],  # bottom-right corner -> 15
                    [13.0, 24.0, 2],  # column 3, row 2 -> 11
                ],
            ]
        )
    )
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [10.0, 20.0, 14.0, 28.0]])
    heatmaps, valid = keypoints.to_heatmap(boxes, 4)
    assert heatmaps.dtype == torch.long and valid.dtype == torch.bool
    assert valid.tolist() == [
        [True, True, True, False, False, False, True],
        [True, True, False, False, True, True, True],
    ]
    assert heatmaps.tolist() == [[0, 1, 15, 0, 0, 0, 7], [13, 3, 0, 0, 0, 15, 11]]


def test_to_heatmap_degenerate_box_is_invalid_and_boxes_type_accepted():
    keypoints = Keypoints(torch.tensor([[[5.0, 5.0, 2], [5.0, 6.0, 2]]]))
    heatmaps, valid = keypoints.to_heatmap(Boxes(torch.tensor([[5.0, 5.0, 5.0, 9.0]])), 56)
    assert valid.tolist() == [[False, False]] and heatmaps.tolist() == [[0, 0]]


def test_to_heatmap_empty_and_errors():
    heatmaps, valid = Keypoints(torch.zeros(0, 17, 3)).to_heatmap(torch.zeros(0, 4), 56)
    assert heatmaps.shape == (0, 17) and valid.shape == (0, 17)
    keypoints = Keypoints(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match=r"\[2, 4\]"):
        keypoints.to_heatmap(torch.zeros(1, 4), 56)
    with pytest.raises(ValueError, match="heatmap_size"):
        keypoints.to_heatmap(torch.zeros(2, 4), 0)


def keypoint_set() -> torch.Tensor:
    return torch.tensor(
        [
            [[1.0, 2.0, 2], [3.0, 4.0, 1], [5.0, 6.0, 0]],
            [[0.0, 0.0, 2], [9.5, 1.0, 2], [2.0, 3.0, 2]],
        ]
    )


def test_flip_hand_computed():
    keypoints = Keypoints(keypoint_set())
    returned = keypoints.flip(10, [1, 0, 2])
    assert returned is keypoints
    expected = torch.tensor(
        [
            [[7.0, 4.0, 1], [9.0, 2.0, 2], [5.0, 6.0, 0]],
            [[0.5, 1.0, 2], [10.0, 0.0, 2], [8.0, 3.0, 2]],
        ]
    )
    assert torch.equal(keypoints.tensor, expected)


def test_flip_twice_is_identity_and_leaves_the_input_tensor_alone():
    original = keypoint_set()
    keypoints = Keypoints(original.clone())
    before = keypoints.tensor
    keypoints.flip(10, torch.tensor([1, 0, 2])).flip(10, torch.tensor([1, 0, 2]))
    assert torch.equal(keypoints.tensor, original)
    assert torch.equal(before, original)  # the first tensor was replaced, not written into


def test_flip_matches_torchvision_box_flip():
    # A keypoint on a box's left corner must land on the flipped box's right corner, so the
    # keypoint flip uses the box convention x -> width - x. (torchvision's own keypoint flip
    # uses the pixel-index convention width - 1 - x, one pixel to the left of ours.)
    width = 20
    box = torch.tensor([[3.0, 4.0, 8.0, 9.0]])
    flipped_box = F.horizontal_flip(
        tv_tensors.BoundingBoxes(box, format="XYXY", canvas_size=(12, width))
    ).as_subclass(torch.Tensor)
    keypoints = Keypoints(torch.tensor([[[3.0, 4.0, 2.0], [8.0, 9.0, 2.0]]]))
    keypoints.flip(width, [0, 1])
    assert keypoints.tensor[0, 0, 0] == flipped_box[0, 2]  # left edge -> right edge
    assert keypoints.tensor[0, 1, 0] == flipped_box[0, 0]
    torchvision_points = F.horizontal_flip_keypoints(torch.tensor([[3.0, 4.0]]), (12, width))
    assert keypoints.tensor[0, 0, 0] == torchvision_points[0, 0] + 1


def test_flip_rejects_non_permutation():
    keypoints = Keypoints(keypoint_set())
    with pytest.raises(ValueError, match=r"permutation of 0\.\.2"):
        keypoints.flip(10, [0, 0, 1])
    with pytest.raises(ValueError, match="permutation"):
        keypoints.flip(10, [1, 0])


def test_indexing_cat_to_and_instances_field():
    tensor = keypoint_set()
    keypoints = Keypoints(tensor)
    assert torch.equal(keypoints[1].tensor, tensor[1:2])
    assert torch.equal(keypoints[torch.tensor([False, True])].tensor, tensor[1:2])
    assert torch.equal(keypoints[torch.tensor([1, 0])].tensor, tensor[[1, 0]])
    assert torch.equal(Keypoints.cat([keypoints[:1], keypoints[1:]]).tensor, tensor)
    with pytest.raises(ValueError, match="keypoints per instance"):
        Keypoints.cat([keypoints, Keypoints(torch.zeros(1, 5, 3))])
    instances = Instances((10, 10), gt_keypoints=keypoints)
    joined = Instances.cat([instances[0], instances[1]]).to("cpu")
    assert isinstance(joined.gt_keypoints, Keypoints)
    assert torch.equal(joined.gt_keypoints.tensor, tensor)
