"""The one input check of ``coco_evaluate``, made before any engine runs.

Every engine ("vectorized", "hotcoco", "pycocotools") sees only input on which it has been shown
to give pycocotools' numbers (``tests/hostile/test_evaluation_inputs.py`` holds each case, and a
property test random inputs). Input is either

- refused with one ``ValueError`` naming the entry (index and id) and the fix: what pycocotools
  would crash on, hang on, or score as nonsense. The geometry rules are the data loader's
  (``lazydet.data.rle``, ``lazydet.data.annotation_checks``): a mask the loader refuses is not
  scored either;
- normalised where pycocotools defines the answer and an engine does not: string image ids are
  renumbered 0..N-1 in their sorted order (pycocotools' image order), so every engine agrees;
- or accepted with the engines that are exact on it (``CheckedInput.inexact``): hotcoco differs
  from pycocotools when a ground-truth id is 0 or repeated (pycocotools records a match as the
  id, so id 0 reads as "unmatched", and looks annotations up by id), and on a ``max_dets``
  without 100 (keypoints: 20), where pycocotools' summary hard-codes 100 and reports -1.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import math
import operator
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

try:  # a core dependency; the standard library's json stands in where it is missing
    import orjson
except ImportError:  # pragma: no cover - exercised by tests that hide it
    orjson = None

from lazydet.data.annotation_checks import check_keypoints, check_polygons
from lazydet.data.rle import check_compressed_rles, check_rle
from lazydet.evaluation.results_reader import ResultColumns
from lazydet.evaluation.rle_check import compressed_rles_cover

__all__ = [
    "CheckedInput",
    "RereadResults",
    "check_input",
    "load_ground_truth",
    "load_results",
    "parse_json",
    "read_json",
]


def parse_json(data: bytes) -> Any:
    """JSON bytes -> Python objects: ``orjson`` when installed (4-6x the standard library's speed
    on a results file), else ``json``. Cyclic garbage collection is paused meanwhile: a results
    list of 500k dicts triggers collections that walk every object built so far (half the time
    of ``json.loads``, and more of orjson's).

    Whatever orjson refuses is handed to ``json``, so both accept and refuse the same files with
    the standard library's messages (``NaN`` literals, which ``json.dump`` writes, parse; a byte
    order mark is refused). orjson reads an integer beyond 64 bits as a float (json: an int);
    no COCO id or count comes near that.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        if orjson is not None:
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass  # the standard library says what is wrong, or accepts what orjson does not
        return json.loads(data.decode("utf-8"))
    finally:
        if enabled:
            gc.enable()


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a json file; one ``ValueError`` naming the file for anything but valid UTF-8 JSON."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory; give the path of a .json file.")
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist.")
    data = path.read_bytes()
    try:
        return parse_json(data)
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{what} {str(path)!r} is not UTF-8 (byte {e.start}: {data[e.start : e.start + 1]!r});"
            " JSON files are UTF-8: re-save it as UTF-8."
        ) from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(
            f"{what} {str(path)!r} is not valid JSON ({e}); is the file truncated?"
        ) from None


def load_ground_truth(gt_json: str | os.PathLike | Mapping) -> dict:
    """The ground truth as a COCO dataset dict (read from a path, or checked when given a dict)."""
    gt = read_json(gt_json, "Ground truth") if isinstance(gt_json, (str, os.PathLike)) else gt_json
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
        results = read_json(results_json, "Results file")
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


@dataclass
class CheckedInput:
    """What ``check_input`` passes on to the engines.

    Attributes:
        gt: the ground truth (a renumbered copy when image ids were strings).
        results: the detections (copies with renumbered image ids likewise).
        columns: fields read from every detection (``image_id``, ``category_id`` as int64
            arrays, ``score`` float64, the geometry field as a list) for the NumPy engine;
            ``"float_rows"``: ``{"bbox": [N, 4], "keypoints": [N, 3k]}`` float64, the boxes and
            keypoints of every detection as the check read them (where it read them all).
        img_ids: ``img_ids`` renumbered like the images (None: all).
        inexact: engine -> why it would not give pycocotools' numbers on this input.
    """

    gt: dict
    results: list
    columns: dict[str, Any]
    img_ids: list | None
    inexact: dict[str, str] = field(default_factory=dict)


