"""The operators detectors call for ROIAlign and NMS: the only place the rest of lazydet uses.

Each op runs lazydet's Triton kernel on CUDA tensors and torchvision's op elsewhere; force either
with ``LAZYDET_OPS_BACKEND=triton|torchvision`` or ``with lazydet.ops.use_backend(...)`` (see
:mod:`lazydet.ops.backend`). docs/ops.md describes the semantics both paths share.
"""

from .backend import current_backend, use_backend
from .nms import batched_nms, batched_nms_padded, nms, nms_padded
from .roi_align import assign_boxes_to_levels, multilevel_roi_align, roi_align

__all__ = [
    "assign_boxes_to_levels",
    "batched_nms",
    "batched_nms_padded",
    "current_backend",
    "multilevel_roi_align",
    "nms",
    "nms_padded",
    "roi_align",
    "use_backend",
]
