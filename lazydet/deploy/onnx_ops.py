"""ONNX translations of lazydet's operators, for ``torch.onnx.export(..., dynamo=True,
custom_translation_table=custom_translation_table())``.

| operator | ONNX |
| --- | --- |
| ``lazydet::roi_align`` | ``RoiAlign`` (opset 16: ``coordinate_transformation_mode`` ``half_pixel`` when ``aligned``, else ``output_half_pixel``; ``mode=avg``; ``sampling_ratio`` <= 0 -> 0, adaptive) |
| ``lazydet::multilevel_roi_align`` | the FPN level of each box (``assign_boxes_to_levels``'s formula), one ``RoiAlign`` per level over all boxes, each box's own level kept with ``Where`` |
| ``lazydet::nms`` | ``NonMaxSuppression`` on one class, column 2 of its output (indices by decreasing score), the first ``max_keep`` |
| ``lazydet::batched_nms`` | the same after offsetting each class's boxes by ``class * (max coordinate + 1)`` (no two classes overlap) |

Differences from the eager operators, by construction: lazydet's ROIAlign zeroes rois with a
non-finite coordinate or a bad image index (the detectors never make them); the FPN level uses
``Log`` instead of the exponent bits (a box within an ulp of a level boundary may change level);
NMS breaks exact score ties by onnxruntime's order.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

__all__ = ["custom_translation_table"]


def custom_translation_table() -> dict[Callable, Callable]:
    import torch
    from onnxscript import opset18 as op

    import lazydet.ops  # noqa: F401  (the operators must exist to be keys)
    from lazydet.ops.roi_align import LEVEL_EPS

    def _split_rois(rois):
        batch = op.Cast(op.Squeeze(op.Slice(rois, [0], [1], [1]), [1]), to=7)  # int64
        boxes = op.Slice(rois, [1], [5], [1])
        return boxes, batch

    def _roi_align(features, boxes, batch, output_size, scale, sampling_ratio, aligned):
        return op.RoiAlign(
            features,
            boxes,
            batch,
            coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
            mode="avg",
            output_height=int(output_size[0]),
            output_width=int(output_size[1]),
            sampling_ratio=max(int(sampling_ratio), 0),
            spatial_scale=float(scale),
        )

    def roi_align(
        features, rois, output_size, spatial_scale, sampling_ratio, aligned, deterministic
    ):
        boxes, batch = _split_rois(rois)
        return _roi_align(
            features, boxes, batch, output_size, spatial_scale, sampling_ratio, aligned
        )

    def multilevel_roi_align(
        features,
        rois,
        output_size,
        scales,
        sampling_ratio,
        aligned,
        canonical_box_size,
        canonical_level,
        deterministic,
    ):
        boxes, batch = _split_rois(rois)
        min_level = round(-math.log2(scales[0]))
        max_level = min_level + len(scales) - 1
        x1 = op.Slice(boxes, [0], [1], [1])
        y1 = op.Slice(boxes, [1], [2], [1])
        x2 = op.Slice(boxes, [2], [3], [1])
        y2 = op.Slice(boxes, [3], [4], [1])
        zero = op.Constant(value_float=0.0)
        area = op.Mul(op.Max(op.Sub(x2, x1), zero), op.Max(op.Sub(y2, y1), zero))
        q = op.Add(
            op.Div(op.Sqrt(area), op.Constant(value_float=float(canonical_box_size))),
            op.Constant(value_float=LEVEL_EPS),
        )
        log2 = op.Div(op.Log(q), op.Constant(value_float=math.log(2.0)))
        level = op.Add(op.Floor(log2), op.Constant(value_float=float(canonical_level)))
        level = op.Clip(
            level,
            op.Constant(value_float=float(min_level)),
            op.Constant(value_float=float(max_level)),
        )
        level = op.Reshape(level, [-1, 1, 1, 1])
        pooled = None
        for index, (level_features, scale) in enumerate(zip(features, scales)):
            out = _roi_align(
                level_features, boxes, batch, output_size, scale, sampling_ratio, aligned
            )
            if pooled is None:
                pooled = out
            else:
                chosen = op.Equal(level, op.Constant(value_float=float(min_level + index)))
                pooled = op.Where(chosen, out, pooled)
        return pooled

    def _nms(boxes, scores, iou_threshold, max_keep):
        count = op.Shape(scores)
        selected = op.NonMaxSuppression(
            op.Unsqueeze(boxes, [0]),
            op.Unsqueeze(op.Unsqueeze(scores, [0]), [0]),
            count,
            op.Constant(value_floats=[float(iou_threshold)]),
            center_point_box=0,
        )
        keep = op.Squeeze(op.Slice(selected, [2], [3], [1]), [1])
        if max_keep is not None:
            keep = op.Slice(keep, [0], [int(max_keep)], [0])
        return keep

    def nms(boxes, scores, iou_threshold, max_keep=None):
        return _nms(boxes, scores, iou_threshold, max_keep)

    def batched_nms(boxes, scores, idxs, iou_threshold, max_keep=None):
        # One class at a time by moving each class's boxes out of every other's reach.
        span = op.Add(op.ReduceMax(boxes, keepdims=0), op.Constant(value_float=1.0))
        offsets = op.Mul(op.Cast(idxs, to=1), span)
        shifted = op.Add(boxes, op.Unsqueeze(offsets, [1]))
        return _nms(shifted, scores, iou_threshold, max_keep)

    # torch.export bounds each data-dependent size (NMS, nonzero) with comparisons against
    # constants past int64 (``u <= 2**63 * 8``); the exporter drops the assertions but still
    # writes the comparisons, and a constant past int64 cannot be written. Clamped into int64
    # they compare the same for every size a tensor can have.
    int64 = (-(2**63), 2**63 - 1)

    def _fits(value):
        if isinstance(value, int) and not isinstance(value, bool):
            return min(max(value, int64[0]), int64[1])
        return value

    def _compare(onnx_op):
        def translate(a, b):
            return onnx_op(_fits(a), _fits(b))

        return translate

    comparisons = {
        operator.le: _compare(op.LessOrEqual),
        operator.lt: _compare(op.Less),
        operator.ge: _compare(op.GreaterOrEqual),
        operator.gt: _compare(op.Greater),
    }
    return {
        **comparisons,
        torch.ops.lazydet.roi_align.default: roi_align,
        torch.ops.lazydet.multilevel_roi_align.default: multilevel_roi_align,
        torch.ops.lazydet.nms.default: nms,
        torch.ops.lazydet.batched_nms.default: batched_nms,
    }