_REQUIRED = {
    "bbox": ("image_id", "category_id", "score", "bbox"),
    "segm": ("image_id", "category_id", "score", "segmentation"),
    "keypoints": ("image_id", "category_id", "score", "keypoints"),
}


def num_keypoints(gt: Mapping) -> int | None:
    """Keypoints per instance: from the first annotation that has them, else the categories."""
    for ann in gt["annotations"]:
        if isinstance(ann, Mapping) and isinstance(ann.get("keypoints"), list):
            return len(ann["keypoints"]) // 3
    for cat in gt["categories"]:
        if isinstance(cat, Mapping) and cat.get("keypoints"):
            return len(cat["keypoints"])
    return None


def _is_id(value: Any) -> bool:
    """A json id: an int or a non-empty string (``True`` would silently equal id 1)."""
    return (type(value) is int) or (isinstance(value, str) and value != "")


def _is_number(value: Any) -> bool:
    """A finite int or float (NumPy's float64 included; no bools, no text)."""
    return isinstance(value, (int, float)) and type(value) is not bool and math.isfinite(value)


def _box_problem(box: Any) -> str | None:
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(map(_is_number, box)):
        return f"bbox {box!r} is not 4 finite numbers [x, y, w, h]"
    if box[2] < 0 or box[3] < 0:
        return f"bbox {box!r} has a negative width or height"
    return None


def _segmentation_problem(segm: Any, image: Mapping) -> str | None:
    try:
        if isinstance(segm, dict):
            check_rle(segm, image["height"], image["width"])
        elif isinstance(segm, list) and segm:
            check_polygons(segm)
        else:
            return (
                f"segmentation {segm!r} is neither a polygon list nor an RLE; segm evaluation "
                "needs a mask for every instance (drop it or evaluate bbox)"
            )
    except ValueError as e:
        return f"{e} (segmentation {str(segm)[:80]})"
    return None


def _check_images(gt: Mapping, iou_type: str) -> dict:
    images = {}
    kinds = set()
    for index, image in enumerate(gt["images"]):
        image_id = image.get("id") if isinstance(image, Mapping) else None
        problem = None
        if not isinstance(image, Mapping):
            problem = f"is a {type(image).__name__}, not an object"
        elif not _is_id(image_id):
            problem = f"has id {image_id!r}; an image id is an int or a non-empty string"
        elif image_id in images:
            problem = f"repeats image id {image_id!r}"
        elif iou_type == "segm" and not all(
            type(image.get(k)) is int and image.get(k) > 0 for k in ("height", "width")
        ):
            problem = (
                f"(id {image_id!r}) has height {image.get('height')!r} and width "
                f"{image.get('width')!r}; masks need positive integer sizes"
            )
        if problem:
            raise ValueError(f"Ground-truth image {index} {problem}. Fix the annotation file.")
        images[image_id] = image
        kinds.add(type(image_id))
    if len(kinds) > 1:
        raise ValueError(
            "Ground-truth image ids mix integers and strings (pycocotools cannot sort them); use "
            "one kind for every image."
        )
    return images


