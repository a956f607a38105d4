"""ROIAlign as Triton kernels: forward and backward, one FPN level or all levels in one launch.

Semantics are torchvision's ``roi_align`` (CPU/CUDA kernels), restated here because the kernels
must reproduce them:

- A roi is ``(batch_index, x1, y1, x2, y2)`` in image pixels; it is mapped to the feature map by
  ``spatial_scale`` and, with ``aligned=True``, shifted by half a pixel so that pixel centres sit at
  integer + 0.5 (``aligned=False`` keeps the legacy mapping and forces a roi side to be >= 1).
- The roi is split into ``output_size`` bins; each bin averages ``grid_h * grid_w`` bilinear samples
  placed at the centres of a regular sub-grid. ``sampling_ratio > 0`` fixes the sub-grid; ``<= 0``
  picks ``ceil(roi_side / output_side)`` per roi (computed with an exactly rounded division: the
  compiled fp32 ``/`` is approximate and would move the ``ceil`` at integer ratios).
- A sample outside ``[-1, H] x [-1, W]`` contributes 0 (but still counts in the average); inside,
  coordinates are clamped to the map and the bilinear weights use the clamped position.

lazydet additions (shared with the torchvision fallback in ``lazydet.ops.roi_align``):

- A roi with a non-finite value, or whose batch index does not truncate into ``[0, N)``, pools
  zeros and receives no gradient (torchvision's CPU kernel can crash on NaN boxes).
- Multi-level: every level's tensor is passed as its own base pointer with its own ``H, W, scale``;
  each program computes its roi's FPN level (``fpn_level``, identical bit for bit to
  ``lazydet.ops.assign_boxes_to_levels``) and reads only that level, so all levels take one launch
  and no host synchronisation.

Tiles: one program per (roi, block of channels); the program holds a
``[BLOCK_C, BLOCK_BINS]`` tile of outputs (all ``oh * ow`` bins of ``BLOCK_C`` channels) and loops
over the roi's sampling sub-grid, so the per-sample geometry is computed once per bin vector and
shared by the channels. Accumulation is fp32 whatever the feature dtype.

Backward scatters ``grad * weight / count`` with atomics. Float atomics make the result depend on
the order in which programs run; ``deterministic=True`` accumulates in int64 fixed point instead
(see ``roi_align_backward``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

MAX_LEVELS = 5
"""Most feature levels one fused launch accepts (FPN P2..P6)."""

FPN_LEVEL_EPS = 1e-8
"""Added to ``sqrt(area) / canonical_box_size`` before the log, as in the FPN level formula."""

_FLT_MAX = 3.4028234663852886e38
_TILE_ELEMENTS = 1024  # outputs per program; 4 gathers each, enough work per thread at 4 warps
_NUM_WARPS = 4
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class FpnLevelMapping:
    """FPN eq. (1): ``level = floor(canonical_level + log2(sqrt(area) / canonical_box_size + eps))``.

    Clamped to ``[min_level, min_level + num_levels - 1]`` and returned 0-based from ``min_level``.
    """

    min_level: int
    num_levels: int
    canonical_box_size: float = 224.0
    canonical_level: int = 4
    eps: float = FPN_LEVEL_EPS

    @property
    def max_level(self) -> int:
        return self.min_level + self.num_levels - 1


# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _is_finite(x):
    # NaN fails every comparison and |inf| > FLT_MAX; no reliance on x - x == 0 folding.
    return tl.abs(x) <= 3.4028234663852886e38


@triton.jit
def fpn_level(
    x1, y1, x2, y2, coords_finite, canonical_box_size, eps, canonical_level, min_level, max_level
):
    """0-based FPN level of boxes (scalars or vectors); mirrors ``assign_boxes_to_levels``.

    ``floor(log2(q))`` is read from the fp32 exponent bits of ``q`` instead of calling ``log2``:
    GPU ``log2`` is approximate, and the exponent is exact and identical on every backend. ``q``
    is at least ``eps`` (a normal float), so the exponent field is ``floor(log2(q)) + 127``.
    Inverted boxes have zero area; boxes with a non-finite coordinate or area go to level 0.
    """
    width = x2 - x1
    width = tl.where(width > 0.0, width, 0.0)
    height = y2 - y1
    height = tl.where(height > 0.0, height, 0.0)
    area = width * height
    area = tl.where(coords_finite & (area <= 3.4028234663852886e38), area, 0.0)
    q = tl.div_rn(tl.sqrt_rn(area), canonical_box_size) + eps
    exponent = ((q.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    level = tl.minimum(tl.maximum(canonical_level + exponent, min_level), max_level)
    return level - min_level


@triton.jit
def _pick(level, v0, v1, v2, v3, v4, NUM_LEVELS: tl.constexpr):
    """``(v0, ..., v4)[level]`` for a runtime level (values may be pointers)."""
    value = v0
    if NUM_LEVELS > 1:
        value = tl.where(level == 1, v1, value)
    if NUM_LEVELS > 2:
        value = tl.where(level == 2, v2, value)
    if NUM_LEVELS > 3:
        value = tl.where(level == 3, v3, value)
    if NUM_LEVELS > 4:
        value = tl.where(level == 4, v4, value)
    return value


@triton.jit
def _load_roi(rois_ptr, roi, num_images):
    """Returns (valid, batch, x1, y1, x2, y2, coords_finite); invalid rois get a zero box."""
    row = rois_ptr + roi.to(tl.int64) * 5
    batch_f = tl.load(row)
    x1 = tl.load(row + 1)
    y1 = tl.load(row + 2)
    x2 = tl.load(row + 3)
    y2 = tl.load(row + 4)
    coords_finite = _is_finite(x1) & _is_finite(y1) & _is_finite(x2) & _is_finite(y2)
    # trunc(b) in [0, N)  <=>  -1 < b < N for finite b; compared as floats so that a NaN or huge
    # index never reaches the float -> int conversion.
    valid = coords_finite & (batch_f > -1.0) & (batch_f < num_images.to(tl.float32))
    batch = tl.where(valid, batch_f, 0.0).to(tl.int32)
    x1 = tl.where(valid, x1, 0.0)
    y1 = tl.where(valid, y1, 0.0)
    x2 = tl.where(valid, x2, 0.0)
    y2 = tl.where(valid, y2, 0.0)
    return valid, batch, x1, y1, x2, y2, coords_finite


@triton.jit
def _roi_geometry(
    x1,
    y1,
    x2,
    y2,
    valid,
    scale,
    OUT_H: tl.constexpr,
    OUT_W: tl.constexpr,
    SAMPLING_RATIO: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    """Start corner, bin size and sampling sub-grid of one roi on its feature map."""
    if ALIGNED:
        start_w = x1 * scale - 0.5
        start_h = y1 * scale - 0.5
        end_w = x2 * scale - 0.5
        end_h = y2 * scale - 0.5
    else:
        start_w = x1 * scale
        start_h = y1 * scale
        end_w = x2 * scale
        end_h = y2 * scale
    roi_w = end_w - start_w
    roi_h = end_h - start_h
    if not ALIGNED:
        roi_w = tl.maximum(roi_w, 1.0)
        roi_h = tl.maximum(roi_h, 1.0)
    bin_h = tl.div_rn(roi_h, OUT_H * 1.0)
    bin_w = tl.div_rn(roi_w, OUT_W * 1.0)
    if SAMPLING_RATIO > 0:
        grid_h = tl.full((), SAMPLING_RATIO, tl.int32)
        grid_w = tl.full((), SAMPLING_RATIO, tl.int32)
    else:
        grid_h = tl.ceil(bin_h).to(tl.int32)
        grid_w = tl.ceil(bin_w).to(tl.int32)
    grid_h = tl.where(valid, grid_h, 0)
    grid_w = tl.where(valid, grid_w, 0)
    # A degenerate roi (aligned=True allows negative sides) gets a non-positive grid: the sample
    # loops do not run and the bin is 0, as in torchvision.
    count = tl.maximum(grid_h * grid_w, 1).to(tl.float32)
    return start_h, start_w, bin_h, bin_w, grid_h, grid_w, count


@triton.jit
def _axis_weights(coord, size):
    """Bilinear neighbours and weights along one axis, torchvision's clamping rules."""
    size_f = size.to(tl.float32)
    inside = (coord >= -1.0) & (coord <= size_f)
    clamped = tl.minimum(tl.maximum(coord, 0.0), size_f)
    low = clamped.to(tl.int32)
    at_edge = low >= size - 1
    low = tl.where(at_edge, size - 1, low)
    high = tl.where(at_edge, size - 1, low + 1)
    clamped = tl.where(at_edge, low.to(tl.float32), clamped)
    frac = clamped - low.to(tl.float32)
    return low, high, frac, 1.0 - frac, inside


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["num_images", "height0", "height1", "height2", "height3",
                               "height4", "width0", "width1", "width2", "width3", "width4"])  # fmt: skip
