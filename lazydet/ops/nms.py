"""Non-maximum suppression: ``nms``, ``batched_nms`` and their fixed-size variants.

All four functions share one set of semantics, whichever backend runs them
(``lazydet.ops.backend``: Triton kernels on CUDA, torchvision on CPU, either one when forced):

* Boxes are ``[N, 4]`` XYXY in absolute pixels, fp32, fp16 or bf16; IoU is always computed in
  fp32 (fp16/bf16 boxes are converted exactly). fp64 boxes always run through torchvision, in fp64.
* Boxes are visited by decreasing score with a *stable* sort (equal scores keep their input order);
  NaN scores sort first, as ``torch.sort`` orders them. A box is suppressed by a kept box of the
  same class when their IoU is strictly greater than ``iou_threshold``: IoU exactly at the
  threshold is kept. This is ``torchvision.ops.nms``'s rule: the IoU is rounded to fp32 and
  compared with the threshold as given (a Python float), as torchvision's CPU kernel does
  (``lazydet.kernels.nms`` documents how the kernel matches it bit for bit).
* Classes never suppress each other (``batched_nms``): the kernel's suppression mask is
  class-aware, so unlike ``torchvision.ops.batched_nms``'s coordinate-offset trick nothing
  depends on coordinates being non-negative or on the offsets fitting in fp16.
* A box with a NaN or infinite coordinate neither suppresses nor is suppressed (it is kept when its
  score rank allows it). torchvision's IoU formula gives NaN or 0 for such boxes, so both backends
  agree.
* The result lists kept input indices by decreasing score (ties in input order), truncated to the
  first ``max_keep`` when given. With several classes the ``max_keep`` cut is global, across classes.

``nms_padded`` and ``batched_nms_padded`` return a fixed-size result for static shapes:
``(indices, count)`` with ``indices`` a ``[max_keep]`` long tensor holding the kept indices
followed by ``-1`` padding and ``count`` a 0-dim long tensor. With the Triton backend on CUDA,
``nms_padded`` makes no host synchronisation, so it can be captured in a CUDA graph once a first
call has compiled the kernels; ``batched_nms_padded`` synchronises once to lay out the classes, and
the torchvision backend synchronises in both.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torchvision

from lazydet.ops.backend import use_triton

__all__ = ["batched_nms", "batched_nms_padded", "nms", "nms_padded"]

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_BOX_DTYPES = (*_KERNEL_DTYPES, torch.float64)
_WORD = 32  # boxes per suppression-mask word in lazydet.kernels.nms


def nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float,
    *,
    max_keep: int | None = None,
) -> torch.Tensor:
    """Single-class NMS.

    Args:
        boxes: ``[N, 4]`` XYXY absolute pixels, float.
        scores: ``[N]`` float, same device.
        iou_threshold: suppress a box whose IoU with a higher-scoring kept box is ``>`` this.
        max_keep: keep at most this many boxes (the highest-scoring survivors); ``None`` keeps all.

    Returns:
        ``[K]`` long indices into ``boxes``, by decreasing score (``K <= max_keep``).
    """
    threshold, max_keep = _check_inputs(boxes, scores, None, iou_threshold, max_keep)
    return _nms_op(boxes, scores, threshold, max_keep)


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float,
    *,
    max_keep: int | None = None,
) -> torch.Tensor:
    """Per-class NMS: boxes with different ``idxs`` never suppress each other.

    Args:
        boxes: ``[N, 4]`` XYXY absolute pixels, float.
        scores: ``[N]`` float.
        idxs: ``[N]`` integer class (or any group) id of each box.
        iou_threshold: as in :func:`nms`.
        max_keep: keep at most this many boxes over all classes (the highest-scoring survivors).

    Returns:
        ``[K]`` long indices into ``boxes``, by decreasing score (ties in input order).
    """
    threshold, max_keep = _check_inputs(boxes, scores, idxs, iou_threshold, max_keep)
    return _batched_nms_op(boxes, scores, idxs, threshold, max_keep)


def nms_padded(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float,
    *,
    max_keep: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`nms` with a fixed-size result.

    Returns:
        ``(indices, count)``: ``indices`` is ``[max_keep]`` long, the first ``count`` entries
        being :func:`nms`'s result and the rest ``-1``; ``count`` is a 0-dim long tensor.
    """
    threshold, max_keep = _check_inputs(
        boxes, scores, None, iou_threshold, max_keep, max_keep_required=True
    )
    return _nms_padded(boxes, scores, None, threshold, max_keep)