def _annotation_problem(ann, images, cat_ids, iou_type, k, geometry_only=False) -> str | None:
    """What is wrong with one ground-truth annotation (None: nothing), in the order the checks
    are made; ``geometry_only``: the id, image, category, iscrowd, area and bbox are known good."""
    problem = None
    if geometry_only:
        pass
    elif not _is_id(ann.get("id")):
        problem = "needs an 'id' (an int or a non-empty string)"
    elif ann.get("image_id") not in images or not _is_id(ann.get("image_id")):
        problem = f"is on image_id {ann.get('image_id')!r}, which the ground truth lacks"
    elif type(ann.get("category_id")) is not int or ann["category_id"] not in cat_ids:
        problem = f"has category_id {ann.get('category_id')!r}, not one of the categories"
    elif ann.get("iscrowd", 0) not in (0, 1) or type(ann.get("iscrowd", 0)) not in (int, bool):
        problem = f"has iscrowd {ann.get('iscrowd')!r} (0 or 1)"
    elif "iscrowd" not in ann:
        problem = "has no 'iscrowd' (pycocotools needs it: 0, or 1 for a crowd region)"
    elif not _is_number(ann.get("area")):
        problem = f"has area {ann.get('area')!r}; a finite number is needed"
    elif iou_type in ("bbox", "keypoints"):
        problem = _box_problem(ann.get("bbox"))
    if problem is None and iou_type == "segm":
        problem = _segmentation_problem(ann.get("segmentation"), images[ann["image_id"]])
    if problem is None and iou_type == "keypoints":
        if type(ann.get("num_keypoints")) is not int or "keypoints" not in ann:
            problem = (
                "has no 'keypoints'/'num_keypoints'; keypoint evaluation needs a ground "
                "truth whose annotations all carry keypoints (a person_keypoints file: only "
                "the keypoint categories)"
            )
        else:
            try:
                check_keypoints(ann["keypoints"], k)
            except ValueError as e:
                problem = str(e)
    return problem


def _types(values) -> set:
    return set(map(type, values))


def _common_fields_valid(anns: list, images: Mapping, cat_ids: set, iou_type: str) -> bool:
    """True when every annotation passes ``_annotation_problem``'s checks of id, image,
    category, iscrowd, area and bbox: one C-level pass per field instead of a Python loop per
    annotation (35k annotations: ~15 ms against ~300 ms). Never more lenient than
    ``_annotation_problem``; False (or an exception) sends the caller to it for the message."""
    ids = list(map(itemgetter("id"), anns))
    id_types = _types(ids)
    if not id_types <= {int, str} or (str in id_types and "" in set(ids)):
        return False
    image_ids = list(map(itemgetter("image_id"), anns))
    if not _types(image_ids) <= {int, str} or not set(image_ids) <= images.keys():
        return False
    category_ids = list(map(itemgetter("category_id"), anns))
    if _types(category_ids) != {int} or not set(category_ids) <= cat_ids:
        return False
    crowd = list(map(itemgetter("iscrowd"), anns))
    if not _types(crowd) <= {int, bool} or not set(crowd) <= {0, 1}:
        return False
    areas = list(map(itemgetter("area"), anns))
    if not _types(areas) <= {int, float}:
        return False
    if not np.isfinite(np.fromiter(areas, np.float64, count=len(areas))).all():
        return False
    if iou_type in ("bbox", "keypoints"):
        boxes = list(map(itemgetter("bbox"), anns))
        if not _types(boxes) <= {list, tuple} or set(map(len, boxes)) != {4}:
            return False
        values = list(itertools.chain.from_iterable(boxes))
        if not _types(values) <= {int, float}:
            return False
        flat = np.fromiter(values, np.float64, count=len(values)).reshape(-1, 4)
        if not np.isfinite(flat).all() or (flat[:, 2:] < 0).any():
            return False
    return True


def _keypoints_valid(anns: list, k: int | None) -> bool:
    """True when every annotation's ``num_keypoints`` is an int and its ``keypoints`` pass
    ``check_keypoints`` (3k finite numbers, finite in float32 too), in one pass per field."""
    if k is None or _types(map(itemgetter("num_keypoints"), anns)) != {int}:
        return False
    rows = list(map(itemgetter("keypoints"), anns))
    if not _types(rows) <= {list, tuple} or set(map(len, rows)) != {3 * k}:
        return False
    values = list(itertools.chain.from_iterable(rows))
    if not _types(values) <= {int, float}:
        return False
    with np.errstate(over="ignore"):  # check_keypoints reads them as float32
        return bool(np.isfinite(np.fromiter(values, np.float32, count=len(values))).all())


