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
  truncation error ~2**-60 of the largest possible gradient). The CPU backward (torchvision's
  serial kernel, or from ``CPU_BACKWARD_MIN_ROIS`` rois the channel-vectorised
  ``_roi_align_backward_cpu``, serial ``index_add_``s) is deterministic; torchvision's CUDA
  backward is not, so forcing the torchvision backend on CUDA with ``deterministic=True`` is
  refused.

Multi-level pooling assigns each box to an FPN level (``assign_boxes_to_levels``). The Triton path
pools every level in one launch, each program choosing its roi's level itself (no ``nonzero``, no
host sync); the torchvision path loops over levels like ``torchvision.ops.MultiScaleRoIAlign``.
float64 features always use torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.ops import roi_align as _torchvision_roi_align_op

from lazydet.ops.backend import use_triton

LEVEL_EPS = 1e-8
"""Added to ``sqrt(area) / canonical_box_size`` before the log (keeps log2 finite for empty boxes)."""

MAX_FUSED_LEVELS = 5
"""Most pyramid levels the fused Triton launch takes; more levels use the torchvision loop."""

_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

CPU_BACKWARD_MIN_ROIS = 32
"""From this many rois (per level) the CPU backward runs vectorised over channels
(``_roi_align_backward_cpu``) instead of torchvision's serial kernel; below it, torchvision's
loop costs less than the vectorised version's fixed per-call overhead."""


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
# Kernels behind the operators: Triton, or torchvision
# --------------------------------------------------------------------------------------------


def _kernel_rois(rois: Tensor) -> Tensor:
    return rois.detach().to(torch.float32).contiguous()


