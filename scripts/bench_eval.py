"""Time COCO evaluation: pycocotools, faster-coco-eval, hotcoco and lazydet's ``coco_evaluate``.

"lazydet" is ``coco_evaluate`` with its input checks and ``engine="auto"``; "lazydet vectorized"
forces lazydet's NumPy engine (``lazydet.evaluation.vectorized_cocoeval``). faster-coco-eval comes
with ``pip install -e ".[bench]"`` (left out when it is not installed).

    python scripts/bench_eval.py                           # 1,000 images
    python scripts/bench_eval.py --images 1000 --repeat 3  # docs/evaluation.md's run
    python scripts/bench_eval.py --images 5000             # the issue's size (pycocotools ~1 min
                                                           # per IoU type and table)

Data (``tests/fixtures/synthetic_coco.py``): ~7 instances per image in 80 categories with polygon
masks (crowd regions as RLE), 17 keypoints on persons; 100 detections per image with boxes and RLE
masks in one results list, as a Mask R-CNN writes them (keypoint detections: the person
detections, with keypoints). Two tables:

- **from files**, as users call it: every candidate gets the same two paths (ground truth json,
  results json, written once with orjson into a temporary folder) and is timed from them to its
  12 (10) summary numbers, parsing included (each with its own parser: pycocotools and
  faster-coco-eval the standard library's json, hotcoco its Rust one, lazydet orjson for the
  ground truth and msgspec for the results, straight into arrays);
- **from memory**: every candidate gets the same parsed ground truth dict and results list.

Times are the best of ``--repeat`` rounds that run every candidate in turn (pycocotools: the first
round only), so a slow phase of a shared machine touches every candidate alike; each one's numbers
are compared with pycocotools'.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _cocoeval_stats(coco_gt, evaluator_class, results, iou_type):
    """The COCOeval API the three candidates share: evaluate, accumulate, summarize."""
    evaluator = evaluator_class(coco_gt, coco_gt.loadRes(results), iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats


def _pycocotools(gt, results, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if isinstance(gt, str):  # a path: COCO() reads it (json.load), as loadRes reads results
        coco_gt = COCO(gt)
    else:
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
    return _cocoeval_stats(coco_gt, COCOeval, results, iou_type)


def _faster_coco_eval(gt, results, iou_type):
    from faster_coco_eval import COCO, COCOeval_faster

    return _cocoeval_stats(COCO(gt), COCOeval_faster, results, iou_type)


def _hotcoco(gt, results, iou_type):
    import hotcoco

    return _cocoeval_stats(hotcoco.COCO(gt), hotcoco.COCOeval, results, iou_type)


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


def _read_floor_from_files(gt_path, results_path, iou_type):
    """The floor from files: parse the ground truth with orjson (cyclic garbage collection
    paused, as lazydet does) and read the results' ids, scores and boxes / keypoints (segm: the
    masks' sizes and text) into arrays with msgspec, decoding only those fields (lazydet's
    reader, ``lazydet.evaluation.results_reader``)."""
    import gc

    import orjson

    from lazydet.evaluation.results_reader import read_result_columns

    gc.disable()
    try:
        orjson.loads(Path(gt_path).read_bytes())
        if read_result_columns(results_path, iou_type) is None:
            raise RuntimeError(f"{results_path} is outside the reader's schema")
    finally:
        gc.enable()


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
# From files: pycocotools, faster-coco-eval and hotcoco take paths where they take dicts (COCO(),
# loadRes()); so does coco_evaluate.
FILE_CANDIDATES = {**CANDIDATES, "(reading the input, the floor)": _read_floor_from_files}
MUTATES_INPUT = ("pycocotools", "faster-coco-eval")  # loadRes writes into the dicts it gets


def _installed(name: str) -> bool:
    module = {"faster-coco-eval": "faster_coco_eval", "hotcoco": "hotcoco"}.get(name)
    return module is None or importlib.util.find_spec(module) is not None


def _time_round_robin(candidates, inputs, iou_type, repeat, clock=time.perf_counter):
    """Best time and last stats of each candidate over ``repeat`` interleaved rounds."""
    times = dict.fromkeys(candidates, float("inf"))
    stats = {}
    for round_ in range(repeat):
        for name, run in candidates.items():
            if name == "pycocotools" and round_ > 0:
                continue
            # In memory, give the candidates that write into their input copies (made outside
            # the timer); hotcoco and lazydet do not write. Paths need no copy.
            g, r = copy.deepcopy(inputs) if name in MUTATES_INPUT else inputs
            t0 = clock()
            with contextlib.redirect_stdout(io.StringIO()):
                out = run(g, r, iou_type)
            times[name] = min(times[name], clock() - t0)
            stats[name] = None if out is None else np.asarray(out, dtype=np.float64)
    return times, stats


def _print_table(title, rows):
    print(f"\n{title}\n")
    print("| iou type | engine | seconds | vs pycocotools | max abs diff of stats vs pycocotools |")
    print("|---|---|---|---|---|")
    for iou_type, name, seconds, speedup, diff in rows:
        shown = "-" if np.isnan(diff) else f"{diff:.1e}"
        print(f"| {iou_type} | {name} | {seconds:.3f} | {speedup:.1f}x | {shown} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per fast candidate (best)")
    parser.add_argument("--types", default="bbox,segm,keypoints")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: the process's CPU time (time.process_time, all its "
        "threads), steadier on a machine shared with other jobs",
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    import orjson

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
    from synthetic_coco import keypoints_subset, synthetic_coco

    start = time.perf_counter()
    gt, detections = synthetic_coco(args.images)
    print(
        f"{args.images} images, {len(gt['annotations'])} instances, {len(detections)} detections "
        f"(generated in {time.perf_counter() - start:.1f} s)"
    )
    missing = [name for name in CANDIDATES if not _installed(name)]
    if missing:
        print(f"not installed, left out: {', '.join(missing)}")
    tables = {"files": [], "memory": []}
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as folder:
        for iou_type in args.types.split(","):
            data = keypoints_subset(gt, detections) if iou_type == "keypoints" else (gt, detections)
            paths = (
                Path(folder) / f"{iou_type}_gt.json",
                Path(folder) / f"{iou_type}_results.json",
            )
            for path, content in zip(paths, data):
                path.write_bytes(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY))
            sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.0f} MB" for p in paths)
            print(f"{iou_type}: {sizes}")
            for table, candidates, inputs in (
                ("files", FILE_CANDIDATES, tuple(map(str, paths))),
                ("memory", CANDIDATES, data),
            ):
                candidates = {k: v for k, v in candidates.items() if k not in missing}
                times, stats = _time_round_robin(candidates, inputs, iou_type, args.repeat, clock)
                reference = stats["pycocotools"]
                for name in candidates:
                    diff = (
                        np.nan
                        if stats[name] is None
                        else float(np.abs(stats[name] - reference).max())
                    )
                    speedup = times["pycocotools"] / times[name]
                    tables[table].append((iou_type, name, times[name], speedup, diff))
                print(f"  {table}: AP {reference[0]:.4f}", flush=True)
    unit = "wall-clock" if args.clock == "wall" else "CPU (process_time)"
    _print_table(
        f"From files ({unit} seconds; each candidate given the same two paths, parsing included):",
        tables["files"],
    )
    _print_table(
        f"From memory ({unit} seconds; each candidate given the same parsed dicts):",
        tables["memory"],
    )


if __name__ == "__main__":
    main()