def _not_polygon_lists(anns: list) -> list[int] | None:
    """The indices of the annotations whose segmentation is not a list of polygons, when every
    list of polygons passes ``check_polygons`` (each polygon an even number >= 6 of finite
    numbers): a few C-level passes over all coordinates instead of one call per annotation.
    None when some list of polygons does not (the caller then checks every annotation)."""
    segms = list(map(itemgetter("segmentation"), anns))
    kinds = list(map(type, segms))
    others = [n for n, kind in enumerate(kinds) if kind is not list]
    lists = [segm for segm, kind in zip(segms, kinds) if kind is list]
    if not all(lists):  # an empty list is no mask
        return None
    polygons = list(itertools.chain.from_iterable(lists))
    if not _types(polygons) <= {list, tuple}:
        return None
    lengths = np.fromiter(map(len, polygons), np.int64, count=len(polygons))
    if len(lengths) and ((lengths < 6).any() or (lengths % 2).any()):
        return None
    values = list(itertools.chain.from_iterable(polygons))
    if not _types(values) <= {int, float}:
        return None
    flat = np.fromiter(values, np.float64, count=len(values))
    if len(lengths):
        # check_polygons sums each polygon (NaN, inf, or a sum past float64 are refused).
        with np.errstate(over="ignore", invalid="ignore"):
            sums = np.add.reduceat(flat, np.cumsum(lengths) - lengths)
        if not np.isfinite(sums).all():
            return None
    return others


def _check_annotations(gt: Mapping, images: Mapping, iou_type: str, k: int | None) -> dict:
    """Refuse a ground-truth annotation that an engine would read differently; returns the
    engines that are inexact on this ground truth."""
    cat_ids = set()
    for index, cat in enumerate(gt["categories"]):
        if not isinstance(cat, Mapping) or type(cat.get("id")) is not int or cat["id"] in cat_ids:
            raise ValueError(
                f"Ground-truth category {index} ({cat!r}) needs an integer id of its own."
            )
        cat_ids.add(cat["id"])
    anns = gt["annotations"]
    try:
        common_ok = _common_fields_valid(anns, images, cat_ids, iou_type)
        keypoints_ok = iou_type == "keypoints" and common_ok and _keypoints_valid(anns, k)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):  # missing, not a dict
        common_ok = keypoints_ok = False
    # Per annotation only what the passes above could not settle: masks (polygons, RLE) for
    # segm; everything, for the message, when a pass found a problem.
    per_annotation = (
        not common_ok or iou_type == "segm" or (iou_type == "keypoints" and not keypoints_ok)
    )
    rows: Any = range(len(anns)) if per_annotation else ()
    if common_ok and iou_type == "segm":
        others = None  # sound polygon lists in one pass; what remains are the RLEs (crowds)
        with contextlib.suppress(KeyError, TypeError, ValueError, OverflowError):
            others = _not_polygon_lists(anns)
        rows = rows if others is None else others
    for index in rows:
        ann = anns[index]
        if not isinstance(ann, Mapping):
            raise ValueError(
                f"Ground-truth annotation {index} is a {type(ann).__name__}, not an object."
            )
        problem = _annotation_problem(ann, images, cat_ids, iou_type, k, geometry_only=common_ok)
        if problem:
            raise ValueError(
                f"Ground-truth annotation {index} (id {ann.get('id')!r}, image_id "
                f"{ann.get('image_id')!r}) {problem}. Fix the annotation file."
            )
    ids = list(map(itemgetter("id"), anns))
    inexact = {}
    if 0 in set(ids):
        inexact["hotcoco"] = (
            "a ground-truth annotation has id 0, which pycocotools reads as 'unmatched' "
            "(hotcoco does not)"
        )
    if len(set(ids)) < len(ids):
        inexact["hotcoco"] = (
            "ground-truth annotation ids repeat; pycocotools evaluates a repeated id as the last "
            "annotation carrying it (hotcoco does not)"
        )
    return inexact


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


