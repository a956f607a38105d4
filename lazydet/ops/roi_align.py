"""ROIAlign for one feature map and for an FPN pyramid, dispatched between Triton and torchvision.

Semantics are torchvision's ``roi_align`` (bilinear samples on a regular sub-grid per bin; samples
outside ``[-1, H] x [-1, W]`` count as 0; ``sampling_ratio <= 0`` means ``ceil(roi / output)``
samples per bin axis). Rois are ``(batch_index, x1, y1, x2, y2)`` in image pixels (XYXY).

What lazydet adds, on both backends:

- **Invalid rois pool zeros.** A roi with a NaN/inf value, or whose batch index does not truncate
  into ``[0, N)``, yields an all-zero output row and no gradient. (torchvision's CPU kernel can
  crash on such rois; the fallback replaces them by a degenerate in-range roi before calling it,
  then zeroes their rows.)
- **Empty rois** return ``(0, C, oh, ow)`` before any launch.
- **fp16/bf16 features** keep fp32 boxes and fp32 accumulation; the output has the feature dtype.
  The torchvision fallback gets there by upcasting the features to fp32 (torchvision wants boxes
  in the feature dtype, which would round fp16 box coordinates to 0.5-2 px).
- **Deterministic backward** (``deterministic=True``, default: follow
  ``torch.are_deterministic_algorithms_enabled()``): the Triton kernel accumulates in int64 fixed
  point (see ``lazydet.kernels.roi_align.fixed_point_scales``: no overflow by construction,
  truncation error ~2**-60 of the largest possible gradient). torchvision's CPU backward is
  serial, hence deterministic; its CUDA backward is not, so forcing the torchvision backend on CUDA
  with ``deterministic=True`` is refused.

Multi-level pooling assigns each box to an FPN level (``assign_boxes_to_levels``). The Triton path
pools every level in one launch, each program choosing its roi's level itself (no ``nonzero``, no
host sync); the torchvision path loops over levels like ``torchvision.ops.MultiScaleRoIAlign``.
float64 features always use torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torchvision.ops import roi_align as _torchvision_roi_align_op

from lazydet.ops.backend import use_triton

LEVEL_EPS = 1e-8
"""Added to ``sqrt(area) / canonical_box_size`` before the log (keeps log2 finite for empty boxes)."""

MAX_FUSED_LEVELS = 5
"""Most pyramid levels the fused Triton launch takes; more levels use the torchvision loop."""

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class _PoolSpec:
    output_size: tuple[int, int]
    scales: tuple[float, ...]
    sampling_ratio: int
    aligned: bool
    deterministic: bool
    level_mapping: Any  # lazydet.kernels.roi_align.FpnLevelMapping | None (import is lazy)


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _output_size(output_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(output_size, int):
        size = (output_size, output_size)
    else:
        size = tuple(output_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(
            f"output_size must be a positive int or a pair of positive ints, got {output_size!r}."
        )
    return size  # type: ignore[return-value]


def _check_features(features: Tensor, name: str) -> None:
    if not isinstance(features, Tensor) or features.dim() != 4:
        raise TypeError(f"{name} must be a Tensor[N, C, H, W]; got {_describe(features)}.")
    if not features.is_floating_point():
        raise TypeError(f"{name} must be floating point; got {features.dtype}.")
    if features.shape[-2] == 0 or features.shape[-1] == 0:
        raise ValueError(f"{name} has an empty spatial size {tuple(features.shape[-2:])}.")


def _check_rois(rois: Tensor, features: Tensor) -> None:
    if not isinstance(rois, Tensor) or rois.dim() != 2 or rois.shape[1] != 5:
        raise TypeError(
            f"rois must be a Tensor[K, 5] of (batch_index, x1, y1, x2, y2); got {_describe(rois)}."
        )
    if not rois.is_floating_point():
        raise TypeError(f"rois must be floating point; got {rois.dtype}.")
    if rois.device != features.device:
        raise ValueError(f"rois are on {rois.device} but features on {features.device}.")


def _check_scale(scale: float, name: str) -> float:
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{name} must be a positive finite float (1 / stride), got {scale}.")
    return scale


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"Tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _resolve_deterministic(deterministic: bool | None) -> bool:
    if deterministic is None:
        return torch.are_deterministic_algorithms_enabled()
    return bool(deterministic)


def _empty_output(features: Tensor, output_size: tuple[int, int]) -> Tensor:
    # A zero-size view of the features: still part of the autograd graph (so a loss over no rois
    # reaches the features with a zero gradient), and no launch.
    return features[:0, :, :1, :1].expand(0, features.shape[1], *output_size)


# --------------------------------------------------------------------------------------------
# torchvision fallback
# --------------------------------------------------------------------------------------------


def valid_rois_mask(rois: Tensor, num_images: int) -> Tensor:
    """bool[K]: rois whose values are finite and whose batch index truncates into [0, N)."""
    batch = rois[:, 0]
    return torch.isfinite(rois).all(dim=1) & (batch > -1) & (batch < num_images)


def _torchvision_roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """torchvision's roi_align with lazydet's invalid-roi and dtype rules (see module doc)."""
    num_images = features.shape[0]
    if num_images == 0:  # every roi is invalid: no image to read
        return features.new_zeros((rois.shape[0], features.shape[1], *output_size))
    compute_dtype = features.dtype if features.dtype == torch.float64 else torch.float32
    valid = valid_rois_mask(rois, num_images)
    # The replacement roi (image 0, a point at the origin) is in range, so torchvision cannot
    # fault on it; its output is discarded below.
    safe_rois = torch.where(valid[:, None], rois.to(compute_dtype), 0.0)
    pooled = _torchvision_roi_align_op(
        features.to(compute_dtype),
        safe_rois,
        output_size,
        spatial_scale=spatial_scale,
        sampling_ratio=sampling_ratio if sampling_ratio > 0 else -1,
        aligned=aligned,
    )
    pooled = torch.where(valid[:, None, None, None], pooled, 0.0)
    return pooled.to(features.dtype)


# --------------------------------------------------------------------------------------------
# Triton path
# --------------------------------------------------------------------------------------------


class _TritonRoIAlign(torch.autograd.Function):
    """Autograd wrapper of the Triton kernels; gradients flow to the features only (as in
    torchvision, rois get none)."""

    @staticmethod
    def forward(ctx: Any, rois: Tensor, spec: _PoolSpec, *features: Tensor) -> Tensor:
        from lazydet.kernels import roi_align as kernels

        ctx.save_for_backward(rois)
        ctx.spec = spec
        ctx.feature_shapes = [f.shape for f in features]
        ctx.feature_dtype = features[0].dtype
        return kernels.roi_align_forward(
            list(features),
            rois,
            output_size=spec.output_size,
            scales=spec.scales,
            sampling_ratio=spec.sampling_ratio,
            aligned=spec.aligned,
            level_mapping=spec.level_mapping,
        )

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        from lazydet.kernels import roi_align as kernels

        num_levels = len(ctx.feature_shapes)
        if not any(ctx.needs_input_grad[2:]):
            return (None, None, *([None] * num_levels))
        (rois,) = ctx.saved_tensors
        spec: _PoolSpec = ctx.spec
        grads = kernels.roi_align_backward(
            grad_output,
            rois,
            feature_shapes=ctx.feature_shapes,
            feature_dtype=ctx.feature_dtype,
            output_size=spec.output_size,
            scales=spec.scales,
            sampling_ratio=spec.sampling_ratio,
            aligned=spec.aligned,
            level_mapping=spec.level_mapping,
            deterministic=spec.deterministic,
        )
        return (None, None, *grads)


def _kernel_rois(rois: Tensor) -> Tensor:
    return rois.detach().to(torch.float32).contiguous()


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int = 0,
    aligned: bool = True,
    *,
    deterministic: bool | None = None,
) -> Tensor:
    """Pool ``rois`` from one feature map; torchvision.ops.roi_align semantics.

    Args:
        features: [N, C, H, W] float (fp32/fp16/bf16 on the Triton path, also fp64 on torchvision).
        rois: [K, 5] (batch_index, x1, y1, x2, y2), XYXY image pixels; read as fp32.
        output_size: ``oh`` or ``(oh, ow)``.
        spatial_scale: feature pixels per image pixel (1 / stride).
        sampling_ratio: samples per bin axis; ``<= 0`` picks ``ceil(roi_side / output_side)``.
        aligned: shift by half a pixel so that pixel centres are at +0.5 (recommended).
        deterministic: bitwise reproducible backward; None follows
            ``torch.are_deterministic_algorithms_enabled()``.

    Returns:
        [K, C, oh, ow] in the features' dtype. Invalid rois (non-finite values, batch index
        outside ``[0, N)``) give zeros.
    """
    _check_features(features, "features")
    _check_rois(rois, features)
    size = _output_size(output_size)
    spatial_scale = _check_scale(spatial_scale, "spatial_scale")
    sampling_ratio = int(sampling_ratio)
    deterministic = _resolve_deterministic(deterministic)
    if rois.shape[0] == 0:
        return _empty_output(features, size)
    if features.dtype in _TRITON_DTYPES and use_triton(features, rois):
        spec = _PoolSpec(size, (spatial_scale,), sampling_ratio, aligned, deterministic, None)
        return _TritonRoIAlign.apply(_kernel_rois(rois), spec, features.contiguous())
    _check_torchvision_determinism(deterministic, features)
    return _torchvision_roi_align(features, rois, size, spatial_scale, sampling_ratio, aligned)


def _check_torchvision_determinism(deterministic: bool, features: Tensor) -> None:
    if deterministic and features.is_cuda and features.requires_grad:
        raise ValueError(
            "deterministic=True on CUDA needs lazydet's Triton ROIAlign (torchvision's CUDA "
            "backward uses float atomics); use backend 'auto' or 'triton', or pass "
            "deterministic=False."
        )


def _box_tensor(boxes: Any, index: int) -> Tensor:
    tensor = getattr(boxes, "tensor", boxes)  # lazydet.structures.Boxes or a plain Tensor
    if not isinstance(tensor, Tensor) or tensor.dim() != 2 or tensor.shape[1] != 4:
        raise TypeError(
            f"boxes[{index}] must be a Tensor[R, 4] (x1, y1, x2, y2) or Boxes; "
            f"got {_describe(tensor)}."
        )
    return tensor


def assign_boxes_to_levels(
    boxes: Sequence[Tensor],
    min_level: int,
    max_level: int,
    canonical_box_size: float = 224,
    canonical_level: int = 4,
) -> Tensor:
    """FPN level of every box (FPN paper eq. 1), 0-based from ``min_level``.

    ``level = floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8))`` clamped to
    ``[min_level, max_level]``, evaluated in fp32 with ``floor(log2(q))`` taken exactly from the
    exponent bits of ``q`` (this is what the fused Triton kernel computes, bit for bit; a rounded
    ``log2`` could disagree for a box within an ulp of a level boundary). Inverted boxes have zero
    area (lowest level); boxes with a non-finite coordinate or area get index 0.
    (torchvision's ``MultiScaleRoIAlign`` adds its eps, 1e-6, outside the log: a box within about
    1e-6 below a level boundary goes one level up there; elsewhere the two agree.)

    Args:
        boxes: per image, Tensor[R_i, 4] XYXY (or ``Boxes``); all on one device.
    Returns:
        int64 [sum R_i], in the order of the concatenated boxes.
    """
    if min_level > max_level:
        raise ValueError(f"min_level ({min_level}) must not exceed max_level ({max_level}).")
    tensors = [_box_tensor(b, i) for i, b in enumerate(boxes)]
    if not tensors:
        raise ValueError("boxes must list at least one image's boxes.")
    all_boxes = torch.cat(tensors).to(torch.float32)
    x1, y1, x2, y2 = all_boxes.unbind(dim=1)
    area = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    usable = torch.isfinite(all_boxes).all(dim=1) & torch.isfinite(area)
    area = torch.where(usable, area, 0.0)
    # Tensor operands, not Python scalars: CUDA turns division by a scalar into a multiplication
    # by its reciprocal, which is not the correctly rounded quotient the kernel computes.
    q = torch.sqrt(area) / torch.full_like(area, float(canonical_box_size))
    q = q + torch.full_like(area, LEVEL_EPS)
    floor_log2 = ((q.contiguous().view(torch.int32) >> 23) & 0xFF) - 127
    level = (floor_log2 + canonical_level).clamp(min_level, max_level) - min_level
    return level.to(torch.int64)


def _pyramid_levels(scales: Sequence[float], num_levels: int) -> tuple[int, int]:
    """(min_level, max_level) from per-level scales that must be 2**-min_level, 2**-(min+1), ..."""
    if len(scales) != num_levels:
        raise ValueError(f"scales has {len(scales)} entries for {num_levels} feature levels.")
    levels = []
    for i, scale in enumerate(scales):
        scale = _check_scale(scale, f"scales[{i}]")
        level = -math.log2(scale)
        if abs(level - round(level)) > 1e-6:
            raise ValueError(f"scales[{i}] = {scale} is not a power of two (1 / stride).")
        levels.append(round(level))
    if levels != list(range(levels[0], levels[0] + num_levels)):
        raise ValueError(
            f"scales {list(scales)} must halve from one level to the next, fine to coarse."
        )
    return levels[0], levels[-1]


def multilevel_roi_align(
    features: Sequence[Tensor],
    boxes: Sequence[Tensor],
    output_size: int | tuple[int, int],
    scales: Sequence[float],
    sampling_ratio: int = 0,
    aligned: bool = True,
    canonical_box_size: float = 224,
    canonical_level: int = 4,
    *,
    deterministic: bool | None = None,
) -> Tensor:
    """Pool each box from its FPN level (``assign_boxes_to_levels``).

    Args:
        features: per level, fine to coarse, Tensor[N, C, H_l, W_l] (one dtype and device).
        boxes: per image (N entries), Tensor[R_i, 4] XYXY image pixels (or ``Boxes``).
        output_size: ``oh`` or ``(oh, ow)``.
        scales: per level, 1 / stride; consecutive powers of two (e.g. 1/4, 1/8, 1/16, 1/32),
            which fix ``min_level``/``max_level`` of the level mapping.
        sampling_ratio, aligned, deterministic: as in ``roi_align``.
        canonical_box_size, canonical_level: FPN eq. 1 constants (224 and 4).

    Returns:
        [sum R_i, C, oh, ow] in box order (image 0's boxes first), features' dtype.
    """
    if isinstance(features, Tensor) or not features:
        raise TypeError("features must be a non-empty list of Tensor[N, C, H, W], fine to coarse.")
    for i, level in enumerate(features):
        _check_features(level, f"features[{i}]")
    first = features[0]
    for i, level in enumerate(features[1:], start=1):
        if level.shape[:2] != first.shape[:2] or level.dtype != first.dtype:
            raise ValueError(
                f"features[{i}] has (N, C) = {tuple(level.shape[:2])} and {level.dtype}; "
                f"features[0] has {tuple(first.shape[:2])} and {first.dtype}."
            )
        if level.device != first.device:
            raise ValueError(f"features[{i}] is on {level.device}, features[0] on {first.device}.")
    min_level, max_level = _pyramid_levels(scales, len(features))
    if isinstance(boxes, Tensor) or len(boxes) != first.shape[0]:
        raise ValueError(
            f"boxes must be a list with one Tensor[R_i, 4] per image ({first.shape[0]} images)."
        )
    size = _output_size(output_size)
    sampling_ratio = int(sampling_ratio)
    deterministic = _resolve_deterministic(deterministic)
    box_tensors = [_box_tensor(b, i) for i, b in enumerate(boxes)]
    rois = torch.cat(
        [
            torch.cat([torch.full_like(b[:, :1], i, dtype=torch.float32), b.float()], dim=1)
            for i, b in enumerate(box_tensors)
        ]
    )
    _check_rois(rois, first)
    if rois.shape[0] == 0:
        return _empty_output(first, size)
    level_scales = tuple(_check_scale(s, "scales") for s in scales)

    fusable = len(features) <= MAX_FUSED_LEVELS and first.dtype in _TRITON_DTYPES
    if fusable and use_triton(*features, rois):
        from lazydet.kernels.roi_align import FpnLevelMapping

        mapping = FpnLevelMapping(
            min_level=min_level,
            num_levels=len(features),
            canonical_box_size=float(canonical_box_size),
            canonical_level=int(canonical_level),
            eps=LEVEL_EPS,
        )
        spec = _PoolSpec(size, level_scales, sampling_ratio, aligned, deterministic, mapping)
        return _TritonRoIAlign.apply(
            _kernel_rois(rois), spec, *(level.contiguous() for level in features)
        )

    _check_torchvision_determinism(deterministic, first)
    levels = assign_boxes_to_levels(
        box_tensors, min_level, max_level, canonical_box_size, canonical_level
    )
    pooled = first.new_zeros((rois.shape[0], first.shape[1], *size))
    for index, (level_features, scale) in enumerate(zip(features, level_scales)):
        in_level = torch.nonzero(levels == index).squeeze(1)
        pooled[in_level] = _torchvision_roi_align(
            level_features, rois[in_level], size, scale, sampling_ratio, aligned
        )
    return pooled