def batched_nms_padded(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float,
    *,
    max_keep: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`batched_nms` with a fixed-size result, as :func:`nms_padded`."""
    threshold, max_keep = _check_inputs(
        boxes, scores, idxs, iou_threshold, max_keep, max_keep_required=True
    )
    return _nms_padded(boxes, scores, idxs, threshold, max_keep)


def _check_inputs(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor | None,
    iou_threshold: float,
    max_keep: int | None,
    *,
    max_keep_required: bool = False,
) -> tuple[float, int | None]:
    if not isinstance(boxes, torch.Tensor) or not isinstance(scores, torch.Tensor):
        raise TypeError("nms: boxes and scores must be torch.Tensor.")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"nms: boxes must have shape [N, 4] (XYXY), got {tuple(boxes.shape)}.")
    if boxes.dtype not in _BOX_DTYPES:
        raise TypeError(
            f"nms: boxes must be float32, float16, bfloat16 or float64, got {boxes.dtype}."
        )
    if scores.shape != (boxes.shape[0],):
        raise ValueError(
            f"nms: scores must have shape [N] = [{boxes.shape[0]}] to match boxes, "
            f"got {tuple(scores.shape)}."
        )
    if not scores.is_floating_point():
        raise TypeError(f"nms: scores must be a float tensor, got {scores.dtype}.")
    if scores.device != boxes.device:
        raise ValueError(f"nms: scores are on {scores.device} but boxes on {boxes.device}.")
    if idxs is not None:
        if not isinstance(idxs, torch.Tensor) or idxs.shape != (boxes.shape[0],):
            got = tuple(idxs.shape) if isinstance(idxs, torch.Tensor) else type(idxs).__name__
            raise ValueError(
                f"batched_nms: idxs must be a tensor of shape [N] = [{boxes.shape[0]}], got {got}."
            )
        if idxs.is_floating_point() or idxs.is_complex() or idxs.dtype == torch.bool:
            raise TypeError(f"batched_nms: idxs must be an integer tensor, got {idxs.dtype}.")
        if idxs.device != boxes.device:
            raise ValueError(f"batched_nms: idxs are on {idxs.device} but boxes on {boxes.device}.")
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real):
        raise TypeError(f"nms: iou_threshold must be a real number, got {iou_threshold!r}.")
    if math.isnan(float(iou_threshold)):
        # Every comparison with NaN is False: nothing would ever be suppressed.
        raise ValueError(
            "nms: iou_threshold is NaN, which would suppress no box; use a value in [0, 1] "
            "(e.g. 0.5), or 1.0 to keep every box."
        )
    if max_keep is None:
        if max_keep_required:
            raise ValueError("nms_padded: max_keep (the output length) is required.")
    elif isinstance(max_keep, bool) or not isinstance(max_keep, numbers.Integral) or max_keep < 0:
        raise ValueError(f"nms: max_keep must be None or an integer >= 0, got {max_keep!r}.")
    elif max_keep >= 2**31:
        raise ValueError(f"nms: max_keep={max_keep} is too large; use None to keep all boxes.")
    return float(iou_threshold), None if max_keep is None else int(max_keep)


def _nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor | None,
    threshold: float,
    max_keep: int | None,
) -> torch.Tensor:
    if boxes.shape[0] == 0 or max_keep == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    tensors = (boxes, scores) if idxs is None else (boxes, scores, idxs)
    if boxes.dtype in _KERNEL_DTYPES and use_triton(*tensors):
        order, keep_by_rank = _triton_keep_by_rank(boxes, scores, idxs, threshold, max_keep)
        keep = order[torch.nonzero(keep_by_rank).squeeze(1)]
    else:
        keep = _torchvision_keep(boxes, scores, idxs, threshold)
    return keep if max_keep is None else keep[:max_keep]


# torch.library operators lazydet::nms and lazydet::batched_nms. One registration each for CPU
# and CUDA; the kernel that runs (Triton or torchvision, lazydet.ops.backend) is chosen when the op
# runs. The number of kept boxes depends on the data: the fake kernel declares it as a new dynamic
# size, as torch documents for such ops, so torch.compile / torch.export trace through NMS.


@torch.library.custom_op(
    "lazydet::nms",
    mutates_args=(),
    device_types=("cpu", "cuda"),
    schema="(Tensor boxes, Tensor scores, float iou_threshold, int? max_keep) -> Tensor",
)
def _nms_op(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_keep: int | None
) -> torch.Tensor:
    return _nms(boxes, scores, None, iou_threshold, max_keep)


@torch.library.custom_op(
    "lazydet::batched_nms",
    mutates_args=(),
    device_types=("cpu", "cuda"),
    schema="(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold, int? max_keep) "
    "-> Tensor",
)
def _batched_nms_op(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float,
    max_keep: int | None,
) -> torch.Tensor:
    return _nms(boxes, scores, idxs, iou_threshold, max_keep)


def _fake_keep(boxes: torch.Tensor) -> torch.Tensor:
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count,), dtype=torch.long)


_nms_op.register_fake(lambda boxes, scores, iou_threshold, max_keep: _fake_keep(boxes))
_batched_nms_op.register_fake(
    lambda boxes, scores, idxs, iou_threshold, max_keep: _fake_keep(boxes)
)


def _nms_padded(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor | None,
    threshold: float,
    max_keep: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    device = boxes.device
    indices = torch.full((max_keep,), -1, dtype=torch.long, device=device)
    if boxes.shape[0] == 0 or max_keep == 0:
        return indices, torch.zeros((), dtype=torch.long, device=device)
    tensors = (boxes, scores) if idxs is None else (boxes, scores, idxs)
    if boxes.dtype in _KERNEL_DTYPES and use_triton(*tensors):
        order, keep_by_rank = _triton_keep_by_rank(boxes, scores, idxs, threshold, max_keep)
        # Compact without a host sync: the j-th kept rank goes to output position j; kept ranks
        # beyond max_keep and dropped ranks all land in one extra slot that is cut off.
        kept = keep_by_rank.bool()
        position = torch.cumsum(keep_by_rank, 0, dtype=torch.long) - 1
        target = torch.where(kept & (position < max_keep), position, max_keep)
        padded = torch.full((max_keep + 1,), -1, dtype=torch.long, device=device)
        padded.scatter_(0, target, order)
        count = torch.clamp(position[-1] + 1, max=max_keep)
        return padded[:max_keep], count
    keep = _torchvision_keep(boxes, scores, idxs, threshold)[:max_keep]
    indices[: keep.shape[0]] = keep
    return indices, torch.tensor(keep.shape[0], dtype=torch.long, device=device)


def _torchvision_keep(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor | None, threshold: float
) -> torch.Tensor:
    """The reference path: torchvision's NMS (fp32 IoU for fp16/bf16 boxes)."""
    if boxes.dtype in (torch.float16, torch.bfloat16):
        boxes = boxes.float()
    # torchvision sorts the scores in their own dtype; only the order matters, and a float
    # conversion is exact for fp16/bf16.
    scores = scores.to(boxes.dtype)
    if idxs is None:
        return torchvision.ops.nms(boxes, scores, threshold)
    # Per-class loop rather than torchvision.ops.batched_nms: its coordinate-offset trick merges
    # classes when coordinates are negative. This loop is what torchvision itself runs for large
    # inputs; the merge below restores the global (score, input index) order.
    kept = []
    for group in torch.unique(idxs):
        members = torch.nonzero(idxs == group).squeeze(1)
        kept.append(members[torchvision.ops.nms(boxes[members], scores[members], threshold)])
    keep = torch.sort(torch.cat(kept)).values
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


def _threshold_rounded_down_to_fp32(threshold: float) -> float:
    """The largest fp32 value ``<= threshold``: for an fp32 IoU, ``iou > result`` holds exactly when
    ``iou > threshold`` does, so the kernel's fp32 comparison means the exact threshold."""
    if math.isnan(threshold):
        return threshold
    rounded = np.float32(threshold)
    if float(rounded) > threshold:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)