def _flat_rows(rows: list, width: int) -> np.ndarray | None:
    """``[len(rows), width]`` float64 of lists of numbers, None unless all are ``width`` numbers."""
    try:
        if set(map(len, rows)) <= {width}:
            # operator.pos refuses text, which fromiter alone would parse ("12" -> 12.0).
            flat = map(operator.pos, itertools.chain.from_iterable(rows))
            return np.fromiter(flat, np.float64, count=width * len(rows)).reshape(-1, width)
    except (TypeError, ValueError):
        pass
    return None


def _bad_detection(index: int, results: list, key: str, problem: str) -> ValueError:
    det = results[index]
    return ValueError(
        f"Detection {index} (image_id {det.get('image_id')!r}, category_id "
        f"{det.get('category_id')!r}): {problem}. Fix or drop that detection."
    )


def _detection_image_sizes(images: Mapping, image_ids: Sequence | np.ndarray) -> np.ndarray:
    """``[N, 2]`` int64 ``(height, width)`` of the image of each of ``image_ids`` (segm checked
    every image's height and width: ints). ``KeyError`` for an id ``images`` lacks."""
    position = {image_id: n for n, image_id in enumerate(images)}
    image_size = np.array(
        [(image["height"], image["width"]) for image in images.values()], dtype=np.int64
    ).reshape(-1, 2)
    ids = image_ids.tolist() if isinstance(image_ids, np.ndarray) else image_ids
    at = np.fromiter(map(position.__getitem__, ids), np.int64, count=len(ids))
    return image_size[at]


def _compressed_rles_sound(columns: Mapping, images: Mapping) -> bool:
    """True when every detection's mask is a compressed RLE (``counts`` text) of its image's
    size whose runs cover it exactly: what detectors write, checked in a few C-level passes
    and one batched decode. False: some mask needs the one-at-a-time check (polygons,
    uncompressed RLE, or a problem to describe)."""
    segms = columns["segmentation"]
    try:
        if _types(segms) != {dict}:
            return False
        counts = list(map(itemgetter("counts"), segms))
        count_types = _types(counts)
        if not count_types <= {str, bytes}:
            return False
        sizes = list(map(itemgetter("size"), segms))
        if _types(sizes) != {list} or set(map(len, sizes)) != {2}:
            return False
        flat = list(itertools.chain.from_iterable(sizes))
        if _types(flat) != {int}:
            return False
        given = np.fromiter(flat, np.int64, count=len(flat)).reshape(-1, 2)
        if not np.array_equal(given, _detection_image_sizes(images, columns["image_id"])):
            return False
        if count_types == {str}:  # a yes/no in a few passes; "no" is described below
            return compressed_rles_cover(counts, given)
        return check_compressed_rles(segms, given) is None
    except (KeyError, TypeError, ValueError, OverflowError):
        return False


