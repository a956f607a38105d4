"""Error analysis on the real COCO val2014 ground truth of 100 images and the COCO API's
official fake results (../shared/data/coco_val2014_100)."""

import copy
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lazydet.analysis import errors

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "coco_val2014_100"
GT = DATA / "instances_val2014_100.json"
RESULTS = DATA / "instances_val2014_fakebbox100_results.json"

pytestmark = pytest.mark.skipif(not GT.is_file(), reason=f"reference data missing: {DATA}")


@pytest.fixture(scope="module")
def analysis():
    return errors.analyze_errors(GT, RESULTS, score_threshold=0.3)


@pytest.fixture(scope="module")
def gt():
    return json.loads(GT.read_text())


def _pycocotools_precision():
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(GT))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(RESULTS)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"]


def test_pr_curves_equal_the_evaluators_precision_array(analysis):
    from lazydet.evaluation import coco_evaluate

    reference = _pycocotools_precision()  # [T, R, K, A, M], the COCO API itself
    lazydet = coco_evaluate(GT, RESULTS, "bbox", verbose=False).precision
    for t, ti in ((0, 0), (1, 5)):  # IoU .5 and .75
        np.testing.assert_array_equal(analysis.precision[t], reference[ti, :, :, 0, 2])
        np.testing.assert_array_equal(analysis.precision[t], lazydet[ti, :, :, 0, -1])
        # the breakdown's own C50 / C75 re-evaluation gives the same curves
        np.testing.assert_array_equal(analysis.breakdown[1 - t], reference[ti, :, :, 0, 2])
    assert analysis.recall.tolist() == pytest.approx(np.linspace(0, 1, 101).tolist())


def test_breakdown_is_monotone_and_fn_reaches_full_recall(analysis):
    valid = analysis.breakdown[0, 0] > -1
    curves = analysis.breakdown[:, :, valid]
    # each stage forgives more errors: precision never drops from one stage to the next
    assert (np.diff(curves, axis=0) >= -1e-12).all()
    # FN: precision 1 at every recall up to 1, where every object counts as found
    assert (curves[-1] == 1).all()
    # BG: 1 wherever Oth recalls anything, 0 beyond
    assert ((curves[5] == 1) == (curves[4] > 0)).all()
    # the mean AP of C75 / C50 are the summary AP75 / AP50 (0.5730 / 0.6970, README of the data)
    assert curves[0].mean() == pytest.approx(0.5730, abs=5e-5)
    assert curves[1].mean() == pytest.approx(0.6970, abs=5e-5)


def test_buckets_sum_to_the_object_and_detection_counts(analysis, gt):
    regular = sum(1 for a in gt["annotations"] if not a.get("iscrowd", 0))
    assert sum(analysis.gt_buckets.values()) == regular == 830
    results = json.loads(RESULTS.read_text())
    per_pair = Counter((d["image_id"], d["category_id"]) for d in results)
    evaluated = sum(min(n, errors.MAX_DETS) for n in per_pair.values())
    assert sum(analysis.det_buckets.values()) == evaluated
    # matching is one-to-one: objects found at IoU .75 are the detections true at .75
    assert analysis.gt_buckets["C75"] == analysis.det_buckets["C75"] == 554


def test_confusion_matrix_rows_are_the_object_counts(analysis, gt):
    index = {c["id"]: k for k, c in enumerate(gt["categories"])}
    objects = np.zeros(len(index), dtype=int)
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            objects[index[a["category_id"]]] += 1
    matrix = analysis.confusion
    np.testing.assert_array_equal(matrix[:-1].sum(axis=1), objects)
    assert matrix[-1, -1] == 0
    results = json.loads(RESULTS.read_text())
    kept = np.zeros(len(index), dtype=int)
    for d in results:
        if d["score"] >= 0.3:
            kept[index[d["category_id"]]] += 1
    _, _, on_crowd = errors.confusion_matrix(gt, results, score_threshold=0.3)
    assert matrix[:, :-1].sum() + on_crowd == kept.sum()
    # per image: missed + wrong class, false positives + wrong class
    assert sum(m for m, _ in analysis.per_image.values()) == matrix[:-1].sum() - np.trace(matrix)


def test_hand_made_image():
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "categories": [
            {"id": 1, "name": "cat", "supercategory": "animal"},
            {"id": 2, "name": "dog", "supercategory": "animal"},
            {"id": 3, "name": "car", "supercategory": "vehicle"},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 20, 20],
                "area": 400,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 2,
                "bbox": [50, 50, 20, 20],
                "area": 400,
                "iscrowd": 0,
            },
            {
                "id": 3,
                "image_id": 1,
                "category_id": 3,
                "bbox": [0, 60, 30, 30],
                "area": 900,
                "iscrowd": 0,
            },
        ],
    }
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9},  # C75
        {"image_id": 1, "category_id": 1, "bbox": [50, 50, 20, 20], "score": 0.8},  # a dog: Sim
        {"image_id": 1, "category_id": 1, "bbox": [80, 0, 10, 10], "score": 0.7},  # BG
    ]
    a = errors.analyze_errors(copy.deepcopy(gt), results, score_threshold=0.5)
    assert a.det_buckets == {"C75": 1, "C50": 0, "Loc": 0, "Sim": 1, "Oth": 0, "BG": 1, "crowd": 0}
    assert a.gt_buckets == {"C75": 1, "C50": 0, "Loc": 0, "Sim": 1, "Oth": 0, "FN": 1}
    # rows gt (cat, dog, car, bg), columns detected
    assert a.confusion.tolist() == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]]
    assert a.per_image[1] == (2, 2)


@pytest.mark.slow
def test_pictures(analysis, tmp_path):
    from PIL import Image

    for draw, name in (
        (errors.plot_pr_curves, "pr.png"),
        (errors.plot_breakdown, "breakdown.png"),
        (errors.plot_confusion_matrix, "cm.png"),
    ):
        assert Image.open(draw(analysis, tmp_path / name)).size[0] > 200
    page, worst = errors.plot_worst_images(analysis, GT, RESULTS, tmp_path / "worst.png", count=3)
    ranked = sorted(analysis.per_image.values(), key=lambda e: -sum(e))
    assert [sum(analysis.per_image[i]) for i in worst] == [sum(e) for e in ranked[:3]]
    assert Image.open(page).size[1] > 3 * 240
