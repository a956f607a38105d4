"""lazydet's vectorised COCOeval against pycocotools on inputs that stress its shortcuts.

The engine batches work that pycocotools does one item at a time: matching one detection rank at
a time over padded ground-truth buckets, precision from the true positives only, summed OKS in
NumPy's order, one RLE IoU call per image. Each test below builds data where such a shortcut
could part from the reference (ties, crowds, many ground truths per group, odd ids, polygons
in the results) and asks for pycocotools' exact arrays.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
from helpers import pycocotools_evaluate
from synthetic_coco import keypoints_subset, synthetic_coco

from lazydet.evaluation import coco_evaluate
from lazydet.evaluation.vectorized_cocoeval import evaluate


def _assert_same(gt: dict, results: list, iou_type: str, **params) -> None:
    reference = pycocotools_evaluate(gt, results, iou_type, **params)
    out = evaluate(
        gt,
        results,
        iou_type,
        kpt_oks_sigmas=getattr(reference.params, "kpt_oks_sigmas", None),
        max_dets=params.get("maxDets"),
        img_ids=params.get("imgIds"),
    )
    # Bit-identical, not just close: same operations in the same order.
    np.testing.assert_array_equal(out.precision, reference.eval["precision"])
    np.testing.assert_array_equal(out.recall, reference.eval["recall"])
    np.testing.assert_array_equal(out.stats, reference.stats)


@pytest.fixture(scope="module")
def crowded():
    """Many instances per image (buckets of 1 to 32 ground truths per group), 10% crowds, few
    categories, and scores on a coarse grid so that ties across and within images abound."""
    gt, detections = synthetic_coco(25, objects_per_image=30, num_categories=4, seed=11)
    rng = np.random.default_rng(0)
    for ann in gt["annotations"]:
        if rng.random() < 0.1 and not ann["iscrowd"]:
            ann["iscrowd"] = 1  # a crowd region with a polygon: pycocotools takes it as it is
    for det in detections:
        det["score"] = round(det["score"] * 8) / 8
    return gt, detections


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_crowds_ties_and_wide_groups(crowded, iou_type):
    gt, detections = crowded if iou_type != "keypoints" else keypoints_subset(*crowded)
    _assert_same(gt, detections, iou_type)


def test_input_order_does_not_matter_beyond_ties(crowded):
    gt, detections = crowded
    shuffled = list(detections)
    np.random.default_rng(1).shuffle(shuffled)
    _assert_same(gt, shuffled, "bbox")


def test_keypoints_beyond_max_dets_shuffled_and_unlabelled_ground_truth(crowded):
    """More than maxDets (20) person detections per image, in shuffled order (the engine reads
    only the kept ones' keypoints, in input order), and ground truths with no labelled keypoint
    (OKS from the distance to a box twice their size)."""
    gt, detections = keypoints_subset(*crowded)
    gt = copy.deepcopy(gt)
    per_image = np.bincount([det["image_id"] for det in detections])
    assert per_image.max() > 20
    for ann in gt["annotations"][::4]:
        ann["keypoints"][2::3] = [0] * (len(ann["keypoints"]) // 3)  # num_keypoints kept: counted
    shuffled = list(detections)
    np.random.default_rng(2).shuffle(shuffled)
    _assert_same(gt, shuffled, "keypoints")


def test_custom_max_dets_and_image_subset(crowded):
    gt, detections = crowded
    _assert_same(gt, detections, "bbox", maxDets=[1, 3, 7])
    image_ids = [img["id"] for img in gt["images"]][::3]
    _assert_same(gt, detections, "segm", imgIds=image_ids)


def test_string_image_ids_and_a_zero_annotation_id():
    gt, detections = synthetic_coco(6, seed=5)
    name = {img["id"]: f"img-{img['id']}" for img in gt["images"]}
    for record in gt["images"]:
        record["id"] = name[record["id"]]
    for record in gt["annotations"] + detections:
        record["image_id"] = name[record["image_id"]]
    gt["annotations"][0]["id"] = 0  # pycocotools records a match as the gt id: 0 reads "none"
    _assert_same(gt, detections, "bbox")


def test_repeated_annotation_ids_follow_pycocotools_and_warn(caplog):
    gt, detections = synthetic_coco(4, seed=6)
    gt["annotations"][3]["id"] = gt["annotations"][1]["id"]
    with caplog.at_level(logging.WARNING):
        _assert_same(gt, detections, "bbox")
    assert "repeat an earlier annotation's id" in caplog.text


def test_polygon_and_uncompressed_detection_masks():
    """Results with polygons or uncompressed RLE (not a detector's usual compressed RLE) are
    converted as COCO.annToRLE converts them."""
    gt, detections = synthetic_coco(5, seed=7)
    for n, det in enumerate(detections):
        x, y, w, h = det["bbox"]
        if n % 3 == 0:
            det["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        elif n % 3 == 1:
            image = next(i for i in gt["images"] if i["id"] == det["image_id"])
            from pycocotools import mask as mask_utils

            binary = mask_utils.decode(det["segmentation"])
            flat = binary.ravel(order="F")
            change = np.flatnonzero(np.diff(flat)) + 1
            runs = np.diff(np.concatenate([[0], change, [flat.size]]))
            counts = ([0] if flat[0] else []) + runs.tolist()
            det["segmentation"] = {"size": [image["height"], image["width"]], "counts": counts}
    _assert_same(gt, detections, "segm")


def test_area_from_masks_or_keypoints_when_results_have_no_box():
    """COCO.loadRes takes a detection's area from the first result's kind: box, mask, keypoints."""
    gt, detections = synthetic_coco(6, seed=8)
    no_box = [{k: v for k, v in det.items() if k != "bbox"} for det in detections]
    _assert_same(gt, no_box, "segm")
    kp_gt, kp_dets = keypoints_subset(gt, detections)
    only_points = [
        {k: v for k, v in det.items() if k not in ("bbox", "segmentation")} for det in kp_dets
    ]
    _assert_same(kp_gt, only_points, "keypoints")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "12"])
def test_non_finite_or_text_boxes_are_refused_by_index(bad):
    gt, detections = synthetic_coco(3, seed=9)
    detections = copy.deepcopy(detections)
    detections[7]["bbox"][2] = bad
    with pytest.raises(
        ValueError, match=r"Detection 7 \(image_id 1, category_id 1\): bbox .* finite numbers"
    ):
        coco_evaluate(gt, detections, "bbox", verbose=False)


def test_non_finite_ground_truth_is_refused_by_id():
    gt, detections = synthetic_coco(3, seed=9)
    gt = copy.deepcopy(gt)
    gt["annotations"][2]["area"] = float("nan")
    with pytest.raises(ValueError, match=r"annotation 2 \(id 3, image_id 1\) has area nan"):
        coco_evaluate(gt, detections, "bbox", verbose=False)


def test_short_keypoint_rows_are_refused():
    gt, detections = keypoints_subset(*synthetic_coco(3, seed=9))
    detections = copy.deepcopy(detections)
    detections[1]["keypoints"] = detections[1]["keypoints"][:-3]
    with pytest.raises(ValueError, match=r"Detection 1 \(.*\): 48 keypoint values"):
        coco_evaluate(gt, detections, "keypoints", verbose=False)


@pytest.mark.parametrize(
    ("field", "value"),
    [("area", "900"), ("area", None), ("bbox", [1, 2, 3]), ("bbox", [1, 2, "3", 4])],
)
def test_malformed_ground_truth_is_refused_by_id(field, value):
    gt, detections = synthetic_coco(3, seed=9)
    gt = copy.deepcopy(gt)
    gt["annotations"][4][field] = value
    with pytest.raises(
        ValueError,
        match=r"annotation 4 \(id 5, image_id 1\) (has area|bbox) .*(finite number|4 finite numbers)",
    ):
        coco_evaluate(gt, detections, "bbox", verbose=False)
