"""COCO AP for any COCO results file: the numbers of ``pycocotools.cocoeval.COCOeval``, faster.

``coco_evaluate(gt_json, results_json, iou_type)`` returns a ``COCOEvalResult`` (``.stats``: the
12 summary numbers, 10 for keypoints), prints the usual table and a per-category AP table, and can
write the results it was given as a COCO results json.

Engines (``ENGINES``; which one ``"auto"`` runs: ``AUTO_ENGINE``). Three engines compute
pycocotools' numbers on every input the check lets through:

- ``"vectorized"`` (``lazydet.evaluation.vectorized_cocoeval``): pycocotools' algorithm over all
  images, categories, area ranges and thresholds at once in NumPy, with the same floating-point
  operations (bit-equal; auto's choice for bbox and keypoints, and wherever hotcoco is not
  exact);
- ``"hotcoco"``: a Rust port of the COCO API (auto's choice for segm when installed);
- ``"pycocotools"``: the reference itself (a required dependency; never chosen by auto).

``tests/evaluation/test_coco_eval.py`` holds each to pycocotools to 1e-12 on the official COCO API
example, on 77 edge cases and on generated data; ``tests/hostile/test_evaluation_inputs.py`` holds
each probe input and a property test over random valid and invalid inputs (equal, or refused).

Before any engine runs, ``lazydet.evaluation.coco_input.check_input`` refuses what pycocotools
would crash on, hang on or score as nonsense (one ``ValueError`` naming the entry and the fix),
renumbers string image ids, and says which engines are not exact on the input (``auto`` avoids
them, an explicit request for one is refused). An empty results list scores zero where the
ground truth has instances (pycocotools crashes in ``loadRes``).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import json
import math
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lazydet.evaluation import vectorized_cocoeval
from lazydet.evaluation.coco_input import (
    RereadResults,
    check_input,
    load_ground_truth,
    load_results,
    num_keypoints,
    orjson,
)
from lazydet.evaluation.results_reader import ResultColumns, read_result_columns

IOU_TYPES = ("bbox", "segm", "keypoints")
ENGINES = ("auto", "vectorized", "hotcoco", "pycocotools")
# What engine="auto" runs, per IoU type: the fastest as users call it, from files and from
# memory (scripts/bench_eval.py, docs/evaluation.md; keypoints: the NumPy engine works on the
# arrays the check read, where hotcoco parses the file again). hotcoco gives way to "vectorized"
# when it is not installed or not exact on the input (CheckedInput.inexact, a non-default
# max_dets).
AUTO_ENGINE = {"bbox": "vectorized", "segm": "hotcoco", "keypoints": "vectorized"}

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


def resolve_engine(engine: str, iou_type: str = "bbox", inexact: Mapping[str, str] = {}) -> str:
    """The engine to run: ``"auto"`` -> the fastest installed for ``iou_type`` (``AUTO_ENGINE``)
    among those exact on this input (``inexact``: engine -> why not); an engine named
    explicitly is checked, and refused where it would not give pycocotools' numbers."""
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not one of {ENGINES}.")
    if engine == "auto":
        preferred = AUTO_ENGINE[iou_type]
        usable = preferred != "hotcoco" or (hotcoco_available() and "hotcoco" not in inexact)
        return preferred if usable else "vectorized"
    if engine == "hotcoco" and not hotcoco_available():
        raise ValueError(
            "engine='hotcoco' but the package is not installed: pip install 'hotcoco>=1.3', "
            "or use engine='vectorized' (same numbers)."
        )
    if engine in inexact:
        raise ValueError(
            f"engine={engine!r} would not give pycocotools' numbers here: {inexact[engine]}. "
            "Use engine='vectorized' or 'pycocotools' (or 'auto', which picks an exact one)."
        )
    return engine


def _oks_sigmas(gt: Mapping, kpt_oks_sigmas: Sequence[float] | None) -> np.ndarray:
    k = num_keypoints(gt)
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
        coco_gt = hotcoco.COCO(gt if isinstance(gt, str) else dict(gt))
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


