"""Checks of one COCO annotation's geometry, shared by the data loader and the evaluator.

pycocotools trusts what it is given: an odd-length or NaN polygon is rasterised into garbage (or
hangs its C code), NaN keypoints move OKS arbitrarily. The loader (``lazydet.data.datasets.coco``)
and ``lazydet.evaluation.coco_evaluate`` refuse the same things with these functions; each raises
``ValueError`` saying what is wrong, and the caller adds the file and annotation id. RLE masks are
checked by ``lazydet.data.rle``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["check_keypoints", "check_polygons", "polygon_array"]


def polygon_array(values: Any) -> np.ndarray:
    """float64 array of a list of numbers; other lists keep their inferred dtype (text: a string
    array), for ``check_polygons`` to refuse, where ``dtype=float64`` would parse "12" as 12."""
    array = np.array(values)
    return array.astype(np.float64) if array.dtype.kind in "iu" else array


def check_polygons(segmentation: list) -> list[np.ndarray]:
    """The polygons of a COCO polygon segmentation as flat float64 arrays ``[2P]``.

    Each polygon (a list of numbers or an array from ``polygon_array``) must hold an even number
    (>= 6) of finite coordinates ``x0, y0, x1, y1, ...``. Raises ``ValueError`` otherwise.
    """
    polygons = []
    for polygon in segmentation:
        if not isinstance(polygon, np.ndarray):
            if not isinstance(polygon, (list, tuple)) or any(
                type(v) not in (int, float)
                for v in polygon  # no bools, no text
            ):
                raise ValueError("a polygon is not a flat list of numbers")
            polygon = polygon_array(polygon)
        if polygon.ndim != 1 or polygon.dtype.kind != "f":
            raise ValueError("a polygon is not a flat list of numbers")
        if polygon.size < 6 or polygon.size % 2:
            raise ValueError(
                f"a polygon has {polygon.size} coordinates (needs an even number >= 6)"
            )
        if not math.isfinite(polygon.sum()):  # one reduction: NaN/inf anywhere makes it non-finite
            raise ValueError("a polygon has a NaN or infinite coordinate")
        polygons.append(polygon)
    return polygons


def check_keypoints(keypoints: Any, num_keypoints: int) -> np.ndarray:
    """COCO keypoints ``[x0, y0, v0, ...]`` as a float32 ``[num_keypoints, 3]`` array.

    Raises ``ValueError`` unless they are ``3 * num_keypoints`` finite numbers.
    """
    if not isinstance(keypoints, (list, tuple, np.ndarray)) or len(keypoints) != 3 * num_keypoints:
        count = len(keypoints) if hasattr(keypoints, "__len__") else keypoints
        raise ValueError(
            f"keypoints has {count} values; the categories declare {num_keypoints} keypoints, so "
            f"3 x {num_keypoints} = {3 * num_keypoints} are expected"
        )
    if (
        any(not isinstance(v, (int, float)) or type(v) is bool for v in keypoints)
        if not isinstance(keypoints, np.ndarray)
        else keypoints.dtype.kind not in "iuf"
    ):
        raise ValueError("keypoints values must be numbers")
    kp = np.array(keypoints, dtype=np.float32).reshape(num_keypoints, 3)
    if not np.isfinite(kp).all():
        raise ValueError("keypoints has a NaN or infinite value")
    return kp
