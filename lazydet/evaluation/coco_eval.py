"""COCO AP for any COCO results file: the numbers of ``pycocotools.cocoeval.COCOeval``, faster.

``coco_evaluate(gt_json, results_json, iou_type)`` returns the 12 summary numbers (10 for
keypoints), prints the usual table and a per-category AP table, and can write the results it was
given as a COCO results json.

Engines. The matching, accumulation and summary are done by one of two engines that compute the
same numbers:

- ``"vectorized"`` (``lazydet.evaluation.vectorized_cocoeval``, the default): pycocotools'
  algorithm over all images, categories, area ranges and thresholds at once in NumPy, with the
  same floating-point operations; 40-100x faster than pycocotools here (``scripts/bench_eval.py``,
  ``docs/evaluation.md``). ``tests/evaluation/test_coco_eval.py`` holds it to pycocotools to
  1e-12 on the official COCO API example, on 77 edge cases and on generated data.
- ``"pycocotools"``: the reference itself (a required dependency).

Input on which pycocotools would crash, assert or quietly compute nonsense is refused before
either engine runs: a detection on an image the ground truth does not have, a keypoint detection
whose length does not match the ground truth, a missing field, a non-finite score, box or
keypoint, or keypoints without the right number of OKS sigmas raise one ``ValueError`` naming the
detection and the fix. An empty results list scores zero where the ground truth has instances
(pycocotools crashes in ``loadRes``).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import json
import math
import operator
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from lazydet.evaluation import vectorized_cocoeval

IOU_TYPES = ("bbox", "segm", "keypoints")
ENGINES = ("auto", "vectorized", "hotcoco", "pycocotools")
# What engine="auto" runs, per IoU type: the fastest on 5,000 generated images here
# (scripts/bench_eval.py, docs/evaluation.md). hotcoco falls back to "vectorized" when missing.
AUTO_ENGINE = {"bbox": "vectorized", "segm": "hotcoco", "keypoints": "hotcoco"}

# The OKS sigmas of COCO's 17 person keypoints (pycocotools' default, from the COCO paper).
COCO_PERSON_OKS_SIGMAS = np.array(
    [.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]
) / 10.0  # fmt: skip

# pycocotools' summary: (is AP, IoU threshold or None for 0.50:0.95, area label, maxDets index
# into params.maxDets, or a literal string where pycocotools hard-codes the value).
_SUMMARY_ROWS = {
    "bbox": [
        (True, None, "all", "100"),
        (True, 0.5, "all", 2),
        (True, 0.75, "all", 2),
        (True, None, "small", 2),
        (True, None, "medium", 2),
        (True, None, "large", 2),
        (False, None, "all", 0),
        (False, None, "all", 1),
        (False, None, "all", 2),
        (False, None, "small", 2),
        (False, None, "medium", 2),
        (False, None, "large", 2),
    ],
    "keypoints": [
        (True, None, "all", "20"),
        (True, 0.5, "all", "20"),
        (True, 0.75, "all", "20"),
        (True, None, "medium", "20"),
        (True, None, "large", "20"),
        (False, None, "all", "20"),
        (False, 0.5, "all", "20"),
        (False, 0.75, "all", "20"),
        (False, None, "medium", "20"),
        (False, None, "large", "20"),
    ],
}
_SUMMARY_ROWS["segm"] = _SUMMARY_ROWS["bbox"]

# Names of the summary numbers, as Detectron2 reports them (AP in percent in metrics).
METRIC_NAMES = {
    "bbox": [
        "AP",
        "AP50",
        "AP75",
        "APs",
        "APm",
        "APl",
        "AR1",
        "AR10",
        "AR100",
        "ARs",
        "ARm",
        "ARl",
    ],
    "keypoints": ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"],
}
METRIC_NAMES["segm"] = METRIC_NAMES["bbox"]


@dataclass
class COCOEvalResult:
    """What one evaluation produced.

    Attributes:
        iou_type: "bbox", "segm" or "keypoints".
        stats: the 12 (keypoints: 10) summary numbers of pycocotools' ``COCOeval.stats``, in its
            order and on its scale (0-1; -1 where no ground truth falls in the range).
        per_category_ap: category name -> AP@[.5:.95] over all areas at the largest maxDets
            (0-1; NaN where the category has no ground truth), in the ground truth's category order.
        precision: pycocotools' ``eval["precision"]``, ``[T, R, K, A, M]`` (IoU thresholds, recall
            thresholds, categories, area ranges, maxDets).
        engine: the engine that computed it.
        summary: the printed table (the summary lines and the per-category table).
    """

    iou_type: str
    stats: list[float]
    per_category_ap: dict[str, float]
    precision: np.ndarray = field(repr=False)
    engine: str
    summary: str = field(repr=False)

    def metrics(self) -> dict[str, float]:
        """Named numbers in percent (``{"AP": 50.5, "AP50": ..., "AP-person": ...}``); NaN where
        pycocotools reports -1 (no ground truth in that range)."""
        out = {
            name: (float("nan") if value < 0 else 100.0 * value)
            for name, value in zip(METRIC_NAMES[self.iou_type], self.stats)
        }
        out.update({f"AP-{name}": 100.0 * ap for name, ap in self.per_category_ap.items()})
        return out


def hotcoco_available() -> bool:
    try:
        import hotcoco  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_engine(engine: str, iou_type: str = "bbox") -> str:
    """``"auto"`` -> the fastest engine installed for ``iou_type`` (``AUTO_ENGINE``, measured by
    ``scripts/bench_eval.py``); others checked."""
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not one of {ENGINES}.")
    if engine == "auto":
        preferred = AUTO_ENGINE[iou_type]
        return preferred if preferred != "hotcoco" or hotcoco_available() else "vectorized"
    if engine == "hotcoco" and not hotcoco_available():
        raise ValueError(
            "engine='hotcoco' but the package is not installed: pip install 'hotcoco>=1.3', "
            "or use engine='vectorized' (same numbers)."
        )
    return engine


def _read_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory; give the path of a .json file.")
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist.")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{what} {str(path)!r} is not valid JSON ({e}); is the file truncated?"
        ) from e


def load_ground_truth(gt_json: str | os.PathLike | Mapping) -> dict:
    """The ground truth as a COCO dataset dict (read from a path, or checked when given a dict)."""
    gt = _read_json(gt_json, "Ground truth") if isinstance(gt_json, (str, os.PathLike)) else gt_json
    if not isinstance(gt, Mapping):
        raise ValueError(
            f"Ground truth must be a COCO json object (images, annotations, categories), got "
            f"{type(gt).__name__}."
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise ValueError(
                f"Ground truth has no '{key}' list (keys: {sorted(gt)}); is this a COCO "
                "annotation file rather than a results file?"
            )
    return dict(gt)


def load_results(results_json: str | os.PathLike | Sequence[Mapping]) -> list[dict]:
    """The detections as a list of COCO result dicts (read from a path or given as a list)."""
    if isinstance(results_json, (str, os.PathLike)):
        results = _read_json(results_json, "Results file")
    else:
        results = results_json
    if isinstance(results, Mapping) and "annotations" in results:
        raise ValueError(
            "The results are a COCO dataset (a dict with 'annotations'), not a results list; "
            "a COCO results file is a json list of {image_id, category_id, score, bbox|"
            "segmentation|keypoints}."
        )
    if not isinstance(results, (list, tuple)):
        raise ValueError(
            f"COCO results must be a list of detection dicts, got {type(results).__name__}."
        )
    return results if isinstance(results, list) else list(results)


_REQUIRED = {
    "bbox": ("image_id", "category_id", "score", "bbox"),
    "segm": ("image_id", "category_id", "score", "segmentation"),
    "keypoints": ("image_id", "category_id", "score", "keypoints"),
}


def _num_keypoints(gt: Mapping) -> int | None:
    for ann in gt["annotations"]:
        if "keypoints" in ann:
            return len(ann["keypoints"]) // 3
    for cat in gt["categories"]:
        if cat.get("keypoints"):
            return len(cat["keypoints"])
    return None


def _integer_ids(values, count: int, results, key: str) -> np.ndarray | list:
    """Integer ids as an int64 array in one pass; any other kind of id as a list."""
    try:  # operator.index refuses what is not an integer (fromiter alone would cast 1.5 to 1)
        return np.fromiter(map(operator.index, values), np.int64, count=count)
    except (TypeError, OverflowError):
        return list(map(itemgetter(key), results))


def _numbers(values, count: int) -> np.ndarray | None:
    """Numbers as a float64 array in one pass; None when one is not a number (text, None)."""
    try:  # operator.pos refuses text, which fromiter alone would parse ("0.9" -> 0.9)
        return np.fromiter(map(operator.pos, values), np.float64, count=count)
    except (TypeError, ValueError):
        return None


def check_results(gt: Mapping, results: Sequence[Mapping], iou_type: str) -> dict[str, Any]:
    """Refuse input on which pycocotools would crash or compute nonsense (see the module doc).

    Returns:
        The fields it read, one entry per detection: ``image_id`` and ``category_id`` (an int64
        array for integer ids, else a list), ``score`` (a float64 array) and the geometry field
        (a list).

    Raises:
        ValueError: naming the first bad detection (its index) or annotation, and what to do.
    """
    required = _REQUIRED[iou_type]
    columns: dict[str, Any] = {}
    try:  # one C-level pass per field: ~15 ms per 100k detections, against ~150 ms for a loop
        for key in required:
            column = map(itemgetter(key), results)
            if key in ("image_id", "category_id"):
                columns[key] = _integer_ids(column, len(results), results, key)
            elif key != "score":
                columns[key] = list(column)
        scores = _numbers(map(itemgetter("score"), results), len(results))
    except (KeyError, TypeError, IndexError):
        for index, det in enumerate(results):
            if not isinstance(det, Mapping) or any(key not in det for key in required):
                have = sorted(det) if isinstance(det, Mapping) else type(det).__name__
                raise ValueError(
                    f"Detection {index} lacks a field that {iou_type} evaluation needs "
                    f"{required}; it has {have}."
                ) from None
        raise
    gt_image_ids = [img["id"] for img in gt["images"]]
    det_image_ids = columns["image_id"]
    if isinstance(det_image_ids, np.ndarray) and np.asarray(gt_image_ids).dtype.kind in "iu":
        # Integer ids (COCO's): an array test.
        outside = ~np.isin(det_image_ids, gt_image_ids)
        unknown = set(det_image_ids[outside].tolist()) if outside.any() else set()
    else:
        unknown = set(det_image_ids) - set(gt_image_ids)
    if unknown:
        index = next(i for i, det in enumerate(results) if det["image_id"] in unknown)
        raise ValueError(
            f"Detection {index} is on image_id {results[index]['image_id']!r}, which the ground "
            f"truth does not have ({len(unknown)} unknown image id(s) in all: "
            f"{sorted(unknown, key=str)[:5]}). Evaluate results against the split they were "
            "predicted on."
        )
    if scores is None:
        index = next(
            i for i, det in enumerate(results) if not isinstance(det["score"], (int, float))
        )
        raise ValueError(
            f"Detection {index} has score {results[index]['score']!r}; scores are numbers."
        )
    if not np.isfinite(scores).all():
        index = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise ValueError(
            f"Detection {index} has score {results[index]['score']!r}; scores must be finite."
        )
    columns["score"] = scores
    if iou_type == "segm":
        # An empty polygon list has no mask: pycocotools crashes on it.
        for what, anns in (("Ground-truth annotation", gt["annotations"]), ("Detection", results)):
            if what == "Detection" and all(columns["segmentation"]):
                continue  # the common case, checked without a Python loop
            for index, ann in enumerate(anns):
                if not ann.get("segmentation"):
                    raise ValueError(
                        f"{what} {index} (id {ann.get('id')!r}) has no segmentation "
                        f"({ann.get('segmentation')!r}); segm evaluation needs a polygon list or "
                        "an RLE for every instance. Drop it or evaluate bbox."
                    )
    if iou_type == "keypoints":
        for index, ann in enumerate(gt["annotations"]):
            if "keypoints" not in ann or "num_keypoints" not in ann:
                raise ValueError(
                    f"Ground-truth annotation {index} (id {ann.get('id')!r}, category "
                    f"{ann.get('category_id')!r}) has no 'keypoints'/'num_keypoints'; keypoint "
                    "evaluation needs a ground truth whose annotations all carry keypoints (a "
                    "person_keypoints file: only the keypoint categories)."
                )
        k = _num_keypoints(gt)
        lengths = set(map(len, columns["keypoints"]))
        for index, det in enumerate(results if k is not None and lengths - {3 * k} else ()):
            if len(det["keypoints"]) != 3 * k:
                raise ValueError(
                    f"Detection {index} has {len(det['keypoints'])} keypoint values; the ground "
                    f"truth has {k} keypoints per instance, so {3 * k} (x, y, v triples) are needed."
                )
    return columns


def _oks_sigmas(gt: Mapping, kpt_oks_sigmas: Sequence[float] | None) -> np.ndarray:
    k = _num_keypoints(gt)
    if kpt_oks_sigmas is None:
        if k not in (None, 17):
            raise ValueError(
                f"The ground truth has {k} keypoints per instance; pycocotools' default OKS sigmas "
                f"are for COCO's 17 person keypoints. Pass kpt_oks_sigmas with {k} values (the "
                "dataset metadata's keypoint_oks_sigmas)."
            )
        return COCO_PERSON_OKS_SIGMAS.copy()
    sigmas = np.asarray(kpt_oks_sigmas, dtype=np.float64)
    if sigmas.ndim != 1 or (k is not None and len(sigmas) != k) or not np.all(sigmas > 0):
        raise ValueError(
            f"kpt_oks_sigmas has {sigmas.size} values {sigmas.tolist()[:5]}...; the ground truth "
            f"has {k} keypoints per instance and each sigma must be positive."
        )
    return sigmas


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection while the engine runs: it makes no reference cycles, and a
    collection over a 500k-detection results list costs ~50 ms each time one triggers."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Quiet(contextlib.redirect_stdout):
    """Both engines print progress; lazydet prints its own table instead."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())


