"""Pictures: masks blended with the instance colour, boxes on their edges, small images upscaled,
low scores hidden, ground truth drawn from dataset records."""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils

from lazydet.structures import Boxes, Instances
from lazydet.utils.visualizer import (
    MIN_SIDE,
    class_color,
    draw_instances,
    instances_from_record,
    skeleton_from_metadata,
)

H, W = 60, 100


def _instances(score: float = 0.9) -> Instances:
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[0, 20:30, 20:40] = True
    keypoints = torch.tensor([[[22.0, 22.0, 1.0], [38.0, 28.0, 1.0], [5.0, 5.0, 0.0]]])
    return Instances(
        (H, W),
        pred_boxes=Boxes(torch.tensor([[10.0, 10.0, 50.0, 40.0]])),
        scores=torch.tensor([score]),
        pred_classes=torch.tensor([0]),
        pred_masks=mask,
        pred_keypoints=keypoints,
    )


def test_draws_masks_boxes_keypoints_and_upscales_small_images():
    image = torch.zeros(3, H, W, dtype=torch.uint8)
    picture = draw_instances(
        image,
        _instances(),
        class_names=["thing"],
        keypoint_names=["a", "b", "c"],
        skeleton=[("a", "b")],
    )
    scale = int(np.ceil(MIN_SIDE / H))
    assert picture.size == (W * scale, H * scale)
    pixels = np.asarray(picture).astype(int)
    color = np.array(class_color(0))
    # Inside the mask, away from keypoints: the colour blended over black at alpha 0.45.
    inside = pixels[int(21 * scale), int(30 * scale)]
    np.testing.assert_allclose(inside, np.round(color * 0.45), atol=2)
    # On the box's left edge (outside the mask): the colour itself.
    np.testing.assert_array_equal(pixels[int(35 * scale), int(10 * scale)], color)
    # Far from everything: untouched; the invisible keypoint (v=0) at (5, 5) is not drawn.
    np.testing.assert_array_equal(pixels[int(55 * scale), int(90 * scale)], [0, 0, 0])
    np.testing.assert_array_equal(pixels[int(5 * scale), int(5 * scale)], [0, 0, 0])
    # The skeleton joins a and b: the midpoint of the segment is drawn (not the mask's blend).
    mid = pixels[int(25 * scale), int(30 * scale)]
    assert not np.allclose(mid, np.round(color * 0.45), atol=2)


def test_low_scores_are_hidden_and_large_images_not_upscaled():
    image = torch.zeros(3, H, W, dtype=torch.uint8)
    picture = draw_instances(image, _instances(score=0.2), score_threshold=0.5)
    assert not np.asarray(picture).any()
    big = torch.zeros(3, 1200, 1600, dtype=torch.uint8)
    assert draw_instances(
        big, Instances((1200, 1600), pred_boxes=Boxes(torch.zeros(0, 4)))
    ).size == (1600, 1200)


def test_ground_truth_from_a_record_matches_pycocotools():
    polygon = [10.0, 10.0, 50.0, 12.0, 30.0, 40.0]
    rle = mask_utils.encode(np.asfortranarray(np.eye(H, W, dtype=np.uint8)))
    record = {
        "annotations": [
            {"bbox": (10, 10, 50, 40), "category_id": 2, "segmentation": [np.array(polygon)]},
            {
                "bbox": (0, 0, 60, 60),
                "category_id": 0,
                "segmentation": {"size": [H, W], "counts": rle["counts"].decode()},
            },
        ]
    }
    instances = instances_from_record(record, (H, W))
    expected = mask_utils.decode(mask_utils.frPyObjects([polygon], H, W))[:, :, 0]
    np.testing.assert_array_equal(instances.gt_masks[0].numpy(), expected.astype(bool))
    np.testing.assert_array_equal(instances.gt_masks[1].numpy(), np.eye(H, W, dtype=bool))
    assert instances.gt_classes.tolist() == [2, 0]
    picture = draw_instances(
        torch.zeros(3, H, W, dtype=torch.uint8), instances, class_names=["a", "b", "c"]
    )
    assert np.asarray(picture).any()


def test_skeleton_from_metadata():
    coco_names = [
        "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ]  # fmt: skip
    assert len(skeleton_from_metadata({"keypoint_names": coco_names})) == 19
    assert skeleton_from_metadata(
        {"keypoint_names": ["a", "b"], "keypoint_skeleton": [["a", "b"]]}
    ) == [("a", "b")]
    assert skeleton_from_metadata({"keypoint_names": ["a", "b"]}) is None
    assert skeleton_from_metadata({}) is None