def _torchvision_roi_align_backward(
    grad: Tensor,
    rois: Tensor,
    feature_shape: Sequence[int],
    feature_dtype: torch.dtype,
    output_size: Sequence[int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """Gradient of :func:`_torchvision_roi_align` w.r.t. the features: torchvision's backward
    kernel on the same safe rois, with the rows of invalid rois zeroed (they get no gradient)."""
    num_images, channels, height, width = (int(s) for s in feature_shape)
    if num_images == 0 or rois.shape[0] == 0:
        return grad.new_zeros((num_images, channels, height, width), dtype=feature_dtype)
    compute_dtype = feature_dtype if feature_dtype == torch.float64 else torch.float32
    valid = valid_rois_mask(rois, num_images)
    safe_rois = torch.where(valid[:, None], rois.to(compute_dtype), 0.0)
    grad = torch.where(valid[:, None, None, None], grad.to(compute_dtype), 0.0).contiguous()
    if grad.device.type == "cpu" and rois.shape[0] >= CPU_BACKWARD_MIN_ROIS:
        features_grad = _roi_align_backward_cpu(
            grad,
            safe_rois,
            (num_images, channels, height, width),
            (int(output_size[0]), int(output_size[1])),
            spatial_scale,
            sampling_ratio,
            aligned,
        )
        return features_grad.to(feature_dtype)
    features_grad = torch.ops.torchvision._roi_align_backward(
        grad,
        safe_rois,
        spatial_scale,
        output_size[0],
        output_size[1],
        num_images,
        channels,
        height,
        width,
        sampling_ratio if sampling_ratio > 0 else -1,
        aligned,
    )
    return features_grad.to(feature_dtype)


def _bilinear_corners(
    start: Tensor, bin_size: Tensor, grid: Tensor, max_grid: int, bins: int, size: int
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """One axis of ROIAlign's sampling: for every roi, bin and sample, the two neighbouring pixel
    indices and their bilinear weights, with torchvision's border rules (samples beyond
    ``[-1, size]`` weigh 0, coordinates below 0 clamp to 0, the last pixel repeats). Samples past
    a roi's own grid (``index >= grid``) weigh 0. Returns ``(low, high), (w_low, w_high)``, each
    ``[R, bins, max_grid]``."""
    dtype = start.dtype
    sample = torch.arange(max_grid, dtype=dtype, device=start.device)
    bin_index = torch.arange(bins, dtype=dtype, device=start.device)
    step = (bin_size / grid.to(dtype))[:, None, None]
    coord = (
        start[:, None, None]
        + bin_index[None, :, None] * bin_size[:, None, None]
        + (sample[None, None, :] + 0.5) * step
    )
    inside = (sample[None, None, :] < grid[:, None, None]) & (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0)
    low = coord.floor().to(torch.int64)
    at_edge = low >= size - 1
    low = torch.where(at_edge, size - 1, low)
    high = torch.where(at_edge, size - 1, low + 1)
    coord = torch.where(at_edge, low.to(dtype), coord)
    frac = coord - low.to(dtype)
    zero = coord.new_zeros(())
    # Samples that weigh 0 may sit at NaN / inf (empty rois): keep their indices in range.
    low, high = torch.where(inside, low, 0), torch.where(inside, high, 0)
    return (low, high), (torch.where(inside, 1 - frac, zero), torch.where(inside, frac, zero))


def _roi_align_backward_cpu(
    grad: Tensor,
    rois: Tensor,
    feature_shape: tuple[int, int, int, int],
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """The gradient of torchvision's ROIAlign w.r.t. the features, vectorised over channels.

    torchvision's CPU backward recomputes every sample's bilinear weights once per channel and
    output cell, in one serial loop; here the weights are computed once per (roi, bin, sample)
    and each of the ``4 x grid_h x grid_w`` corner terms is one ``index_add_`` of whole channel
    rows into a ``[N * H * W, C]`` buffer (a training step of the quick start spent ~12% of its
    time in torchvision's loop). Same sampling and border rules as torchvision (the reference
    in tests/ops/test_roi_align.py); sums run in another order, so results agree to float
    rounding. ``index_add_`` on the CPU is deterministic.

    Args:
        grad: ``[R, C, PH, PW]`` gradient of the pooled output (float32 or float64).
        rois: ``[R, 5]`` valid rois ``(batch_index, x1, y1, x2, y2)`` in ``grad``'s dtype.
        feature_shape: ``(N, C, H, W)``.

    Returns:
        ``[N, C, H, W]`` contiguous, ``grad``'s dtype.
    """
    num_images, channels, height, width = feature_shape
    bins_h, bins_w = output_size
    num_rois = rois.shape[0]
    offset = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - offset
    y1 = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - x1
    roi_h = rois[:, 4] * spatial_scale - offset - y1
    if not aligned:  # torchvision's legacy mode makes every roi at least 1x1
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / bins_h, roi_w / bins_w
    if sampling_ratio > 0:
        grid_h = torch.full((num_rois,), sampling_ratio, dtype=torch.int64, device=rois.device)
        grid_w = grid_h
    else:
        grid_h, grid_w = torch.ceil(bin_h).to(torch.int64), torch.ceil(bin_w).to(torch.int64)
    count = (grid_h * grid_w).clamp(min=1).to(grad.dtype)
    # One host sync: the loop below runs over the largest grid of any roi.
    max_h, max_w = (max(int(v), 1) for v in torch.stack((grid_h.max(), grid_w.max())).tolist())
    (y_low, y_high), (wy_low, wy_high) = _bilinear_corners(y1, bin_h, grid_h, max_h, bins_h, height)
    (x_low, x_high), (wx_low, wx_high) = _bilinear_corners(x1, bin_w, grid_w, max_w, bins_w, width)
    # Output cells as rows of channels, already divided by the roi's sample count.
    rows = grad.permute(0, 2, 3, 1).reshape(num_rois * bins_h * bins_w, channels)
    rows = rows / count.repeat_interleave(bins_h * bins_w)[:, None]
    features_grad = grad.new_zeros((num_images * height * width, channels))
    image_rows = (rois[:, 0].to(torch.int64) * height)[:, None, None]
    for sy in range(max_h):
        for y_index, y_weight in ((y_low, wy_low), (y_high, wy_high)):
            pixel_row = (image_rows + y_index[:, :, sy, None]) * width  # [R, PH, 1]
            weight_y = y_weight[:, :, sy, None]
            for sx in range(max_w):
                for x_index, x_weight in ((x_low, wx_low), (x_high, wx_high)):
                    weight = weight_y * x_weight[:, None, :, sx]  # [R, PH, PW]
                    pixel = pixel_row + x_index[:, None, :, sx]
                    features_grad.index_add_(0, pixel.reshape(-1), rows * weight.reshape(-1, 1))
    features_grad = features_grad.view(num_images, height, width, channels)
    return features_grad.permute(0, 3, 1, 2).contiguous()


def _check_torchvision_determinism(deterministic: bool, device: torch.device) -> None:
    if deterministic and device.type == "cuda":
        raise ValueError(
            "deterministic=True on CUDA needs lazydet's Triton ROIAlign (torchvision's CUDA "
            "backward uses float atomics); use backend 'auto' or 'triton', or pass "
            "deterministic=False."
        )


def _single_level_uses_triton(dtype: torch.dtype, *tensors: Tensor) -> bool:
    return dtype in _TRITON_DTYPES and use_triton(*tensors)


def _multilevel_uses_triton(num_levels: int, dtype: torch.dtype, *tensors: Tensor) -> bool:
    return num_levels <= MAX_FUSED_LEVELS and dtype in _TRITON_DTYPES and use_triton(*tensors)


def _level_mapping(scales: Sequence[float], canonical_box_size: float, canonical_level: int):
    from lazydet.kernels.roi_align import FpnLevelMapping

    min_level, _ = _pyramid_levels(scales, len(scales))
    return FpnLevelMapping(
        min_level=min_level,
        num_levels=len(scales),
        canonical_box_size=float(canonical_box_size),
        canonical_level=int(canonical_level),
        eps=LEVEL_EPS,
    )


# --------------------------------------------------------------------------------------------
# torch.library operators (lazydet::roi_align, lazydet::multilevel_roi_align and backwards)
#
# One registration per op for CPU and CUDA. Which kernel runs is decided when the op runs (not
# when a graph is traced), by lazydet.ops.backend: Triton on CUDA and torchvision on CPU by
# default, Triton on CPU under TRITON_INTERPRET=1 when forced, torchvision on CUDA when forced.
# Each op is opaque to torch.compile / torch.export: they see the op and its fake kernel.
# --------------------------------------------------------------------------------------------

_DEVICES = ("cpu", "cuda")


@torch.library.custom_op(
    "lazydet::roi_align",
    mutates_args=(),
    device_types=_DEVICES,
    schema="(Tensor features, Tensor rois, int[] output_size, float spatial_scale, "
    "int sampling_ratio, bool aligned, bool deterministic) -> Tensor",
)
def _roi_align_op(
    features: Tensor,
    rois: Tensor,
    output_size: list[int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    deterministic: bool,
) -> Tensor:
    size = (int(output_size[0]), int(output_size[1]))
    if rois.shape[0] == 0:
        return features.new_zeros((0, features.shape[1], *size))
    if _single_level_uses_triton(features.dtype, features, rois):
        from lazydet.kernels import roi_align as kernels

        return kernels.roi_align_forward(
            [features.contiguous()],
            _kernel_rois(rois),
            output_size=size,
            scales=(spatial_scale,),
            sampling_ratio=sampling_ratio,
            aligned=aligned,
        )
    return _torchvision_roi_align(features, rois, size, spatial_scale, sampling_ratio, aligned)


@_roi_align_op.register_fake
def _(features, rois, output_size, spatial_scale, sampling_ratio, aligned, deterministic):
    return features.new_empty((rois.shape[0], features.shape[1], *output_size))


@torch.library.custom_op(
    "lazydet::roi_align_backward",
    mutates_args=(),
    device_types=_DEVICES,
    schema="(Tensor grad, Tensor rois, SymInt[] feature_shape, ScalarType feature_dtype, "
    "int[] output_size, float spatial_scale, int sampling_ratio, bool aligned, "
    "bool deterministic) -> Tensor",
)
def _roi_align_backward_op(
    grad: Tensor,
    rois: Tensor,
    feature_shape: list[int],
    feature_dtype: torch.dtype,
    output_size: list[int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    deterministic: bool,
) -> Tensor:
    shape = torch.Size(int(s) for s in feature_shape)
    if rois.shape[0] == 0:
        return grad.new_zeros(shape, dtype=feature_dtype)
    if _single_level_uses_triton(feature_dtype, grad, rois):
        from lazydet.kernels import roi_align as kernels

        (features_grad,) = kernels.roi_align_backward(
            grad,
            _kernel_rois(rois),
            feature_shapes=[shape],
            feature_dtype=feature_dtype,
            output_size=tuple(output_size),
            scales=(spatial_scale,),
            sampling_ratio=sampling_ratio,
            aligned=aligned,
            deterministic=deterministic,
        )
        return features_grad
    _check_torchvision_determinism(deterministic, grad.device)
    return _torchvision_roi_align_backward(
        grad, rois, shape, feature_dtype, output_size, spatial_scale, sampling_ratio, aligned
    )


@_roi_align_backward_op.register_fake
def _(grad, rois, feature_shape, feature_dtype, *args):
    return grad.new_empty(feature_shape, dtype=feature_dtype)


def _roi_align_setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
    features, rois, *args = inputs
    ctx.save_for_backward(rois)
    ctx.feature_shape = features.shape
    ctx.feature_dtype = features.dtype
    ctx.args = args


def _roi_align_autograd(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    (rois,) = ctx.saved_tensors
    features_grad = _roi_align_backward_op(
        grad, rois, list(ctx.feature_shape), ctx.feature_dtype, *ctx.args
    )
    return (features_grad, *([None] * (1 + len(ctx.args))))


_roi_align_op.register_autograd(_roi_align_autograd, setup_context=_roi_align_setup_context)


@torch.library.custom_op(
    "lazydet::multilevel_roi_align",
    mutates_args=(),
    device_types=_DEVICES,
    schema="(Tensor[] features, Tensor rois, int[] output_size, float[] scales, "
    "int sampling_ratio, bool aligned, float canonical_box_size, int canonical_level, "
    "bool deterministic) -> Tensor",
)
def _multilevel_roi_align_op(
    features: list[Tensor],
    rois: Tensor,
    output_size: list[int],
    scales: list[float],
    sampling_ratio: int,
    aligned: bool,
    canonical_box_size: float,
    canonical_level: int,
    deterministic: bool,
) -> Tensor:
    first = features[0]
    size = (int(output_size[0]), int(output_size[1]))
    if rois.shape[0] == 0:
        return first.new_zeros((0, first.shape[1], *size))
    if _multilevel_uses_triton(len(features), first.dtype, *features, rois):
        from lazydet.kernels import roi_align as kernels

        return kernels.roi_align_forward(
            [level.contiguous() for level in features],
            _kernel_rois(rois),
            output_size=size,
            scales=tuple(scales),
            sampling_ratio=sampling_ratio,
            aligned=aligned,
            level_mapping=_level_mapping(scales, canonical_box_size, canonical_level),
        )
    levels = _rois_levels(rois, scales, canonical_box_size, canonical_level)
    pooled = first.new_zeros((rois.shape[0], first.shape[1], *size))
    for index, (level_features, scale) in enumerate(zip(features, scales)):
        in_level = torch.nonzero(levels == index).squeeze(1)
        pooled[in_level] = _torchvision_roi_align(
            level_features, rois[in_level], size, scale, sampling_ratio, aligned
        )
    return pooled


@_multilevel_roi_align_op.register_fake
def _(features, rois, output_size, *args):
    return features[0].new_empty((rois.shape[0], features[0].shape[1], *output_size))


def _rois_levels(
    rois: Tensor, scales: Sequence[float], canonical_box_size: float, canonical_level: int
) -> Tensor:
    min_level, max_level = _pyramid_levels(scales, len(scales))
    return assign_boxes_to_levels(
        [rois[:, 1:]], min_level, max_level, canonical_box_size, canonical_level
    )


@torch.library.custom_op(
    "lazydet::multilevel_roi_align_backward",
    mutates_args=(),
    device_types=_DEVICES,
    schema="(Tensor grad, Tensor rois, SymInt[] feature_shapes, ScalarType feature_dtype, "
    "int[] output_size, float[] scales, int sampling_ratio, bool aligned, "
    "float canonical_box_size, int canonical_level, bool deterministic) -> Tensor[]",
)
def _multilevel_roi_align_backward_op(
    grad: Tensor,
    rois: Tensor,
    feature_shapes: list[int],
    feature_dtype: torch.dtype,
    output_size: list[int],
    scales: list[float],
    sampling_ratio: int,
    aligned: bool,
    canonical_box_size: float,
    canonical_level: int,
    deterministic: bool,
) -> list[Tensor]:
    """``feature_shapes`` is every level's ``(N, C, H, W)``, concatenated (4 ints a level)."""
    shapes = _split_shapes(feature_shapes)
    if rois.shape[0] == 0:
        return [grad.new_zeros(shape, dtype=feature_dtype) for shape in shapes]
    if _multilevel_uses_triton(len(shapes), feature_dtype, grad, rois):
        from lazydet.kernels import roi_align as kernels

        grads = kernels.roi_align_backward(
            grad,
            _kernel_rois(rois),
            feature_shapes=shapes,
            feature_dtype=feature_dtype,
            output_size=tuple(output_size),
            scales=tuple(scales),
            sampling_ratio=sampling_ratio,
            aligned=aligned,
            level_mapping=_level_mapping(scales, canonical_box_size, canonical_level),
            deterministic=deterministic,
        )
        # The kernel's levels are views of one buffer; an operator's outputs must not alias.
        return [level_grad.clone() for level_grad in grads]
    _check_torchvision_determinism(deterministic, grad.device)
    levels = _rois_levels(rois, scales, canonical_box_size, canonical_level)
    grads = []
    for index, (shape, scale) in enumerate(zip(shapes, scales)):
        in_level = torch.nonzero(levels == index).squeeze(1)
        grads.append(
            _torchvision_roi_align_backward(
                grad[in_level],
                rois[in_level],
                shape,
                feature_dtype,
                output_size,
                scale,
                sampling_ratio,
                aligned,
            )
        )
    return grads


@_multilevel_roi_align_backward_op.register_fake
def _(grad, rois, feature_shapes, feature_dtype, *args):
    return [grad.new_empty(shape, dtype=feature_dtype) for shape in _split_shapes(feature_shapes)]


def _split_shapes(flat: Sequence[int]) -> list[list[int]]:
    return [list(flat[i : i + 4]) for i in range(0, len(flat), 4)]


def _multilevel_setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
    features, rois, *args = inputs
    ctx.save_for_backward(rois)
    ctx.feature_shapes = [s for level in features for s in level.shape]
    ctx.feature_dtype = features[0].dtype
    ctx.num_levels = len(features)
    ctx.args = args


def _multilevel_autograd(ctx: Any, grad: Tensor) -> tuple[Any, ...]:
    (rois,) = ctx.saved_tensors
    grads = _multilevel_roi_align_backward_op(
        grad, rois, ctx.feature_shapes, ctx.feature_dtype, *ctx.args
    )
    return (list(grads), *([None] * (1 + len(ctx.args))))


_multilevel_roi_align_op.register_autograd(
    _multilevel_autograd, setup_context=_multilevel_setup_context
)


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

    Checks the arguments and calls the operator ``torch.ops.lazydet.roi_align``.

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
    deterministic = _resolve_deterministic(deterministic)
    _check_forced_torchvision_determinism(deterministic, features)
    return _roi_align_op(
        features, rois, list(size), spatial_scale, int(sampling_ratio), bool(aligned), deterministic
    )


def _check_forced_torchvision_determinism(deterministic: bool, features: Tensor) -> None:
    # Fails at the call rather than at backward time. The short-circuit keeps the backend
    # lookup out of what torch.compile traces for the usual CPU / non-deterministic call.
    torchvision_on_cuda = features.is_cuda and (
        features.dtype not in _TRITON_DTYPES or not use_triton(features)
    )
    if deterministic and features.requires_grad and torchvision_on_cuda:
        _check_torchvision_determinism(deterministic, features.device)


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
    _pyramid_levels(scales, len(features))  # checks the scales
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
    level_scales = [_check_scale(s, "scales") for s in scales]
    _check_forced_torchvision_determinism(deterministic, first)
    return _multilevel_roi_align_op(
        list(features),
        rois,
        list(size),
        level_scales,
        int(sampling_ratio),
        bool(aligned),
        float(canonical_box_size),
        int(canonical_level),
        deterministic,
    )