def _triton_keep_by_rank(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor | None,
    threshold: float,
    max_keep: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay the boxes out for ``lazydet.kernels.nms`` and run it.

    Returns ``(order, keep_by_rank)``: ``order[N]`` the input indices by stable decreasing score,
    ``keep_by_rank[N]`` int8, 1 where the box of that score rank is kept.
    """
    # Imported here so that lazydet.ops works where Triton is absent (it is Linux-only).
    from lazydet.kernels.nms import nms_keep_by_rank

    device = boxes.device
    num_boxes = boxes.shape[0]
    order = torch.sort(scores, descending=True, stable=True).indices
    ranks = torch.arange(num_boxes, device=device)
    slot_of_rank: slice | torch.Tensor
    if idxs is None:
        # One segment: every size follows from N, so this path never synchronises with the host.
        num_slots = -(-num_boxes // _WORD) * _WORD
        num_words = num_slots // _WORD
        slot_of_rank = slice(0, num_boxes)
        segment_word_start = torch.zeros(1, dtype=torch.int32, device=device)
        segment_word_end = torch.full((1,), num_words, dtype=torch.int32, device=device)
        word_segment_end = torch.full((num_words,), num_words, dtype=torch.int32, device=device)
        max_segment_words = num_words
    else:
        # Group the score-sorted boxes by class (a stable sort keeps each class in score order)
        # and start every class at a multiple of 32 slots. Per-element ops with [N]-sized
        # per-segment buffers (at most N classes) leave a single host synchronisation.
        class_by_rank = idxs[order]
        grouped_ranks = torch.sort(class_by_rank, stable=True).indices
        grouped_classes = class_by_rank[grouped_ranks]
        starts_segment = torch.ones(num_boxes, dtype=torch.bool, device=device)
        starts_segment[1:] = grouped_classes[1:] != grouped_classes[:-1]
        segment = torch.cumsum(starts_segment, 0) - 1  # segment of each grouped box
        first_member = torch.cummax(torch.where(starts_segment, ranks, 0), 0).values
        counts = torch.zeros(num_boxes, dtype=torch.long, device=device)
        counts.scatter_add_(0, segment, torch.ones_like(segment))
        padded = (counts + _WORD - 1) // _WORD * _WORD  # 0 past the last segment
        first_slot = torch.cumsum(padded, 0) - padded
        slot_of_rank = torch.empty_like(ranks)
        slot_of_rank[grouped_ranks] = first_slot[segment] + ranks - first_member
        # The one host synchronisation of batched NMS: the sizes of the layout.
        num_segments, num_slots, max_segment_slots = torch.stack(
            [segment[-1] + 1, padded.sum(), padded.max()]
        ).tolist()
        num_words = num_slots // _WORD
        max_segment_words = max_segment_slots // _WORD
        first_slot, padded = first_slot[:num_segments], padded[:num_segments]
        segment_word_start = (first_slot // _WORD).to(torch.int32)
        segment_word_end = ((first_slot + padded) // _WORD).to(torch.int32)
        word_segment_end = torch.repeat_interleave(
            segment_word_end, padded // _WORD, output_size=num_words
        )
    slot_boxes = torch.zeros((num_slots, 4), dtype=torch.float32, device=device)
    slot_boxes[slot_of_rank] = boxes[order].float()
    slot_rank = torch.full((num_slots,), -1, dtype=torch.long, device=device)
    slot_rank[slot_of_rank] = ranks
    keep_by_rank = nms_keep_by_rank(
        slot_boxes=slot_boxes,
        slot_rank=slot_rank,
        segment_word_start=segment_word_start,
        segment_word_end=segment_word_end,
        word_segment_end=word_segment_end,
        max_segment_words=max_segment_words,
        num_boxes=num_boxes,
        threshold=_threshold_rounded_down_to_fp32(threshold),
        max_keep=num_boxes if max_keep is None else min(max_keep, num_boxes),
    )
    return order, keep_by_rank