def _check_detection_geometry(results, columns, iou_type, images, k) -> dict[str, np.ndarray]:
    """Refuse the first detection with a bad box, keypoints or mask; returns the boxes and
    keypoints it read, ``[N, 4]`` / ``[N, 3k]`` float64 in results order, for the engine."""
    arrays = {}
    if iou_type == "bbox" or (results and results[0].get("bbox") not in (None, [])):
        # A box is read whenever the first result has one (pycocotools' loadRes takes the area
        # from it); one pass for all, then the first bad one described.
        boxes = columns.get("bbox") or list(map(operator.methodcaller("get", "bbox"), results))
        flat = _flat_rows(boxes, 4)
        bad = (
            np.flatnonzero(~np.isfinite(flat).all(axis=1) | (flat[:, 2:] < 0).any(axis=1))
            if flat is not None
            else [i for i, box in enumerate(boxes) if _box_problem(box)]
        )
        for index in bad[:1]:
            raise _bad_detection(int(index), results, "bbox", _box_problem(boxes[index]))
        if flat is not None:
            arrays["bbox"] = flat
    if iou_type == "keypoints" and k is not None:
        keypoints = columns["keypoints"]
        flat = _flat_rows(keypoints, 3 * k)
        bad = (
            np.flatnonzero(~np.isfinite(flat).all(axis=1))
            if flat is not None
            else range(len(keypoints))
        )
        for index in bad:
            try:
                check_keypoints(keypoints[index], k)
            except ValueError as e:
                raise _bad_detection(int(index), results, "keypoints", str(e)) from None
        if flat is not None:
            arrays["keypoints"] = flat
    if iou_type == "segm" and _compressed_rles_sound(columns, images):
        return arrays
    if iou_type == "segm":  # one at a time, to find and describe the first bad mask
        segms = columns["segmentation"]
        compressed, sizes, where = [], [], []
        for index, segm in enumerate(segms):
            image = images[results[index]["image_id"]]
            if (
                segm.__class__ is dict
                and isinstance(segm.get("counts"), (str, bytes))
                and segm.get("size") == [image.get("height"), image.get("width")]
            ):
                compressed.append(segm)
                sizes.append((segm["size"][0], segm["size"][1]))
                where.append(index)
                continue
            problem = _segmentation_problem(segm, image)
            if problem:
                raise _bad_detection(index, results, "segmentation", problem)
        try:
            bad = check_compressed_rles(compressed, sizes)
        except ValueError:
            bad = next(
                n
                for n, index in enumerate(where)
                if _segmentation_problem(segms[index], images[results[index]["image_id"]])
            )
        if bad is not None:
            index = where[bad]
            problem = _segmentation_problem(segms[index], images[results[index]["image_id"]])
            raise _bad_detection(index, results, "segmentation", problem)
    return arrays


def check_results(results: Sequence[Mapping], iou_type: str, images: Mapping) -> dict[str, Any]:
    """Read and check every detection's fields; returns them as columns (see ``CheckedInput``)."""
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
    det_image_ids = columns["image_id"]
    gt_image_ids = list(images)
    if isinstance(det_image_ids, np.ndarray) and all(type(i) is int for i in gt_image_ids[:1]):
        outside = ~np.isin(det_image_ids, gt_image_ids)
        unknown = set(det_image_ids[outside].tolist()) if outside.any() else set()
    else:
        unknown = {i for i in det_image_ids if not _is_id(i) or i not in images}
    if unknown:
        index = next(
            i
            for i, det in enumerate(results)
            if not _is_id(det["image_id"]) or det["image_id"] in unknown
        )
        raise ValueError(
            f"Detection {index} is on image_id {results[index]['image_id']!r}, which the ground "
            f"truth does not have ({len(unknown)} unknown image id(s) in all: "
            f"{sorted(map(repr, unknown))[:5]}). Evaluate results against the split they were "
            "predicted on."
        )
    if scores is None:
        index = next(i for i, det in enumerate(results) if not _is_number(det["score"]))
        raise _bad_detection(
            index, results, "score", f"score {results[index]['score']!r} is not a number"
        )
    if not np.isfinite(scores).all():
        index = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise _bad_detection(
            index, results, "score", f"score {results[index]['score']!r} is not finite"
        )
    columns["score"] = scores
    return columns


class RereadResults(ValueError):
    """Columns read by ``results_reader.read_result_columns`` hold something the check refuses:
    read the file the general way (``load_results``) and check that, for the message naming the
    entry (the columns know no more than that the file is refused)."""