def coco_evaluate(
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
    """Score COCO results against COCO ground truth with pycocotools' numbers.

    The input is checked first (``lazydet.evaluation.coco_input``): what an engine would not
    score as pycocotools does is refused with one ``ValueError`` naming the entry, string image
    ids are renumbered so every engine agrees. ``result.stats`` are the 12 summary numbers of
    ``pycocotools.cocoeval.COCOeval`` (10 for keypoints); ``result.engine`` says which engine ran.

    Args:
        gt_json: a COCO annotation file, or its dict (``images``, ``annotations``, ``categories``).
        results_json: a COCO results file, or its list of dicts ``{image_id, category_id, score,
            bbox: [x, y, w, h] absolute pixels | segmentation: RLE or polygons | keypoints:
            [x0, y0, v0, ...] COCO pixel indices}``.
        iou_type: "bbox", "segm" or "keypoints".
        engine: one of ``ENGINES``, all giving pycocotools' numbers: "vectorized" (lazydet's
            NumPy engine), "hotcoco", "pycocotools", or "auto": per IoU type the fastest one
            installed (``AUTO_ENGINE``) among those exact on this input (hotcoco is not when a
            ground-truth id is 0 or repeated, or ``max_dets`` lacks 100 (keypoints: 20): then
            "vectorized"). An engine named explicitly that is not exact there is refused.
        kpt_oks_sigmas: per-keypoint OKS sigmas (default: COCO's 17 person sigmas).
        max_dets: pycocotools' ``params.maxDets`` (default ``[1, 10, 100]``; keypoints ``[20]``).
        img_ids: score only these images (pycocotools' ``params.imgIds``; default: every image
            of the ground truth, so an image without detections counts its instances as missed).
        write_results: write ``results_json`` here as a COCO results json.
        verbose: print the summary table and the per-category AP table.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type={iou_type!r} is not one of {IOU_TYPES}.")
    # No cyclic collection from parsing to the table: the parsed files are a million young
    # objects, and each collection in between would walk them all.
    with _gc_paused():
        return _coco_evaluate(
            gt_json, results_json, iou_type, engine=engine, kpt_oks_sigmas=kpt_oks_sigmas,
            max_dets=max_dets, img_ids=img_ids, write_results=write_results, verbose=verbose,
        )  # fmt: skip


def _coco_evaluate(
    gt_json, results_json, iou_type, *, engine, kpt_oks_sigmas, max_dets, img_ids, write_results,
    verbose,
) -> COCOEvalResult:  # fmt: skip
    gt = loaded_gt = load_ground_truth(gt_json)
    results = None
    if (
        isinstance(results_json, (str, os.PathLike))
        and engine != "pycocotools"
        and write_results is None
    ):
        # Straight into arrays, skipping the fields the IoU type does not read (None where the
        # file needs the general reader). pycocotools takes result dicts, and write_results
        # writes every field: those read the general way.
        results = read_result_columns(results_json, iou_type)
    if results is not None:
        try:
            checked = check_input(gt, results, iou_type, img_ids)
        except RereadResults:  # the general reader and check name the entry at fault
            results = None
    if results is None:
        results = load_results(results_json)
        checked = check_input(gt, results, iou_type, img_ids)
    loaded_results = results
    if write_results is not None:
        # What was given, as given (not the renumbered copy); only after the check passes.
        given = results
    gt, results, img_ids, columns = checked.gt, checked.results, checked.img_ids, checked.columns
    sigmas = _oks_sigmas(gt, kpt_oks_sigmas) if iou_type == "keypoints" else None
    inexact = dict(checked.inexact)
    if max_dets is not None:
        max_dets = [int(m) for m in max_dets]
        if len(max_dets) != (1 if iou_type == "keypoints" else 3) or min(max_dets) < 1:
            raise ValueError(
                f"max_dets={max_dets} must hold {1 if iou_type == 'keypoints' else 3} positive "
                "numbers (pycocotools' summary reads maxDets by position)."
            )
        if max_dets != ([20] if iou_type == "keypoints" else [1, 10, 100]):
            # pycocotools' summary hard-codes maxDets=100 (keypoints: 20) in some rows and
            # reports -1 there when params.maxDets lacks it; hotcoco's summary does not.
            inexact.setdefault("hotcoco", f"max_dets={max_dets} (hotcoco's summary differs)")
    engine = resolve_engine(engine, iou_type, inexact)
    if write_results is not None:
        write_results_json(given, write_results)

    if engine == "vectorized":
        out = _run_vectorized(gt, results, iou_type, sigmas, max_dets, img_ids, columns)
        stats, precision, cat_ids, used_max_dets = (
            out.stats,
            out.precision,
            out.cat_ids,
            out.max_dets,
        )
    else:
        if engine == "hotcoco":
            # Files the check passed unchanged go to hotcoco as paths: its Rust parser reads
            # them faster than it converts the parsed Python objects (same values: both parse
            # each number to the nearest float64).
            unchanged = checked.gt is loaded_gt and checked.results is loaded_results
            paths = [
                str(given) if unchanged and isinstance(given, (str, os.PathLike)) else parsed
                for given, parsed in ((gt_json, gt), (results_json, results))
            ]
            try:
                evaluator = _run_hotcoco(*paths, iou_type, sigmas, max_dets, img_ids)
            except Exception:  # should its file reader refuse what its dict reader takes
                if paths == [gt, results]:
                    raise
                if isinstance(results, ResultColumns):  # result dicts, every field
                    results = load_results(results_json)
                evaluator = _run_hotcoco(gt, results, iou_type, sigmas, max_dets, img_ids)
        else:
            evaluator = _run_pycocotools(gt, results, iou_type, sigmas, max_dets, img_ids)
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
    """Write detections as a COCO results json (RLE ``counts`` bytes become text), atomically.

    With orjson (a dependency; the standard library's json where it is missing): ~10x faster on
    100k masks. Floats are written as their shortest repr either way, so reading the file back
    gives the same numbers; a NaN or infinity (refused by the input check in the fields it
    scores) becomes ``null`` with orjson, ``NaN`` with json.
    """
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

    results = list(results)
    data = None
    if orjson is not None:
        # What orjson refuses (an int beyond 64 bits, a non-text key): json writes it or says why.
        with contextlib.suppress(orjson.JSONEncodeError):
            data = orjson.dumps(results, default=default, option=orjson.OPT_SERIALIZE_NUMPY)
    if data is None:
        data = json.dumps(results, default=default).encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a reader never sees half a file; two writers leave one whole file
    return path