def _run_pycocotools(gt, results, iou_type, sigmas, max_dets, img_ids):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with _Quiet():
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(dict(gt))
        coco_gt.createIndex()
        if results:
            # loadRes adds fields (area, id, bbox) to the dicts it gets: give it copies.
            coco_dt = coco_gt.loadRes([dict(det) for det in results])
        else:  # loadRes([]) raises IndexError; no detections scores zero recall instead
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": list(gt["images"]),
                "categories": copy.deepcopy(gt["categories"]),
                "annotations": [],
            }
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = sigmas
        if max_dets is not None:
            evaluator.params.maxDets = list(max_dets)
        if img_ids is not None:
            evaluator.params.imgIds = list(img_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _run_vectorized(gt, results, iou_type, sigmas, max_dets, img_ids, columns):
    return vectorized_cocoeval.evaluate(
        gt,
        results,
        iou_type,
        kpt_oks_sigmas=sigmas,
        max_dets=max_dets,
        img_ids=img_ids,
        columns=columns,
    )


def _run_hotcoco(gt, results, iou_type, sigmas, max_dets, img_ids):
    import hotcoco

    with _Quiet(), warnings.catch_warnings():
        # hotcoco warns when the sigmas are not bit-equal to its COCO literals: lazydet passes
        # pycocotools' (0.26 / 10.0, not 0.026) or the dataset's own, both on purpose.
        warnings.filterwarnings("ignore", message="hotcoco: kpt_oks_sigmas differ")
        coco_gt = hotcoco.COCO(dict(gt))
        coco_dt = coco_gt.loadRes(results)
        evaluator = hotcoco.COCOeval(coco_gt, coco_dt, iou_type)
        params = evaluator.params
        if sigmas is not None:
            # pycocotools' own sigma values (array / 10.0), so OKS is bit-identical to it.
            params.kpt_oks_sigmas = sigmas.tolist()
        if max_dets is not None:
            params.maxDets = list(max_dets)
        if img_ids is not None:
            params.imgIds = list(img_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _summary_lines(iou_type: str, stats: Sequence[float], max_dets: Sequence[int]) -> list[str]:
    """The summary as the official COCO API example prints it (``val2014_fake_eval_res.txt``),
    character for character: ``" Average Precision (AP) @[ IoU=0.50:0.95 | ..."``."""
    lines = []
    for (is_ap, iou, area, m), value in zip(_SUMMARY_ROWS[iou_type], stats):
        title = "Average Precision" if is_ap else "Average Recall"
        kind = "(AP)" if is_ap else "(AR)"
        iou_text = "0.50:0.95" if iou is None else f"{iou:0.2f}"
        lines.append(
            f" {title:<18}{kind} @[ IoU={iou_text:<9} | area={area:>6s} | "
            f"maxDets={int(m) if isinstance(m, str) else max_dets[m]:>3d} ] = {value:0.3f}"
        )
    return lines


def _per_category_table(per_category_ap: Mapping[str, float], columns: int = 3) -> list[str]:
    if not per_category_ap:
        return []
    cells = [
        (name, "nan" if math.isnan(ap) else f"{100 * ap:.3f}")
        for name, ap in per_category_ap.items()
    ]
    name_w = max(8, *(len(n) for n, _ in cells))
    header = " | ".join([f"{'category':<{name_w}} | {'AP':>7}"] * min(columns, len(cells)))
    rows = [header, "-" * len(header)]
    for start in range(0, len(cells), columns):
        row = cells[start : start + columns]
        rows.append(" | ".join(f"{n:<{name_w}} | {a:>7}" for n, a in row))
    return rows


def evaluate_coco(
    gt_json: str | os.PathLike | Mapping,
    results_json: str | os.PathLike | Sequence[Mapping],
    iou_type: str,
    *,
    engine: str = "auto",
    kpt_oks_sigmas: Sequence[float] | None = None,
    max_dets: Sequence[int] | None = None,
    img_ids: Sequence[Any] | None = None,
    write_results: str | os.PathLike | None = None,
    verbose: bool = True,
) -> COCOEvalResult:
    """Score COCO results against COCO ground truth; ``coco_evaluate`` with the whole result.

    Args:
        gt_json: a COCO annotation file, or its dict (``images``, ``annotations``, ``categories``).
        results_json: a COCO results file, or its list of dicts ``{image_id, category_id, score,
            bbox: [x, y, w, h] absolute pixels | segmentation: RLE or polygons | keypoints:
            [x0, y0, v0, ...] COCO pixel indices}``.
        iou_type: "bbox", "segm" or "keypoints".
        engine: "auto" (= "vectorized", lazydet's NumPy engine) or "pycocotools": the same
            numbers.
        kpt_oks_sigmas: per-keypoint OKS sigmas (default: COCO's 17 person sigmas).
        max_dets: pycocotools' ``params.maxDets`` (default ``[1, 10, 100]``; keypoints ``[20]``).
        img_ids: score only these images (pycocotools' ``params.imgIds``; default: every image
            of the ground truth, so an image without detections counts its instances as missed).
        write_results: write ``results_json`` here as a COCO results json.
        verbose: print the summary table and the per-category AP table.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type={iou_type!r} is not one of {IOU_TYPES}.")
    engine = resolve_engine(engine, iou_type)
    gt = load_ground_truth(gt_json)
    results = load_results(results_json)
    with _gc_paused():
        columns = check_results(gt, results, iou_type)
    sigmas = _oks_sigmas(gt, kpt_oks_sigmas) if iou_type == "keypoints" else None
    if max_dets is not None:
        max_dets = [int(m) for m in max_dets]
        if len(max_dets) != (1 if iou_type == "keypoints" else 3) or min(max_dets) < 1:
            raise ValueError(
                f"max_dets={max_dets} must hold {1 if iou_type == 'keypoints' else 3} positive "
                "numbers (pycocotools' summary reads maxDets by position)."
            )
    if img_ids is not None:
        img_ids = sorted(set(img_ids))
        unknown = set(img_ids) - {img["id"] for img in gt["images"]}
        if unknown or not img_ids:
            raise ValueError(
                f"img_ids holds {sorted(unknown, key=str)[:5] if unknown else 'nothing'}"
                f"{' which the ground truth does not have' if unknown else ''}; give ids of "
                "ground-truth images, or None for all."
            )
    if not gt["annotations"]:
        # pycocotools crashes (IndexError) on a ground truth with no annotation at all.
        raise ValueError(
            "The ground truth has no annotations: AP is undefined. Check the annotation file."
        )
    if write_results is not None:
        write_results_json(results, write_results)

    if engine == "vectorized":
        with _gc_paused():
            out = _run_vectorized(gt, results, iou_type, sigmas, max_dets, img_ids, columns)
        stats, precision, cat_ids, used_max_dets = (
            out.stats,
            out.precision,
            out.cat_ids,
            out.max_dets,
        )
    else:
        default_max_dets = [20] if iou_type == "keypoints" else [1, 10, 100]
        if engine == "hotcoco" and max_dets is not None and max_dets != default_max_dets:
            # pycocotools' summary hard-codes maxDets=100 (keypoints: 20) in some rows and
            # reports -1 there when params.maxDets lacks it; hotcoco's summary does not. Same
            # precision arrays, different stats: the reference computes this case.
            engine = "pycocotools"
        run = _run_hotcoco if engine == "hotcoco" else _run_pycocotools
        evaluator = run(gt, results, iou_type, sigmas, max_dets, img_ids)
        stats, precision = evaluator.stats, evaluator.eval["precision"]
        cat_ids, used_max_dets = evaluator.params.catIds, evaluator.params.maxDets
    stats = [float(s) for s in stats]
    precision = np.asarray(precision, dtype=np.float64)
    per_category_ap = _per_category_ap(gt, list(cat_ids), precision)
    used_max_dets = list(used_max_dets)
    lines = [f"COCO {iou_type} evaluation ({engine}):"]
    lines += _summary_lines(iou_type, stats, used_max_dets)
    lines += ["", f"Per-category {iou_type} AP (%):", *_per_category_table(per_category_ap)]
    summary = "\n".join(lines)
    if verbose:
        print(summary)
    return COCOEvalResult(
        iou_type=iou_type,
        stats=stats,
        per_category_ap=per_category_ap,
        precision=precision,
        engine=engine,
        summary=summary,
    )


def coco_evaluate(
    gt_json: str | os.PathLike | Mapping,
    results_json: str | os.PathLike | Sequence[Mapping],
    iou_type: str,
    **kwargs: Any,
) -> list[float]:
    """The 12 summary numbers of ``pycocotools.cocoeval.COCOeval`` (10 for keypoints).

    Same arguments as ``evaluate_coco`` (``engine=``, ``kpt_oks_sigmas=``, ``max_dets=``,
    ``write_results=PATH``, ``verbose=``); prints the usual table and a per-category AP table.
    """
    return evaluate_coco(gt_json, results_json, iou_type, **kwargs).stats


def _per_category_ap(gt: Mapping, cat_ids: list[int], precision: np.ndarray) -> dict[str, float]:
    """AP@[.5:.95], all areas, largest maxDets, per category (as Detectron2 reports it)."""
    names = {cat["id"]: str(cat.get("name", cat["id"])) for cat in gt["categories"]}
    # A name that two categories share would keep only one of them: those get their id added.
    shared = {name for name, count in Counter(names.values()).items() if count > 1}
    out = {}
    for k, cat_id in enumerate(cat_ids):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        name = names.get(cat_id, str(cat_id))
        name = f"{name} (id {cat_id})" if name in shared else name
        out[name] = float(values.mean()) if values.size else float("nan")
    return out


def write_results_json(results: Sequence[Mapping], path: str | os.PathLike) -> Path:
    """Write detections as a COCO results json (RLE ``counts`` bytes become text), atomically."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"write_results={str(path)!r} is a directory; give a .json file path.")
    path.parent.mkdir(parents=True, exist_ok=True)

    def default(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.decode("ascii")
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"cannot write {type(value).__name__} to a COCO results json")

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(list(results), f, default=default)
    os.replace(tmp, path)  # a reader never sees half a file; two writers leave one whole file
    return path
