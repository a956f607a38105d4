"""COCO evaluation in vectorised NumPy: the numbers of ``pycocotools.cocoeval.COCOeval``.

pycocotools scores one (image, category, area range) at a time in Python loops. This engine does
each step for all of them at once, with the same floating-point operations in the same order, so
its numbers are the reference's (``tests/evaluation/test_coco_eval.py`` holds it to 1e-12 on the
official COCO API example, 77 edge cases and generated data; in practice they are bit-identical):

1. **Overlaps** between every detection and every ground truth of the same image and category:
   bbox with the arithmetic of pycocotools' C ``bbIou``; segm with pycocotools' own C ``iou`` on
   RLEs, one call per image; keypoints with OKS, each sum taken in the order of NumPy's 1-D
   ``np.sum``.
2. **Greedy matching.** A detection can only match at overlap >= 0.5, so only detections with such
   a pair enter the matcher. Round k takes the k-th such detection of every (image, category) at
   once, for every area range and IoU threshold, and applies pycocotools' rule: the best unmatched
   non-ignored ground truth (the last one on ties), else the best ignored one; crowd regions
   stay matchable.
3. **Accumulation.** The interpolated precision at a recall threshold is the best precision at or
   after the detection that reaches it, and that best value is always at a true positive. So
   precision is computed at true positives only, from counts, and the envelope is a block
   maximum (``np.maximum.reduceat``) over them.

Input is a COCO dataset dict and a list of result dicts (``lazydet.evaluation.coco_eval`` reads
and checks files); detection areas follow ``COCO.loadRes``: from the box when the first result has
one, else from the mask, else from the keypoints' extent.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter, methodcaller
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from lazydet.evaluation.results_reader import ResultColumns

logger = logging.getLogger(__name__)

# pycocotools' COCOeval.Params, computed the way it computes them (the same float64 values).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = {
    "bbox": ([[0**2, 1e5**2], [0**2, 32**2], [32**2, 96**2], [96**2, 1e5**2]], [1, 10, 100]),
    "keypoints": ([[0**2, 1e5**2], [32**2, 96**2], [96**2, 1e5**2]], [20]),
}
AREA_RANGES["segm"] = AREA_RANGES["bbox"]
AREA_LABELS = {
    "bbox": ["all", "small", "medium", "large"],
    "segm": ["all", "small", "medium", "large"],
    "keypoints": ["all", "medium", "large"],
}
# pycocotools' matcher caps the IoU threshold just below 1 (an exact 1.0 IoU still matches).
_MAX_THRESHOLD = 1 - 1e-10
_EPS = np.spacing(1)  # pycocotools adds it to every precision denominator and OKS area


@dataclass
class VectorizedEval:
    """What ``evaluate`` computed, named as pycocotools names it.

    Attributes:
        stats: the 12 (keypoints: 10) summary numbers of ``COCOeval.stats``.
        precision: ``COCOeval.eval["precision"]``, ``[T, R, K, A, M]``; -1 where a category has no
            ground truth in that area range.
        recall: ``COCOeval.eval["recall"]``, ``[T, K, A, M]``.
        cat_ids: the evaluated category ids (K), ascending.
        max_dets: ``params.maxDets`` (M), ascending.
    """

    stats: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    cat_ids: list
    max_dets: list[int]


def evaluate(
    gt: Mapping,
    results: Sequence[Mapping],
    iou_type: str,
    *,
    kpt_oks_sigmas: np.ndarray | None = None,
    max_dets: Sequence[int] | None = None,
    img_ids: Sequence[Any] | None = None,
    columns: Mapping[str, Any] | None = None,
) -> VectorizedEval:
    """``COCOeval(gt, gt.loadRes(results), iou_type)``: evaluate, accumulate and summarize.

    Args:
        gt: a COCO dataset dict (``images``, ``annotations``, ``categories``).
        results: COCO result dicts (``image_id``, ``category_id``, ``score`` and ``bbox`` /
            ``segmentation`` / ``keypoints``); not modified.
        iou_type: "bbox", "segm" or "keypoints".
        kpt_oks_sigmas: per-keypoint OKS sigmas (keypoints only; required there).
        max_dets: ``params.maxDets`` (default ``[1, 10, 100]``, keypoints ``[20]``).
        img_ids: ``params.imgIds`` (default: every image of ``gt``).
        columns: fields of ``results`` already read, ``{"score": [each result's score], ...}``
            (the caller's input checks read them; not read twice); ``"float_rows"``:
            ``{"bbox": [N, 4], ...}`` float64 arrays of a numeric field of every result.
    """
    area_ranges, default_max_dets = AREA_RANGES[iou_type]
    max_dets = sorted(int(m) for m in (max_dets or default_max_dets))
    img_ids = list(np.unique([img["id"] for img in gt["images"]] if img_ids is None else img_ids))
    cat_ids = list(np.unique([cat["id"] for cat in gt["categories"]]))
    area_lo = np.array([lo for lo, _ in area_ranges], dtype=np.float64)
    area_hi = np.array([hi for _, hi in area_ranges], dtype=np.float64)

    truth = _GroundTruth(gt, img_ids, cat_ids, iou_type)
    columns = _Columns(results, columns)
    dets = _Detections(columns, img_ids, cat_ids, iou_type, max_dets[-1], truth.images)
    pair_dt, pair_gt = _pairs(dets.key, truth.key)
    if iou_type == "bbox":
        overlap = _box_iou(dets.boxes[pair_dt], truth.boxes[pair_gt], truth.crowd[pair_gt])
    elif iou_type == "segm":
        overlap = _mask_iou(dets, truth, pair_dt, pair_gt)
    else:
        overlap = _oks(dets, truth, pair_dt, pair_gt, np.asarray(kpt_oks_sigmas, np.float64))

    gt_ignored = (
        truth.ignore[:, None] | (truth.area[:, None] < area_lo) | (truth.area[:, None] > area_hi)
    )  # [G, A]
    matched, matched_ignored, candidates = _match(
        dets, truth, pair_dt, pair_gt, overlap, gt_ignored
    )
    precision, recall = _accumulate(
        dets, truth, gt_ignored, candidates, matched, matched_ignored, area_lo, area_hi,
        max_dets, len(cat_ids),
    )  # fmt: skip
    stats = summarize(iou_type, precision, recall, max_dets)
    return VectorizedEval(stats, precision, recall, cat_ids, max_dets)


def _positions(ids: list, sorted_ids: list) -> np.ndarray:
    """Index of each id in ``sorted_ids`` (ascending, unique), -1 where absent."""
    if all(isinstance(i, (int, np.integer)) for i in sorted_ids):
        values = np.asarray(ids)
        if values.dtype.kind in "iu" and values.ndim == 1:  # the common case, without a loop
            table = np.asarray(sorted_ids, dtype=np.int64)
            if len(table) and table[0] >= 0 and table[-1] < 16 * len(table) + 1024:
                # Small non-negative ids (COCO's): a direct lookup table.
                lookup = np.full(int(table[-1]) + 2, -1, dtype=np.int64)
                lookup[table] = np.arange(len(table))
                return lookup[np.clip(values, -1, len(lookup) - 1)]
            pos = np.searchsorted(table, values).clip(0, max(len(table) - 1, 0))
            found = table[pos] == values if len(table) else np.zeros(len(values), bool)
            return np.where(found, pos, -1)
    lookup = {key: n for n, key in enumerate(sorted_ids)}
    return np.fromiter((lookup.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))


class _GroundTruth:
    """The evaluated ground truth as arrays, ordered by (image, category, annotation order).

    ``key = image position * K + category position`` groups it as pycocotools' ``_gts`` does.
    """

    def __init__(self, gt: Mapping, img_ids: list, cat_ids: list, iou_type: str) -> None:
        anns = gt["annotations"]
        img = _positions(list(map(itemgetter("image_id"), anns)), img_ids)
        cat = _positions(list(map(itemgetter("category_id"), anns)), cat_ids)
        keep = np.flatnonzero((img >= 0) & (cat >= 0))
        keep = keep[np.argsort(img[keep], kind="stable")]  # pycocotools walks images in order
        ids = list(map(itemgetter("id"), anns))
        by_id = dict(zip(ids, range(len(ids))))
        if len(by_id) < len(anns):
            # pycocotools looks annotations up by id, so a repeated id stands for the last
            # annotation with it (wherever that is). Same numbers here; say it, though.
            logger.warning(
                "%d ground-truth annotations repeat an earlier annotation's id; like pycocotools, "
                "each repeated id is evaluated as the last annotation carrying it. Give every "
                "annotation a unique id.",
                len(anns) - len(by_id),
            )
            keep = np.array([by_id[ids[i]] for i in keep], dtype=np.int64)
            img, cat = img[keep], cat[keep]
            keep_img, keep_cat = img, cat
        else:
            keep_img, keep_cat = img[keep], cat[keep]
        inside = (keep_img >= 0) & (keep_cat >= 0)
        keep, keep_img = keep[inside], keep_img[inside]
        key = keep_img * len(cat_ids) + keep_cat[inside]
        sort = np.argsort(key, kind="stable")
        anns = [anns[i] for i in keep[sort]]
        self.key = key[sort]
        self.anns = anns
        self.images = {image["id"]: image for image in gt["images"]}
        self.image_pos = keep_img[sort]
        # COCOeval._prepare: ignore = iscrowd (an "ignore" field is overwritten), keypoints also
        # ignore instances without a labelled keypoint.
        count = len(anns)
        self.crowd = np.fromiter(
            map(bool, map(methodcaller("get", "iscrowd", 0), anns)), bool, count
        )
        self.ignore = self.crowd.copy()
        if iou_type == "keypoints":
            self.ignore |= np.array([a["num_keypoints"] == 0 for a in anns], dtype=bool)
        # A match is recorded as the ground truth's id; pycocotools treats id 0 as "unmatched".
        ids = map(itemgetter("id"), anns)
        self.id_nonzero = np.fromiter(map(operator.ne, ids, itertools.repeat(0)), bool, count)
        try:  # operator.pos refuses text, which fromiter would parse
            self.area = np.fromiter(map(operator.pos, map(itemgetter("area"), anns)), float, count)
            if iou_type in ("bbox", "keypoints"):
                boxes = list(map(itemgetter("bbox"), anns))
                if set(map(len, boxes)) != {4} and boxes:
                    raise ValueError
                flat = map(operator.pos, itertools.chain.from_iterable(boxes))
                self.boxes = np.fromiter(flat, np.float64, 4 * count).reshape(-1, 4)
        except (TypeError, ValueError):  # one at a time; the check below names the bad one
            self.area = np.array([_number_or_nan(a.get("area")) for a in anns], dtype=np.float64)
            self.boxes = np.array(
                [[_number_or_nan(v) for v in _four(a.get("bbox"))] for a in anns], np.float64
            ).reshape(-1, 4)
        # NaN compares false everywhere: pycocotools would match it arbitrarily. Refuse it.
        finite = np.isfinite(self.area)
        if iou_type in ("bbox", "keypoints"):
            finite &= np.isfinite(self.boxes).all(axis=1)
        for n in np.flatnonzero(~finite)[:1]:
            raise ValueError(
                f"Ground-truth annotation id {anns[n]['id']!r} has area {anns[n]['area']!r} and "
                f"bbox {anns[n].get('bbox')!r}; an area and a bbox of 4 finite numbers are "
                "needed. Fix the annotation file."
            )


def _number_or_nan(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def _four(box: Any) -> list:
    return list(box) if isinstance(box, (list, tuple)) and len(box) == 4 else [math.nan] * 4


def _score_rank(score: np.ndarray) -> np.ndarray:
    """Dense rank of each score, highest first; equal scores share a rank."""
    order = np.argsort(-score)  # any order among equal scores: they get one rank
    ordered = score[order]
    rank = np.empty(len(score), dtype=np.int64)
    rank[order] = np.cumsum(np.r_[False, ordered[1:] != ordered[:-1]])
    return rank


def _stable_order(key: np.ndarray, score_rank: np.ndarray, fallback) -> np.ndarray:
    """Stable sort by (key, score rank): one integer sort (a third of ``np.lexsort``'s time);
    ``fallback`` (a lazy lexsort) where the combined key would not fit in 63 bits."""
    if not len(key):
        return np.zeros(0, dtype=np.int64)
    ranks = int(score_rank.max()) + 1
    if (int(key.max()) + 1) * ranks >= 2**62:
        return fallback()
    return np.argsort(key * ranks + score_rank, kind="stable")


class _Columns:
    """One field of every result as a list, read once (``map(itemgetter)`` runs in C)."""

    def __init__(self, results: Sequence[Mapping], known: Mapping[str, Any] | None) -> None:
        self.results = results
        self._lists = dict(known or {})
        # ``{field: [N, width] float64}`` of every result, already read and checked finite.
        self._rows: dict[str, np.ndarray] = self._lists.pop("float_rows", None) or {}

    def __getitem__(self, key: str) -> list:
        if key not in self._lists and isinstance(self.results, ResultColumns):
            column = getattr(self.results, key, None)  # the masks, as RLE dicts
            if isinstance(column, list):
                self._lists[key] = column
        if key not in self._lists:
            try:
                self._lists[key] = list(map(itemgetter(key), self.results))
            except KeyError:
                n = next(i for i, det in enumerate(self.results) if key not in det)
                raise ValueError(
                    f"Detection {n} has no {key!r} (it has {sorted(self.results[n])}); COCO's "
                    f"loadRes reads {key!r} from every result when the first one has it."
                ) from None
        return self._lists[key]

    def floats(self, key: str, rows: np.ndarray | None, width: int) -> np.ndarray:
        """``[len(rows), width]`` float64 from the lists of numbers in field ``key``."""
        known = self._rows.get(key)
        if known is not None and known.shape == (len(self.results), width):
            return known if rows is None else known[rows]
        column = self[key]
        if rows is not None and len(rows) > 0.9 * len(column):  # cheaper: read all, then pick
            return self.floats(key, None, width)[rows]
        if rows is not None and len(rows) > 1 and (np.diff(rows) < 0).any():
            # Read in input order (the lists lie in memory in that order: 1.4x faster).
            order = np.argsort(rows, kind="stable")
            out = np.empty((len(rows), width))
            out[order] = self.floats(key, rows[order], width)
            return out
        values = column if rows is None else [column[i] for i in rows.tolist()]
        out = None
        try:
            if set(map(len, values)) <= {width}:  # then a flat read is safe, and twice as fast
                # operator.pos passes numbers through and raises on text, which fromiter
                # would otherwise parse ("12" -> 12.0) where pycocotools fails.
                flat = map(operator.pos, itertools.chain.from_iterable(values))
                out = np.fromiter(flat, np.float64, count=width * len(values)).reshape(-1, width)
        except (TypeError, ValueError):
            pass
        bad = (
            np.flatnonzero(~np.isfinite(out).all(axis=1))
            if out is not None
            else (
                n
                for n, value in enumerate(values)
                if np.shape(value) != (width,)
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
            )
        )
        for n in bad:
            index = n if rows is None else int(rows[n])
            raise ValueError(
                f"Detection {index} has {key} {values[n]!r}; it must be a list of {width} "
                "finite numbers. Fix or drop that detection."
            )
        return out if out is not None else np.array(values, dtype=np.float64).reshape(-1, width)


class _Detections:
    """The evaluated detections as arrays, each (image, category) sorted by score and cut to
    ``max_det`` as in ``COCOeval.computeIoU`` / ``evaluateImg``.

    ``rank`` is the position in its (image, category) by descending score (ties: input order).
    """

    def __init__(self, columns: _Columns, img_ids, cat_ids, iou_type, max_det, images) -> None:
        img = _positions(columns["image_id"], img_ids)
        cat = _positions(columns["category_id"], cat_ids)
        score = np.asarray(columns["score"], dtype=np.float64)
        keep = np.flatnonzero((img >= 0) & (cat >= 0))
        key = img[keep] * len(cat_ids) + cat[keep]
        score_rank = _score_rank(score[keep])
        # Stable: equal scores keep the input order.
        order = _stable_order(key, score_rank, lambda: np.lexsort((-score[keep], key)))
        key = key[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else key
        rank = np.arange(len(key)) - np.repeat(starts, np.diff(np.r_[starts, len(key)]))
        cut = rank < max_det
        self.index = keep[order][cut]  # into ``results``
        self.key, self.rank = key[cut], rank[cut]
        self.score = score[self.index]
        self.score_rank = score_rank[order][cut]
        self.cat_pos = self.key % max(len(cat_ids), 1)
        self.image_pos = self.key // max(len(cat_ids), 1)
        self.columns = columns
        self.images = images
        results = columns.results
        if iou_type == "keypoints" and len(results):
            # Read once, for the OKS and (without boxes or masks) the area. ``[N, 3k]``,
            # (x, y, v) triples in image pixels.
            self.keypoints = columns.floats("keypoints", self.index, len(results[0]["keypoints"]))
        # COCO.loadRes: the area of the box when the first result has a box, else of the mask,
        # else of the keypoints' extent.
        if not len(results):
            self.area = np.zeros(0)
        elif "bbox" in results[0] and results[0]["bbox"] != []:
            boxes = columns.floats("bbox", self.index, 4)
            self.area = boxes[:, 2] * boxes[:, 3]
            self.boxes = boxes
        elif "segmentation" in results[0]:
            # One RLE at a time: pycocotools' area() reads a list of dicts as polygons.
            self.area = np.array([mask_utils.area(rle) for rle in self.rles(None)], np.float64)
        else:
            points = (
                self.keypoints
                if iou_type == "keypoints"
                else columns.floats("keypoints", self.index, len(results[0]["keypoints"]))
            )
            x, y = points[:, 0::3], points[:, 1::3]
            self.area = (x.max(1) - x.min(1)) * (y.max(1) - y.min(1))
        if iou_type == "bbox" and not hasattr(self, "boxes"):
            self.boxes = columns.floats("bbox", self.index, 4)

    def rles(self, rows: np.ndarray | None) -> list[dict]:
        """COCO RLEs of the detections at ``rows`` (all: None), as ``COCO.annToRLE`` makes them."""
        index = self.index if rows is None else self.index[rows]
        results = self.columns.results
        return [_to_rle(results[i], self.images) for i in index.tolist()]

    def segmentations(self, rows: np.ndarray) -> list:
        """The detections' ``segmentation`` fields as given (RLEs from a detector, usually)."""
        column = self.columns["segmentation"]
        return [column[i] for i in self.index[rows].tolist()]


def _to_rle(ann: Mapping, images: Mapping) -> dict:
    """``COCO.annToRLE``: polygons and uncompressed RLE become compressed RLE."""
    segm = ann["segmentation"]
    if isinstance(segm, dict) and not isinstance(segm.get("counts"), list):
        return segm  # already compressed: a detector's output, the common case
    image = images[ann["image_id"]]
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, image["height"], image["width"]))
    return mask_utils.frPyObjects(segm, image["height"], image["width"])


def _image_rles(anns: list[Mapping], images: Mapping) -> list[dict]:
    """``_to_rle`` for the annotations of one image, the single polygons in one C call."""
    # pycocotools reads a 4-number "polygon" as a box, deciding by a list's first entry: only
    # longer polygons share a call.
    single = [
        n
        for n, a in enumerate(anns)
        if isinstance(segm := a["segmentation"], list) and len(segm) == 1 and len(segm[0]) > 4
    ]
    out = [None] * len(anns)
    if single:
        image = images[anns[single[0]]["image_id"]]
        polygons = [anns[n]["segmentation"][0] for n in single]
        # A one-polygon mask is that polygon's RLE (merging one RLE copies it).
        for n, rle in zip(
            single, mask_utils.frPyObjects(polygons, image["height"], image["width"])
        ):
            out[n] = rle
    return [rle if rle is not None else _to_rle(a, images) for rle, a in zip(out, anns)]


def _pairs(dt_key: np.ndarray, gt_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, ground truth) of the same image and category, detection-major."""
    lo = np.searchsorted(gt_key, dt_key, side="left")
    count = np.searchsorted(gt_key, dt_key, side="right") - lo
    pair_dt = np.repeat(np.arange(len(dt_key)), count)
    offset = np.arange(len(pair_dt)) - np.repeat(np.cumsum(count) - count, count)
    return pair_dt, np.repeat(lo, count) + offset


def _box_iou(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """pycocotools' ``bbIou`` per pair, ``[x, y, w, h]`` boxes: the same operations in the same
    order; a crowd region's union is the detection's area."""
    w = np.fmin(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) - np.fmax(dt[:, 0], gt[:, 0])
    h = np.fmin(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) - np.fmax(dt[:, 1], gt[:, 1])
    dt_area = dt[:, 2] * dt[:, 3]
    inter = w * h
    union = np.where(crowd, dt_area, dt_area + gt[:, 2] * gt[:, 3] - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((w <= 0) | (h <= 0), 0.0, inter / union)


def _mask_iou(dets: _Detections, truth: _GroundTruth, pair_dt, pair_gt) -> np.ndarray:
    """pycocotools' RLE IoU per pair, one C call per image: that image's detections with a pair
    against all its ground truths (pairs are image-major, ground truths image-sorted)."""
    out = np.empty(len(pair_dt))
    if not len(pair_dt):
        return out
    used = np.unique(pair_dt)
    image = dets.image_pos[used]
    images = np.unique(image)
    dt_bounds = np.searchsorted(image, images), np.searchsorted(image, images, side="right")
    gt_bounds = (
        np.searchsorted(truth.image_pos, images),
        np.searchsorted(truth.image_pos, images, side="right"),
    )
    pair_bounds = (
        np.searchsorted(pair_dt, used[dt_bounds[0]]),
        np.r_[np.searchsorted(pair_dt, used[dt_bounds[0][1:]]), len(pair_dt)],
    )
    dt_local = np.searchsorted(used, pair_dt)
    # Detector output is compressed RLE, which pycocotools' iou() takes as it is; anything else
    # (polygons, uncompressed RLE) makes it raise, and that image's masks are converted first.
    given = dets.segmentations(used)
    crowd = truth.crowd.astype(np.uint8)
    for d0, d1, g0, g1, p0, p1 in zip(*dt_bounds, *gt_bounds, *pair_bounds):
        gt_rles = _image_rles(truth.anns[g0:g1], truth.images)
        iscrowd = crowd[g0:g1].tolist()
        try:
            table = mask_utils.iou(given[d0:d1], gt_rles, iscrowd)
        except Exception:  # pycocotools raises bare Exceptions for input it cannot read
            table = mask_utils.iou(dets.rles(used[d0:d1]), gt_rles, iscrowd)
        table = np.asarray(table).reshape(d1 - d0, g1 - g0)
        out[p0:p1] = table[dt_local[p0:p1] - d0, pair_gt[p0:p1] - g0]
    return out


_OKS_BLOCK = 2048  # pairs per block: [2048, 17] float64 temporaries, ~280 KB each


def _oks(dets: _Detections, truth: _GroundTruth, pair_dt, pair_gt, sigmas) -> np.ndarray:
    """pycocotools' ``computeOks`` per pair. Each OKS is a mean over the ground truth's labelled
    keypoints (all when none is labelled); the sums run over contiguous rows of equal length so
    NumPy sums each in the order its 1-D ``np.sum`` uses."""
    k = len(sigmas)
    if not len(pair_dt):
        return np.zeros(0)
    # x and y as contiguous [N, k] / [G, k] tables: gathering whole rows is several times
    # faster than gathering strided columns of the pairs.
    det_x = np.ascontiguousarray(dets.keypoints[:, 0::3])
    det_y = np.ascontiguousarray(dets.keypoints[:, 1::3])
    gt_points = np.array([a["keypoints"] for a in truth.anns], dtype=np.float64).reshape(-1, 3 * k)
    gt_x, gt_y = np.ascontiguousarray(gt_points[:, 0::3]), np.ascontiguousarray(gt_points[:, 1::3])
    visible = gt_points[:, 2::3] > 0  # [G, k]
    labelled = visible.sum(1)
    outside = labelled[pair_gt] == 0
    # Unlabelled ground truth: the distance to a box twice its size (few pairs, done first).
    out_rows = np.flatnonzero(outside)
    box = truth.boxes[pair_gt[out_rows]]
    x0, x1 = box[:, :1] - box[:, 2:3], box[:, :1] + box[:, 2:3] * 2
    y0, y1 = box[:, 1:2] - box[:, 3:4], box[:, 1:2] + box[:, 3:4] * 2
    xd, yd = det_x[pair_dt[out_rows]], det_y[pair_dt[out_rows]]
    out_dx = np.maximum(0, x0 - xd) + np.maximum(0, xd - x1)
    out_dy = np.maximum(0, y0 - yd) + np.maximum(0, yd - y1)
    variances = (sigmas * 2) ** 2
    scale = truth.area[pair_gt] + _EPS
    # exp(-(dx**2 + dy**2) / variances / scale / 2), pycocotools' operations in its order, in
    # blocks of pairs that stay in the CPU cache (one pass over [P, k] temporaries is 3x slower).
    similarity = np.empty((len(pair_dt), k))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for lo in range(0, len(pair_dt), _OKS_BLOCK):
            hi = min(lo + _OKS_BLOCK, len(pair_dt))
            dx = det_x[pair_dt[lo:hi]]
            dx -= gt_x[pair_gt[lo:hi]]
            dy = det_y[pair_dt[lo:hi]]
            dy -= gt_y[pair_gt[lo:hi]]
            a, b = np.searchsorted(out_rows, (lo, hi))
            dx[out_rows[a:b] - lo], dy[out_rows[a:b] - lo] = out_dx[a:b], out_dy[a:b]
            e = np.multiply(dx, dx, out=dx)
            e += np.multiply(dy, dy, out=dy)
            e /= variances
            e /= scale[lo:hi, None]
            e /= 2
            np.exp(np.negative(e, out=e), out=similarity[lo:hi])
    out = np.empty(len(pair_dt))
    count = np.where(outside, k, labelled[pair_gt])
    # Labelled keypoints in keypoint order: row p's terms, gathered into count[p] columns.
    labelled_first = np.argsort(~visible, axis=1, kind="stable")  # [G, k]
    for n in np.unique(count).tolist():
        rows = np.flatnonzero(count == n)
        if n == k:  # every keypoint counts: the row as it is
            terms = similarity[rows]
        else:
            terms = similarity[rows[:, None], labelled_first[pair_gt[rows], :n]]
        out[rows] = terms.sum(axis=1) / n
    return out


def _match(dets, truth, pair_dt, pair_gt, overlap, gt_ignored):
    """pycocotools' greedy matching for all (image, category, area range, IoU threshold).

    Returns ``(matched, matched_ignored, candidates)``: ``candidates`` are the detections with an
    overlap >= 0.5 (no other can match), ``matched[c, a, t]`` whether candidate ``c`` matched a
    ground truth with a nonzero id (pycocotools' ``dtm > 0``) and ``matched_ignored[c, a, t]``
    whether what it matched is ignored in area range ``a``.
    """
    num_areas, num_thr = gt_ignored.shape[1], len(IOU_THRESHOLDS)
    thresholds = np.minimum(IOU_THRESHOLDS, _MAX_THRESHOLD)
    candidates = np.unique(pair_dt[overlap >= thresholds[0]])
    matched = np.zeros((len(candidates), num_areas, num_thr), dtype=bool)
    matched_ignored = np.zeros_like(matched)
    if not len(candidates):
        return matched, matched_ignored, candidates
    # Per candidate: its group's ground truths are its pairs, in annotation order ("slots").
    first_pair = np.searchsorted(pair_dt, candidates, side="left")
    slots = np.searchsorted(pair_dt, candidates, side="right") - first_pair
    group_key = dets.key[candidates]
    groups, group_of, per_group = np.unique(group_key, return_inverse=True, return_counts=True)
    group_slots = np.zeros(len(groups), dtype=np.int64)
    group_slots[group_of] = slots
    group_first_gt = np.zeros(len(groups), dtype=np.int64)
    group_first_gt[group_of] = pair_gt[first_pair]
    # Candidates arrive sorted by (group, score): their turn within the group is the round.
    turn = np.arange(len(candidates)) - (np.cumsum(per_group) - per_group)[group_of]

    # One ground truth (most groups): no choice to make. A crowd region matches every candidate
    # over the threshold; any other the first one (by score), after which it is taken.
    single = group_slots[group_of] == 1
    if single.any():
        rows = np.flatnonzero(single)
        gt_row = pair_gt[first_pair[rows]]
        over = overlap[first_pair[rows], None] >= thresholds  # [n, T]
        # The first candidate over each threshold, per group (rows are in group, turn order):
        # the one where the count of candidates over it within the group reaches 1.
        group = group_of[rows]
        starts = np.r_[True, group[1:] != group[:-1]]
        count = np.cumsum(over, axis=0)
        before = np.vstack([np.zeros((1, num_thr), np.int64), count])[np.flatnonzero(starts)]
        first = over & (count - before[np.cumsum(starts) - 1] == 1)
        hit = over & (truth.crowd[gt_row, None] | first)
        matched[rows] = (hit & truth.id_nonzero[gt_row, None])[:, None, :]
        matched_ignored[rows] = hit[:, None, :] & gt_ignored[gt_row][:, :, None]

    # Other groups share padded buckets by number of ground truths (width: a power of 2).
    width = 1 << np.ceil(np.log2(np.maximum(group_slots, 1))).astype(np.int64)
    width[group_slots == 1] = 0  # done above
    for size in np.unique(width[width > 0]):
        in_bucket = np.flatnonzero(width == size)
        # Most rounds first: the groups still playing in round r are a prefix.
        in_bucket = in_bucket[np.argsort(-per_group[in_bucket], kind="stable")]
        local = np.full(len(groups), -1)
        local[in_bucket] = np.arange(len(in_bucket))
        gt_index = group_first_gt[in_bucket, None] + np.arange(size)  # [B, S]
        real = np.arange(size) < group_slots[in_bucket, None]
        gt_index = np.where(real, gt_index, 0)
        ignored = gt_ignored[gt_index].transpose(0, 2, 1)[:, :, None, :]  # [B, A, 1, S]
        crowd = (truth.crowd[gt_index] & real)[:, None, None, :]  # [B, 1, 1, S]
        id_nonzero = truth.id_nonzero[gt_index]
        taken = np.zeros((len(in_bucket), num_areas, num_thr, size), dtype=bool)
        members = np.flatnonzero(width[group_of] == size)
        members = members[np.lexsort((local[group_of[members]], turn[members]))]
        rounds = np.searchsorted(turn[members], np.arange(per_group[in_bucket].max() + 1))
        for r in range(len(rounds) - 1):
            playing = members[rounds[r] : rounds[r + 1]]  # one candidate per group, groups 0..n-1
            n = len(playing)
            row = np.full((n, size), -np.inf)
            slot = np.arange(size) < slots[playing, None]
            pairs = first_pair[playing, None] + np.arange(size)
            row[slot] = overlap[pairs[slot]]
            score = row[:, None, None, :]  # [n, 1, 1, S]
            free = (score >= thresholds[:, None]) & (~taken[:n] | crowd[:n])  # [n, A, T, S]
            if size == 1:  # most groups: one ground truth, nothing to choose
                has_kept = free[..., 0] & ~ignored[:n, ..., 0]
                has_ignored = free[..., 0] & ignored[:n, ..., 0]
                choice = np.zeros(has_kept.shape, dtype=np.int64)
            else:
                best_kept = _last_argmax(np.where(free & ~ignored[:n], score, -np.inf))
                best_ignored = _last_argmax(np.where(free & ignored[:n], score, -np.inf))
                has_kept, has_ignored = best_kept >= 0, best_ignored >= 0
                choice = np.where(has_kept, best_kept, best_ignored)
            hit = has_kept | has_ignored
            g, a, t = np.nonzero(hit)
            taken[g, a, t, choice[g, a, t]] = True
            c = playing
            matched[c] = hit & id_nonzero[np.arange(n)[:, None, None], np.maximum(choice, 0)]
            matched_ignored[c] = hit & ~has_kept
    return matched, matched_ignored, candidates


def _last_argmax(values: np.ndarray) -> np.ndarray:
    """Index of the last maximum along the last axis (pycocotools replaces its pick on ties),
    -1 where every value is -inf."""
    size = values.shape[-1]
    index = size - 1 - np.argmax(values[..., ::-1], axis=-1)
    return np.where(np.take_along_axis(values, index[..., None], -1)[..., 0] > -np.inf, index, -1)


def _accumulate(
    dets, truth, gt_ignored, candidates, matched, matched_ignored, area_lo, area_hi, max_dets,
    num_cats,
):  # fmt: skip
    """``COCOeval.accumulate``: precision ``[T, R, K, A, M]`` and recall ``[T, K, A, M]``."""
    num_thr, num_rec = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    num_areas = len(area_lo)
    precision = -np.ones((num_thr, num_rec, num_cats, num_areas, len(max_dets)))
    recall = -np.ones((num_thr, num_cats, num_areas, len(max_dets)))
    # Ground truths that count, per (category, area range).
    gt_cat = truth.key % max(num_cats, 1)
    npig = np.zeros((num_cats, num_areas), dtype=np.int64)
    np.add.at(npig, gt_cat, ~gt_ignored)
    # Each category's detections by descending score; ties by image then rank (pycocotools
    # concatenates images in id order, each sorted by score, then sorts stably).
    order = _stable_order(
        dets.cat_pos, dets.score_rank, lambda: np.lexsort((-dets.score, dets.cat_pos))
    )
    cat_sorted = dets.cat_pos[order]
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    cat_start = np.searchsorted(cat_sorted, np.arange(num_cats + 1))
    is_candidate = np.zeros(len(order), dtype=bool)
    is_candidate[position[candidates]] = True
    cand_order = np.argsort(position[candidates])
    cand_pos = position[candidates][cand_order]  # candidate positions, ascending
    cand_cat = cat_sorted[cand_pos]
    area_sorted = dets.area[order]
    rank_sorted = dets.rank[order]
    outside = (area_sorted[:, None] < area_lo) | (area_sorted[:, None] > area_hi)  # [N, A]
    cand_cat_start = np.searchsorted(cand_cat, np.arange(num_cats))
    included = [rank_sorted < max_det for max_det in max_dets]  # per maxDets, [N]
    nd = [np.bincount(cat_sorted[inc], minlength=num_cats) for inc in included]
    for a in range(num_areas):
        # pycocotools: an unmatched detection outside the area range is ignored. [T, C] rows.
        matched_a = np.ascontiguousarray(matched[cand_order, a].T)
        ignored_a = np.ascontiguousarray(matched_ignored[cand_order, a].T)
        ignored_a |= ~matched_a & outside[cand_pos, a]
        plain_a = ~outside[:, a] & ~is_candidate
        for m in range(len(max_dets)):
            # Non-candidates never match: each included one inside the area range is a false
            # positive at every threshold. Count them up to every candidate's position.
            plain = np.cumsum(included[m] & plain_a)
            plain_before_cat = np.r_[0, plain][cat_start[:-1]]
            plain_at = plain[cand_pos] - plain_before_cat[cand_cat]
            counted = ~ignored_a & included[m][cand_pos]  # true and false positives, [T, C]
            counted_cum = np.cumsum(counted, axis=1, dtype=np.int64)
            # Counted before each category's first candidate, [T, K].
            counted_before = np.hstack([np.zeros((num_thr, 1), np.int64), counted_cum])[
                :, cand_cat_start
            ]
            _fill(
                precision[:, :, :, a, m], recall[:, :, a, m], counted & matched_a, counted_cum,
                counted_before, plain_at, cand_cat, npig[:, a], nd[m],
            )  # fmt: skip
    return precision, recall


def _fill(precision, recall, tp, counted_cum, counted_before, plain_at, cand_cat, npig, nd):
    """pycocotools' per (category, threshold) precision-recall, from the true positives.

    precision ``[T, R, K]`` and recall ``[T, K]`` are written in place for categories with
    ground truth. ``tp`` and ``counted_cum`` are ``[T, C]`` over the candidates in ranking
    order: whether each is a true positive, and the true and false positive candidates up to
    it (``counted_before``, ``[T, K]``: those before the category; ``plain_at``, ``[C]``: the
    other false positives up to it). At the c-th true positive precision is c / (fp + c + eps),
    as pycocotools computes it; recall threshold r is reached at the first true positive with
    c / npig >= r.
    """
    num_thr, num_rec, num_cats = precision.shape
    has_gt = npig > 0
    # c_r: the fewest true positives whose recall (c / npig, in float64) reaches threshold r.
    guess = np.floor(RECALL_THRESHOLDS[None, :] * npig[:, None]).astype(np.int64) - 1
    need = np.maximum(guess, 0)
    safe_npig = np.maximum(npig, 1)[:, None]
    for _ in range(3):  # the float guess is at most one or two below the exact count
        short = need / safe_npig < RECALL_THRESHOLDS[None, :]
        need = need + short
    # True positives, threshold-major then category then rank: [t, k] segments, in order.
    t_idx, c_idx = np.nonzero(tp)
    cat = cand_cat[c_idx]
    segment = t_idx * num_cats + cat
    seg_start = np.searchsorted(segment, np.arange(num_thr * num_cats + 1))
    count = np.arange(1, len(segment) + 1) - seg_start[segment]
    fp = counted_cum[t_idx, c_idx] - counted_before[t_idx, cat] + plain_at[c_idx] - count
    count = count.astype(np.float64)
    value = count / (fp.astype(np.float64) + count + _EPS)
    n_tp = np.diff(seg_start).reshape(num_thr, num_cats)
    recall[:, has_gt] = np.where(nd[has_gt] > 0, n_tp[:, has_gt] / npig[has_gt], 0)
    # Recall thresholds reached: positions need-1 (need 0: from the first) among each
    # segment's true positives.
    reached = need[None, :, :] <= n_tp[:, :, None]  # [T, K, R]
    reached &= has_gt[None, :, None] & (n_tp[:, :, None] > 0)
    t_r, k_r, r_r = np.nonzero(reached)
    table = np.full((num_thr, num_cats, num_rec), -np.inf)
    if len(t_r):
        start = seg_start[t_r * num_cats + k_r] + np.maximum(need[k_r, r_r] - 1, 0)
        # Block maxima between consecutive reached positions (blocks end at the segment's end,
        # where the next segment's first block starts), then the maximum over later blocks.
        table[t_r, k_r, r_r] = np.maximum.reduceat(value, start)
    envelope = np.maximum.accumulate(table[:, :, ::-1], axis=2)[:, :, ::-1]
    result = np.where(reached, envelope, 0.0).transpose(0, 2, 1)  # unreached: 0, [T, R, K]
    precision[:, :, has_gt] = result[:, :, has_gt]


def summarize(
    iou_type: str, precision: np.ndarray, recall: np.ndarray, max_dets: Sequence[int]
) -> np.ndarray:
    """``COCOeval.summarize``'s numbers (without printing): means over the entries > -1."""
    labels = AREA_LABELS[iou_type]

    def mean(ap: bool, iou: float | None, area: str, max_det: int) -> float:
        a = [i for i, label in enumerate(labels) if label == area]
        m = [i for i, value in enumerate(max_dets) if value == max_det]
        s = precision if ap else recall
        if iou is not None:
            s = s[np.where(iou == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, a, m] if ap else s[:, :, a, m]
        return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

    if iou_type == "keypoints":
        rows = [(1, None, "all"), (1, 0.5, "all"), (1, 0.75, "all"), (1, None, "medium"),
                (1, None, "large"), (0, None, "all"), (0, 0.5, "all"), (0, 0.75, "all"),
                (0, None, "medium"), (0, None, "large")]  # fmt: skip
        return np.array([mean(bool(ap), iou, area, 20) for ap, iou, area in rows])
    m0, m1, m2 = ([*list(max_dets), None, None, None])[:3]
    rows = [(1, None, "all", 100), (1, 0.5, "all", m2), (1, 0.75, "all", m2),
            (1, None, "small", m2), (1, None, "medium", m2), (1, None, "large", m2),
            (0, None, "all", m0), (0, None, "all", m1), (0, None, "all", m2),
            (0, None, "small", m2), (0, None, "medium", m2), (0, None, "large", m2)]  # fmt: skip
    return np.array([mean(bool(ap), iou, area, md) for ap, iou, area, md in rows])