def roi_align_fwd_kernel(
    out_ptr,
    rois_ptr,
    feat0,
    feat1,
    feat2,
    feat3,
    feat4,
    height0,
    height1,
    height2,
    height3,
    height4,
    width0,
    width1,
    width2,
    width3,
    width4,
    scale0,
    scale1,
    scale2,
    scale3,
    scale4,
    num_images,
    channels,
    canonical_box_size,
    eps,
    canonical_level,
    min_level,
    max_level,
    NUM_LEVELS: tl.constexpr,
    OUT_H: tl.constexpr,
    OUT_W: tl.constexpr,
    SAMPLING_RATIO: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_BINS: tl.constexpr,
):
    """out[roi, c, ph, pw] for one roi and BLOCK_C channels; grid = (num_rois, cdiv(C, BLOCK_C))."""
    roi = tl.program_id(0)
    channel_block = tl.program_id(1)
    valid, batch, x1, y1, x2, y2, coords_finite = _load_roi(rois_ptr, roi, num_images)
    if NUM_LEVELS > 1:
        level = fpn_level(
            x1, y1, x2, y2, coords_finite, canonical_box_size, eps, canonical_level, min_level,
            max_level,
        )  # fmt: skip
    else:
        level = 0
    feat = _pick(level, feat0, feat1, feat2, feat3, feat4, NUM_LEVELS)
    height = _pick(level, height0, height1, height2, height3, height4, NUM_LEVELS)
    width = _pick(level, width0, width1, width2, width3, width4, NUM_LEVELS)
    scale = _pick(level, scale0, scale1, scale2, scale3, scale4, NUM_LEVELS)
    start_h, start_w, bin_h, bin_w, grid_h, grid_w, count = _roi_geometry(
        x1, y1, x2, y2, valid, scale, OUT_H, OUT_W, SAMPLING_RATIO, ALIGNED
    )

    bins = tl.arange(0, BLOCK_BINS)
    bin_mask = bins < OUT_H * OUT_W
    bin_y = (bins // OUT_W).to(tl.float32)
    bin_x = (bins % OUT_W).to(tl.float32)
    chans = channel_block * BLOCK_C + tl.arange(0, BLOCK_C)
    chan_mask = chans < channels
    plane = height * width
    image = feat + batch.to(tl.int64) * channels * plane
    chan_ptrs = image + (chans * plane)[:, None]

    grid_h_f = grid_h.to(tl.float32)
    grid_w_f = grid_w.to(tl.float32)
    acc = tl.zeros((BLOCK_C, BLOCK_BINS), dtype=tl.float32)
    for iy in range(0, grid_h):
        y = start_h + bin_y * bin_h + tl.div_rn((iy + 0.5) * bin_h, grid_h_f)
        y_low, y_high, ly, hy, y_inside = _axis_weights(y, height)
        row_low = y_low * width
        row_high = y_high * width
        for ix in range(0, grid_w):
            x = start_w + bin_x * bin_w + tl.div_rn((ix + 0.5) * bin_w, grid_w_f)
            x_low, x_high, lx, hx, x_inside = _axis_weights(x, width)
            mask = chan_mask[:, None] & (bin_mask & y_inside & x_inside)[None, :]
            v1 = tl.load(chan_ptrs + (row_low + x_low)[None, :], mask=mask, other=0.0)
            v2 = tl.load(chan_ptrs + (row_low + x_high)[None, :], mask=mask, other=0.0)
            v3 = tl.load(chan_ptrs + (row_high + x_low)[None, :], mask=mask, other=0.0)
            v4 = tl.load(chan_ptrs + (row_high + x_high)[None, :], mask=mask, other=0.0)
            acc += (
                (hy * hx)[None, :] * v1.to(tl.float32)
                + (hy * lx)[None, :] * v2.to(tl.float32)
                + (ly * hx)[None, :] * v3.to(tl.float32)
                + (ly * lx)[None, :] * v4.to(tl.float32)
            )
    out = tl.div_rn(acc, count)
    out_offsets = (
        roi.to(tl.int64) * channels * (OUT_H * OUT_W)
        + (chans * (OUT_H * OUT_W))[:, None]
        + bins[None, :]
    )
    out_mask = chan_mask[:, None] & bin_mask[None, :]
    tl.store(out_ptr + out_offsets, out.to(out_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _scatter_corner(chan_ptrs, offsets, grad_bin, weight, mask, fixed_point_scale,
                    DETERMINISTIC: tl.constexpr):  # fmt: skip
    """Adds ``grad_bin * weight`` at ``chan_ptrs + offsets`` ([BLOCK_C, 1] channel pointers,
    [BLOCK_BINS] pixel offsets and weights, [BLOCK_C, BLOCK_BINS] gradient and mask)."""
    ptrs = chan_ptrs + offsets[None, :]
    values = grad_bin * weight[None, :]
    if DETERMINISTIC:
        # Truncation toward zero; integer addition is associative, so the order is irrelevant.
        tl.atomic_add(ptrs, (values * fixed_point_scale).to(tl.int64), mask=mask, sem="relaxed")
    else:
        tl.atomic_add(ptrs, values, mask=mask, sem="relaxed")


@triton.jit(do_not_specialize=["num_images", "height0", "height1", "height2", "height3",
                               "height4", "width0", "width1", "width2", "width3", "width4"])  # fmt: skip
def roi_align_bwd_kernel(
    grad_out_ptr,
    rois_ptr,
    grad0,
    grad1,
    grad2,
    grad3,
    grad4,
    height0,
    height1,
    height2,
    height3,
    height4,
    width0,
    width1,
    width2,
    width3,
    width4,
    scale0,
    scale1,
    scale2,
    scale3,
    scale4,
    fixed_point_scale_ptr,
    num_images,
    channels,
    canonical_box_size,
    eps,
    canonical_level,
    min_level,
    max_level,
    NUM_LEVELS: tl.constexpr,
    OUT_H: tl.constexpr,
    OUT_W: tl.constexpr,
    SAMPLING_RATIO: tl.constexpr,
    ALIGNED: tl.constexpr,
    DETERMINISTIC: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_BINS: tl.constexpr,
):
    """Scatters grad_out[roi, c-block] into the level's feature gradient (fp32, or int64 fixed
    point when DETERMINISTIC); grid = (num_rois, cdiv(C, BLOCK_C))."""
    roi = tl.program_id(0)
    channel_block = tl.program_id(1)
    valid, batch, x1, y1, x2, y2, coords_finite = _load_roi(rois_ptr, roi, num_images)
    if NUM_LEVELS > 1:
        level = fpn_level(
            x1, y1, x2, y2, coords_finite, canonical_box_size, eps, canonical_level, min_level,
            max_level,
        )  # fmt: skip
    else:
        level = 0
    grad = _pick(level, grad0, grad1, grad2, grad3, grad4, NUM_LEVELS)
    height = _pick(level, height0, height1, height2, height3, height4, NUM_LEVELS)
    width = _pick(level, width0, width1, width2, width3, width4, NUM_LEVELS)
    scale = _pick(level, scale0, scale1, scale2, scale3, scale4, NUM_LEVELS)
    start_h, start_w, bin_h, bin_w, grid_h, grid_w, count = _roi_geometry(
        x1, y1, x2, y2, valid, scale, OUT_H, OUT_W, SAMPLING_RATIO, ALIGNED
    )
    if DETERMINISTIC:
        fixed_scale = tl.load(fixed_point_scale_ptr)
    else:
        fixed_scale = 1.0

    bins = tl.arange(0, BLOCK_BINS)
    bin_mask = bins < OUT_H * OUT_W
    bin_y = (bins // OUT_W).to(tl.float32)
    bin_x = (bins % OUT_W).to(tl.float32)
    chans = channel_block * BLOCK_C + tl.arange(0, BLOCK_C)
    chan_mask = chans < channels
    tile_mask = chan_mask[:, None] & bin_mask[None, :]
    grad_out_offsets = (
        roi.to(tl.int64) * channels * (OUT_H * OUT_W)
        + (chans * (OUT_H * OUT_W))[:, None]
        + bins[None, :]
    )
    grad_bin = tl.load(grad_out_ptr + grad_out_offsets, mask=tile_mask, other=0.0)
    grad_bin = tl.div_rn(grad_bin.to(tl.float32), count)

    plane = height * width
    image = grad + batch.to(tl.int64) * channels * plane
    chan_ptrs = image + (chans * plane)[:, None]
    grid_h_f = grid_h.to(tl.float32)
    grid_w_f = grid_w.to(tl.float32)
    for iy in range(0, grid_h):
        y = start_h + bin_y * bin_h + tl.div_rn((iy + 0.5) * bin_h, grid_h_f)
        y_low, y_high, ly, hy, y_inside = _axis_weights(y, height)
        row_low = y_low * width
        row_high = y_high * width
        for ix in range(0, grid_w):
            x = start_w + bin_x * bin_w + tl.div_rn((ix + 0.5) * bin_w, grid_w_f)
            x_low, x_high, lx, hx, x_inside = _axis_weights(x, width)
            mask = chan_mask[:, None] & (bin_mask & y_inside & x_inside)[None, :]
            # The sample's four bilinear neighbours, each weighted by its corner's share.
            _scatter_corner(
                chan_ptrs, row_low + x_low, grad_bin, hy * hx, mask, fixed_scale, DETERMINISTIC
            )
            _scatter_corner(
                chan_ptrs, row_low + x_high, grad_bin, hy * lx, mask, fixed_scale, DETERMINISTIC
            )
            _scatter_corner(
                chan_ptrs, row_high + x_low, grad_bin, ly * hx, mask, fixed_scale, DETERMINISTIC
            )
            _scatter_corner(
                chan_ptrs, row_high + x_high, grad_bin, ly * lx, mask, fixed_scale, DETERMINISTIC
            )


@triton.jit
def fpn_level_kernel(
    out_ptr,
    boxes_ptr,
    num_boxes,
    canonical_box_size,
    eps,
    canonical_level,
    min_level,
    max_level,
    BLOCK: tl.constexpr,
):
    """out[i] = fpn_level(boxes[i]) for boxes [num_boxes, 4]: the fused kernels' level choice,
    exposed so tests can compare it with ``assign_boxes_to_levels`` box by box."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < num_boxes
    x1 = tl.load(boxes_ptr + offsets * 4, mask=mask, other=0.0)
    y1 = tl.load(boxes_ptr + offsets * 4 + 1, mask=mask, other=0.0)
    x2 = tl.load(boxes_ptr + offsets * 4 + 2, mask=mask, other=0.0)
    y2 = tl.load(boxes_ptr + offsets * 4 + 3, mask=mask, other=0.0)
    finite = _is_finite(x1) & _is_finite(y1) & _is_finite(x2) & _is_finite(y2)
    level = fpn_level(
        x1, y1, x2, y2, finite, canonical_box_size, eps, canonical_level, min_level, max_level
    )
    tl.store(out_ptr + offsets, level, mask=mask)


# --------------------------------------------------------------------------------------------
# Launch wrappers (inputs validated by lazydet.ops.roi_align; these only assert the contract)
# --------------------------------------------------------------------------------------------


def _tile(channels: int, output_size: tuple[int, int]) -> tuple[int, int]:
    block_bins = triton.next_power_of_2(output_size[0] * output_size[1])
    block_c = max(1, min(triton.next_power_of_2(channels), _TILE_ELEMENTS // block_bins))
    return block_c, block_bins


def _level_args(
    tensors: Sequence[torch.Tensor],
    scales: Sequence[float],
    level_mapping: FpnLevelMapping | None,
) -> tuple[list, FpnLevelMapping]:
    """Per-level pointers, heights, widths, scales padded to MAX_LEVELS, and the mapping."""
    num_levels = len(tensors)
    if not 1 <= num_levels <= MAX_LEVELS or len(scales) != num_levels:
        raise ValueError(f"need 1..{MAX_LEVELS} levels with one scale each")
    if num_levels > 1 and (level_mapping is None or level_mapping.num_levels != num_levels):
        raise ValueError("a multi-level launch needs an FpnLevelMapping with as many levels")
    pad = MAX_LEVELS - num_levels
    pointers = list(tensors) + [tensors[0]] * pad
    heights = [t.shape[-2] for t in tensors] + [1] * pad
    widths = [t.shape[-1] for t in tensors] + [1] * pad
    level_scales = [float(s) for s in scales] + [1.0] * pad
    mapping = level_mapping or FpnLevelMapping(min_level=0, num_levels=1)
    return [*pointers, *heights, *widths, *level_scales], mapping


def _mapping_args(mapping: FpnLevelMapping) -> list:
    return [
        float(mapping.canonical_box_size),
        float(mapping.eps),
        int(mapping.canonical_level),
        int(mapping.min_level),
        int(mapping.max_level),
    ]


def _check_contract(features: Sequence[torch.Tensor], rois: torch.Tensor) -> tuple[int, int]:
    assert rois.dtype == torch.float32 and rois.is_contiguous() and rois.dim() == 2
    assert rois.shape[0] > 0, "empty rois must return before launch"
    num_images, channels = features[0].shape[:2]
    for level in features:
        assert level.is_contiguous() and level.shape[:2] == (num_images, channels)
        assert level.shape[-2] > 0 and level.shape[-1] > 0
        if channels * level.shape[-2] * level.shape[-1] > _INT32_MAX:
            # Offsets inside one image are int32 in the kernels (the image base is int64).
            raise ValueError(
                f"features of shape {tuple(level.shape)} have more than 2**31 - 1 elements per "
                "image; the Triton ROIAlign cannot index them. Use the torchvision backend."
            )
    return num_images, channels


def roi_align_forward(
    features: Sequence[torch.Tensor],
    rois: torch.Tensor,
    *,
    output_size: tuple[int, int],
    scales: Sequence[float],
    sampling_ratio: int,
    aligned: bool,
    level_mapping: FpnLevelMapping | None = None,
) -> torch.Tensor:
    """Pooled features [K, C, oh, ow] in the features' dtype.

    features: 1..MAX_LEVELS contiguous tensors [N, C, H_l, W_l] of one dtype (fp32/fp16/bf16).
    rois: fp32 contiguous [K, 5] (batch_index, x1, y1, x2, y2) in image pixels, K > 0.
    With several levels, each roi reads the level given by ``level_mapping`` (``fpn_level``).
    """
    num_images, channels = _check_contract(features, rois)
    level_args, mapping = _level_args(features, scales, level_mapping)
    out = torch.empty(
        (rois.shape[0], channels, *output_size), dtype=features[0].dtype, device=rois.device
    )
    block_c, block_bins = _tile(channels, output_size)
    grid = (rois.shape[0], triton.cdiv(channels, block_c))
    roi_align_fwd_kernel[grid](
        out,
        rois,
        *level_args,
        num_images,
        channels,
        *_mapping_args(mapping),
        NUM_LEVELS=len(features),
        OUT_H=output_size[0],
        OUT_W=output_size[1],
        SAMPLING_RATIO=max(int(sampling_ratio), 0),
        ALIGNED=bool(aligned),
        BLOCK_C=block_c,
        BLOCK_BINS=block_bins,
        num_warps=_NUM_WARPS,
    )
    return out


def fixed_point_scales(
    grad_output: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scale 2**k for the int64 fixed-point backward, its inverse, and whether it is usable.

    Every feature-gradient element is a sum of ``grad_output * w / count`` terms whose weights sum
    to at most 1 per (roi, channel, bin), so ``B = max_c sum_{roi, bin} |grad_output|`` bounds
    every partial sum. With ``B <= 2**E`` (frexp) and ``k = 60 - E``, ``|partial sum| * 2**k <=
    2**60`` — two bits of head-room under int64 for the fp32 rounding of ``B`` — so the int64
    accumulator cannot overflow, and each term loses less than ``2**-k`` (about ``B * 2**-60``)
    to truncation: far below fp32 resolution of the result. Computed on the device (no host
    sync). Non-finite ``B`` (a NaN/inf in grad_output) marks the result unusable.
    """
    bound = grad_output.float().abs().sum(dim=(0, 2, 3)).amax()
    finite = torch.isfinite(bound)
    _, exponent = torch.frexp(torch.where(finite, bound, torch.zeros_like(bound)))
    k = (60 - exponent).clamp(-120, 120).to(torch.int32)
    # 2**k built from its exponent bits: exact, unlike pow/exp2 on some backends.
    scale = ((k + 127) << 23).view(torch.float32).reshape(1)
    inverse = ((127 - k) << 23).view(torch.float32).reshape(1)
    return scale, inverse, finite


def roi_align_backward(
    grad_output: torch.Tensor,
    rois: torch.Tensor,
    *,
    feature_shapes: Sequence[torch.Size],
    feature_dtype: torch.dtype,
    output_size: tuple[int, int],
    scales: Sequence[float],
    sampling_ratio: int,
    aligned: bool,
    level_mapping: FpnLevelMapping | None = None,
    deterministic: bool = False,
) -> list[torch.Tensor]:
    """Gradients of ``roi_align_forward`` w.r.t. each level's features, in ``feature_dtype``.

    grad_output: [K, C, oh, ow], any float dtype. Accumulation is fp32 (float atomics; the sum
    order, hence the last bits, varies from run to run) or, with ``deterministic=True``, int64
    fixed point (``fixed_point_scales``): bitwise reproducible, no overflow by construction, and
    truncation error below ``#terms * 2**-k``. If grad_output holds NaN/inf, the deterministic
    gradient is NaN everywhere (still reproducible, and AMP's scaler skips the step as it would).
    All levels share one zero-initialised buffer, returned as views.
    """
    grad_output = grad_output.contiguous()
    assert rois.dtype == torch.float32 and rois.is_contiguous() and rois.shape[0] > 0
    num_images, channels = feature_shapes[0][:2]
    sizes = [int(torch.Size(s).numel()) for s in feature_shapes]
    acc_dtype = torch.int64 if deterministic else torch.float32
    flat = torch.zeros(sum(sizes), dtype=acc_dtype, device=grad_output.device)
    views = [
        chunk.view(shape) for chunk, shape in zip(flat.split(sizes), feature_shapes, strict=True)
    ]
    if deterministic:
        scale, inverse, finite = fixed_point_scales(grad_output)
    else:
        scale = flat  # unused by the kernel; any pointer will do
    level_args, mapping = _level_args(views, scales, level_mapping)
    block_c, block_bins = _tile(channels, output_size)
    grid = (rois.shape[0], triton.cdiv(channels, block_c))
    roi_align_bwd_kernel[grid](
        grad_output,
        rois,
        *level_args,
        scale,
        num_images,
        channels,
        *_mapping_args(mapping),
        NUM_LEVELS=len(views),
        OUT_H=output_size[0],
        OUT_W=output_size[1],
        SAMPLING_RATIO=max(int(sampling_ratio), 0),
        ALIGNED=bool(aligned),
        DETERMINISTIC=bool(deterministic),
        BLOCK_C=block_c,
        BLOCK_BINS=block_bins,
        num_warps=_NUM_WARPS,
    )
    if deterministic:
        # int64 -> fp32 rounds once; the power-of-two scaling after it is exact.
        flat = torch.where(finite, flat.to(torch.float32) * inverse, float("nan"))
    flat = flat.to(feature_dtype)
    return [chunk.view(shape) for chunk, shape in zip(flat.split(sizes), feature_shapes)]


def fpn_levels(boxes: torch.Tensor, level_mapping: FpnLevelMapping) -> torch.Tensor:
    """The fused kernels' level choice for boxes [K, 4] (fp32, XYXY image pixels) -> int64 [K]."""
    boxes = boxes.to(torch.float32).contiguous()
    out = torch.empty(boxes.shape[0], dtype=torch.int32, device=boxes.device)
    if boxes.shape[0] == 0:
        return out.long()
    block = 128
    fpn_level_kernel[(triton.cdiv(boxes.shape[0], block),)](
        out, boxes, boxes.shape[0], *_mapping_args(level_mapping), BLOCK=block
    )
    return out.long()
