"""A seeded generator of small COCO inputs, valid or broken in one random way (for the property
test in ``test_evaluation_inputs.py``), and pycocotools' reference numbers."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np

# Run as a subprocess's import too (test_evaluation_inputs.py), without conftest.py's paths.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import pycocotools_evaluate
from synthetic_coco import keypoints_subset, synthetic_coco

NAN = float("nan")


def _break(rng, gt, dets, iou_type):
    """Break one random thing (or nothing: about 2 in 3 inputs stay valid)."""
    kind = int(rng.integers(0, 15))
    ann = gt["annotations"][int(rng.integers(len(gt["annotations"])))]
    det = dets[int(rng.integers(len(dets)))]
    image = gt["images"][0]
    h, w = image["height"], image["width"]
    if kind == 0:
        ann["area"] = NAN
    elif kind == 1:
        ann.pop("area")
    elif kind == 2:
        det["score"] = NAN
    elif kind == 3 and iou_type == "bbox":
        det["bbox"] = [1.0, NAN, 3.0, 4.0]
    elif kind == 3 and iou_type == "segm":
        det["segmentation"] = {"size": [h, w], "counts": [h * w, h * w]}
    elif kind == 3:
        det["keypoints"] = [NAN] * len(det["keypoints"])
    elif kind == 4 and iou_type == "segm":
        ann["segmentation"] = [[1.0, 2.0, NAN, 4.0, 5.0, 6.0]]
    elif kind == 4 and iou_type == "keypoints":
        ann["keypoints"] = [NAN, *ann["keypoints"][1:]]
    elif kind == 4:
        ann["bbox"] = [1.0, 2.0, -3.0, 4.0]
    elif kind == 5:
        for i, a in enumerate(gt["annotations"]):  # defined by pycocotools: scored
            a["id"] = i


def case(seed: int):
    rng = np.random.default_rng(seed)
    iou_type = ("bbox", "segm", "keypoints")[seed % 3]
    gt, dets = synthetic_coco(
        int(rng.integers(2, 5)), objects_per_image=3.0, detections_per_image=30, seed=seed
    )
    if iou_type == "keypoints":
        gt, dets = keypoints_subset(gt, dets)
    gt, dets = copy.deepcopy(gt), copy.deepcopy(dets)
    _break(rng, gt, dets, iou_type)
    return gt, dets, iou_type


def reference(gt, dets, iou_type):
    """pycocotools' 12 numbers (10 for keypoints), as plain floats for JSON."""
    return [float(s) for s in pycocotools_evaluate(gt, dets, iou_type).stats]
