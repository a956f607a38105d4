"""Time COCO evaluation: pycocotools, faster-coco-eval, hotcoco and lazydet's ``coco_evaluate``.

"lazydet" is ``coco_evaluate`` with its input checks and ``engine="auto"``; "lazydet vectorized"
forces lazydet's NumPy engine (``lazydet.evaluation.vectorized_cocoeval``). faster-coco-eval comes
with ``pip install -e ".[bench]"``.

    python scripts/bench_eval.py                 # 1,000 images (about a minute here)
    python scripts/bench_eval.py --images 5000   # the issue's size (pycocotools alone ~2 min)

Data (``tests/fixtures/synthetic_coco.py``): ~7 instances per image in 80 categories with polygon
masks (crowd regions as RLE), 17 keypoints on persons; 100 detections per image with RLE masks
(keypoint detections: the person detections). Every candidate gets the same in-memory ground
truth dict and results list and is timed from there to its 12 (10) summary numbers, best of
``--repeat`` rounds that run every candidate in turn (pycocotools: the first round only); each
one's numbers are compared with pycocotools'.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import sys
import time
from pathlib import Path

import numpy as np


def _pycocotools(gt, results, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats


def _faster_coco_eval(gt, results, iou_type):
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(gt)
    evaluator = COCOeval_faster(coco_gt, coco_gt.loadRes(results), iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats


def _hotcoco(gt, results, iou_type):
    import hotcoco

    coco_gt = hotcoco.COCO(gt)
    evaluator = hotcoco.COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats


def _lazydet(engine):
    def run(gt, results, iou_type):
        from lazydet.evaluation import coco_evaluate

        return coco_evaluate(gt, results, iou_type, engine=engine, verbose=False).stats

    return run


def _read_floor(gt, results, iou_type):
    """Not an evaluator: only read the fields every evaluator must read from the results list
    (ids, scores, the boxes or keypoints as floats; masks: the RLE dicts) with NumPy's fastest
    reader. No Python-level evaluator can take less time; returns no numbers."""
    import itertools
    from operator import itemgetter

    n = len(results)
    for key in ("image_id", "category_id", "score"):
        np.fromiter(map(itemgetter(key), results), np.float64, count=n)
    geometry = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[iou_type]
    column = list(map(itemgetter(geometry), results))
    if iou_type != "segm":
        width = len(column[0])
        np.fromiter(itertools.chain.from_iterable(column), np.float64, count=width * n)
    return None


CANDIDATES = {
    "pycocotools": _pycocotools,
    "faster-coco-eval": _faster_coco_eval,
    "hotcoco": _hotcoco,
    # coco_evaluate as users call it: input checks, then engine="auto" (per IoU type the fastest
    # of the two below) ...
    "lazydet": _lazydet("auto"),
    # ... and lazydet's NumPy engine alone (what auto runs without hotcoco).
    "lazydet vectorized": _lazydet("vectorized"),
    "(reading the input, the floor)": _read_floor,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per fast candidate (best)")
    parser.add_argument("--types", default="bbox,segm,keypoints")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
    from synthetic_coco import keypoints_subset, synthetic_coco

    start = time.perf_counter()
    gt, detections = synthetic_coco(args.images)
    print(
        f"{args.images} images, {len(gt['annotations'])} instances, {len(detections)} detections "
        f"(generated in {time.perf_counter() - start:.1f} s)"
    )
    rows = []
    for iou_type in args.types.split(","):
        data = keypoints_subset(gt, detections) if iou_type == "keypoints" else (gt, detections)
        times = dict.fromkeys(CANDIDATES, float("inf"))
        stats = {}
        # Round-robin (pycocotools in the first round only): a slow phase of a shared machine
        # then touches every candidate alike instead of the one timed in it.
        for round_ in range(args.repeat):
            for name, run in CANDIDATES.items():
                if name == "pycocotools" and round_ > 0:
                    continue
                # pycocotools' loadRes (and faster-coco-eval's) write into the dicts they get:
                # give them copies (made outside the timer); hotcoco and lazydet do not write.
                mutates = name in ("pycocotools", "faster-coco-eval")
                g, r = copy.deepcopy(data) if mutates else data
                t0 = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    out = run(g, r, iou_type)
                times[name] = min(times[name], time.perf_counter() - t0)
                stats[name] = None if out is None else np.asarray(out, dtype=np.float64)
        reference = stats["pycocotools"]
        for name in CANDIDATES:
            diff = np.nan if stats[name] is None else float(np.abs(stats[name] - reference).max())
            rows.append((iou_type, name, times[name], times["pycocotools"] / times[name], diff))
        print(f"{iou_type}: AP {reference[0]:.4f}")
    print(
        "\n| iou type | engine | seconds | vs pycocotools | max abs diff of stats vs pycocotools |"
    )
    print("|---|---|---|---|---|")
    for iou_type, name, seconds, speedup, diff in rows:
        shown = "-" if np.isnan(diff) else f"{diff:.1e}"
        print(f"| {iou_type} | {name} | {seconds:.3f} | {speedup:.1f}x | {shown} |")


if __name__ == "__main__":
    main()