def _check_result_columns(
    results: ResultColumns, iou_type: str, images: Mapping, k: int | None
) -> dict[str, Any]:
    """``check_results`` and the geometry check on a file read straight into arrays: the same
    rules (the schema settled the fields' presence and types) in a few array passes. Raises
    ``RereadResults`` where the general check would refuse or renumber."""
    gt_image_ids = list(images)
    if gt_image_ids and type(gt_image_ids[0]) is not int:
        raise RereadResults("string image ids are renumbered on the general path")
    if not np.isin(results.image_id, gt_image_ids).all():
        raise RereadResults("a detection is on an image the ground truth lacks")
    if not np.isfinite(results.score).all():
        raise RereadResults("a score is not finite")
    rows = {}
    if results.bbox is not None:  # every detection has one (else the reader gave no columns)
        boxes = results.bbox
        if not np.isfinite(boxes).all() or (boxes[:, 2:] < 0).any():
            raise RereadResults("a box is not finite or has a negative size")
        rows["bbox"] = boxes
    elif iou_type == "bbox":
        raise RereadResults("no boxes")
    if iou_type == "keypoints":
        points = results.keypoints
        if k is None or points.shape[1] != 3 * k or not np.isfinite(points).all():
            raise RereadResults("keypoints of another count, or not finite")
        rows["keypoints"] = points
    if iou_type == "segm" and len(results):
        # Every mask the size of its image, its runs covering it exactly.
        if not np.array_equal(results.sizes, _detection_image_sizes(images, results.image_id)):
            raise RereadResults("a mask's size is not its image's")
        if not compressed_rles_cover(results.counts, results.sizes):
            raise RereadResults("a mask's runs do not cover its image")
    return {
        "image_id": results.image_id,
        "category_id": results.category_id,
        "score": results.score,
        "float_rows": rows,
    }


def _renumber_string_ids(gt: dict, results: list, img_ids):
    """String image ids -> 0..N-1 in sorted order (pycocotools sorts image ids), on copies."""
    order = {image_id: n for n, image_id in enumerate(sorted(img["id"] for img in gt["images"]))}
    gt = dict(gt)
    gt["images"] = [{**img, "id": order[img["id"]]} for img in gt["images"]]
    gt["annotations"] = [{**a, "image_id": order[a["image_id"]]} for a in gt["annotations"]]
    results = [{**det, "image_id": order[det["image_id"]]} for det in results]
    if img_ids is not None:
        img_ids = [order.get(i, i) for i in img_ids]
    return gt, results, img_ids


def check_input(
    gt: dict, results: list, iou_type: str, img_ids: Sequence[Any] | None = None
) -> CheckedInput:
    """Refuse, normalise or accept (see the module doc). Raises ``ValueError`` naming the entry."""
    if not gt["annotations"]:
        # pycocotools crashes (IndexError) on a ground truth with no annotation at all.
        raise ValueError(
            "The ground truth has no annotations: AP is undefined. Check the annotation file."
        )
    images = _check_images(gt, iou_type)
    k = num_keypoints(gt) if iou_type == "keypoints" else None
    inexact = _check_annotations(gt, images, iou_type, k)
    if img_ids is not None:
        img_ids = sorted(set(img_ids), key=repr)
        unknown = [i for i in img_ids if not _is_id(i) or i not in images]
        if unknown or not img_ids:
            raise ValueError(
                f"img_ids holds {unknown[:5] if unknown else 'nothing'}"
                f"{' which the ground truth does not have' if unknown else ''}; give ids of "
                "ground-truth images, or None for all."
            )
    if isinstance(results, ResultColumns):
        columns = _check_result_columns(results, iou_type, images, k)
        img_ids = None if img_ids is None else sorted(img_ids)
        return CheckedInput(
            gt=gt, results=results, columns=columns, img_ids=img_ids, inexact=inexact
        )
    columns = check_results(results, iou_type, images)
    if iou_type == "keypoints":
        lengths = set(map(len, columns["keypoints"]))
        for index, det in enumerate(results if k is not None and lengths - {3 * k} else ()):
            if len(det["keypoints"]) != 3 * k:
                raise _bad_detection(
                    index,
                    results,
                    "keypoints",
                    f"{len(det['keypoints'])} keypoint values; the ground truth has {k} "
                    f"keypoints per instance, so {3 * k} (x, y, v triples) are needed",
                )
    arrays = _check_detection_geometry(results, columns, iou_type, images, k)
    if images and isinstance(next(iter(images)), str):
        gt, results, img_ids = _renumber_string_ids(gt, results, img_ids)
        columns = check_results(results, iou_type, {img["id"]: img for img in gt["images"]})
    elif img_ids is not None:
        img_ids = sorted(img_ids)
    columns["float_rows"] = arrays
    return CheckedInput(gt=gt, results=results, columns=columns, img_ids=img_ids, inexact=inexact)
