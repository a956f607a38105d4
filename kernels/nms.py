"""Triton kernels for class-aware non-maximum suppression (NMS).

The kernels work on a *slot layout* that ``lazydet.ops.nms`` prepares with plain torch ops:

* Boxes are sorted by class, then by decreasing score, and copied into "slots" (fp32 XYXY,
  ``[S, 4]``). Every class segment starts at a multiple of 32 slots and is padded up to one, so a
  32-bit word of suppression bits never mixes two classes and each class owns whole words.
  Padding slots have rank ``-1`` and are never kept.
* ``slot_rank[S]`` (int64) is each slot's position in the stable descending-score order of the
  input, or ``-1`` for padding.

Two kernels then run without any host synchronisation:

1. ``_iou_mask_kernel`` fills a suppression bitmask: bit ``b`` of ``mask[i, k]`` is set when the box
   in slot ``i`` suppresses the box in slot ``32 * (i // 32 + k) + b`` (same class, later in
   score order, IoU above the threshold). Words are stored relative to the row's own word, so a
   row only holds the words of its class segment: the mask is ``[S, max_segment_words]`` int32,
   which for many classes is far smaller than torchvision's ``[N, N / 64]``. Boxes of different
   classes never share a word, so they never suppress each other whatever their coordinates (no
   coordinate-offset trick, hence no overflow in fp16 and no merging of classes with negative
   coordinates).
2. ``_keep_reduction_kernel`` walks each class segment in score order, one program per class (the
   classes are independent, so they run in parallel), 32 boxes at a time. It resolves a word of
   boxes against the diagonal mask word, then ORs the full mask rows of the kept boxes into a
   per-word "removed" bitset, and stops early once ``max_keep`` boxes of that class are kept.
   It writes ``keep_by_rank[N]`` (int8): 1 at the score rank of every kept box.

IoU semantics (bit for bit those of ``torchvision.ops.nms``'s CPU kernel; its CUDA kernel rounds the
threshold to nearest and lets nvcc fuse multiply-adds, so it can differ where IoU is within an fp32
ulp of the threshold): areas, intersection and union are computed in fp32 in the same operation
order as torchvision, without fused multiply-adds (the launch sets
``enable_fp_fusion=False``), the division is correctly rounded (``tl.div_rn``: compiled fp32 ``/``
is approximate and could flip a comparison at the threshold, the interpreter's is exact), and a
box is suppressed only when IoU is strictly greater than the threshold. The caller passes the
threshold already rounded *down* to fp32, which makes the fp32 comparison equal to comparing
against the exact (double) threshold. A box with a NaN or infinite coordinate neither suppresses
nor is suppressed (torchvision's formula yields a NaN or zero IoU for such boxes; the kernel
enforces it explicitly).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

BITS_PER_WORD = 32
# Mask words computed per program of the IoU kernel, one 32 x 32 tile of IoUs each.
MASK_BLOCK_WORDS = 8
# Words of the "removed" bitset updated per step of the reduction.
REDUCE_BLOCK_WORDS = 256


@triton.jit
def _iou_mask_kernel(
    boxes_ptr,  # fp32 [S, 4] slots, XYXY
    word_segment_end_ptr,  # int32 [S / 32]: exclusive end word of the segment holding each word
    threshold,  # fp32 scalar, rounded down to fp32
    mask_ptr,  # int32 [S, mask_stride]
    mask_stride,
    BLOCK_WORDS: tl.constexpr,
):
    row_word = tl.program_id(0)
    first_rel_word = tl.program_id(1) * BLOCK_WORDS
    segment_end = tl.load(word_segment_end_ptr + row_word)
    # Most programs of a many-class launch fall outside their row's segment: leave at once.
    if row_word + first_rel_word < segment_end:
        lanes = tl.arange(0, 32)
        rows = (row_word * 32 + lanes).to(tl.int64)
        rx1 = tl.load(boxes_ptr + rows * 4 + 0)[:, None]
        ry1 = tl.load(boxes_ptr + rows * 4 + 1)[:, None]
        rx2 = tl.load(boxes_ptr + rows * 4 + 2)[:, None]
        ry2 = tl.load(boxes_ptr + rows * 4 + 3)[:, None]
        row_area = (rx2 - rx1) * (ry2 - ry1)
        inf = float("inf")
        row_finite = (tl.abs(rx1) < inf) & (tl.abs(ry1) < inf)
        row_finite = row_finite & (tl.abs(rx2) < inf) & (tl.abs(ry2) < inf)
        bits = tl.full((1, 32), 1, tl.int64) << lanes[None, :].to(tl.int64)

        # One [32 rows, 32 columns] tile per mask word: a 2-D tile keeps the registers per thread
        # low (a [32, BLOCK_WORDS, 32] tile needs about twice as many).
        for k in range(BLOCK_WORDS):
            col_word = row_word + first_rel_word + k
            if col_word < segment_end:
                cols = col_word.to(tl.int64) * 32 + lanes
                cx1 = tl.load(boxes_ptr + cols * 4 + 0)[None, :]
                cy1 = tl.load(boxes_ptr + cols * 4 + 1)[None, :]
                cx2 = tl.load(boxes_ptr + cols * 4 + 2)[None, :]
                cy2 = tl.load(boxes_ptr + cols * 4 + 3)[None, :]
                col_area = (cx2 - cx1) * (cy2 - cy1)
                inter_w = tl.maximum(tl.minimum(rx2, cx2) - tl.maximum(rx1, cx1), 0.0)
                inter_h = tl.maximum(tl.minimum(ry2, cy2) - tl.maximum(ry1, cy1), 0.0)
                inter = inter_w * inter_h
                iou = tl.div_rn(inter, row_area + col_area - inter)
                col_finite = (tl.abs(cx1) < inf) & (tl.abs(cy1) < inf)
                col_finite = col_finite & (tl.abs(cx2) < inf) & (tl.abs(cy2) < inf)
                later = cols[None, :] > rows[:, None]  # only later boxes get suppressed
                suppress = (iou > threshold) & later & row_finite & col_finite
                # The lanes' bits are disjoint, so their sum is their OR. It is taken in int64
                # because bit 31 overflows int32, and tl.sum is a fast numpy sum in the
                # interpreter whereas tl.reduce_or runs element by element in Python there.
                word = tl.sum(tl.where(suppress, bits, 0), axis=1).to(tl.int32)  # [32]
                tl.store(mask_ptr + rows * mask_stride + first_rel_word + k, word)


@triton.jit
def _keep_reduction_kernel(
    mask_ptr,  # int32 [S, mask_stride] from _iou_mask_kernel
    mask_stride,
    segment_word_start_ptr,  # int32 [num_segments]
    segment_word_end_ptr,  # int32 [num_segments], exclusive
    slot_rank_ptr,  # int64 [S], -1 for padding
    removed_ptr,  # int32 [S / 32], zero-initialised scratch
    keep_by_rank_ptr,  # int8 [N], zero-initialised output
    max_keep,  # keep at most this many boxes per segment
    BLOCK_WORDS: tl.constexpr,
):
    segment = tl.program_id(0)
    word = tl.load(segment_word_start_ptr + segment)
    segment_end = tl.load(segment_word_end_ptr + segment)
    lanes = tl.arange(0, 32)
    lane_bits = tl.full((32,), 1, tl.int64) << lanes.to(tl.int64)
    kept_count = 0
    while (word < segment_end) & (kept_count < max_keep):
        slots = word.to(tl.int64) * 32 + lanes
        ranks = tl.load(slot_rank_ptr + slots)
        padding_bits = tl.sum(tl.where(ranks < 0, lane_bits, 0), axis=0).to(tl.int32)
        removed = tl.load(removed_ptr + word) | padding_bits

        # Resolve the 32 boxes of this word in score order against the diagonal mask word
        # (relative word 0). The loads do not depend on `removed`, so they can all be in flight.
        kept_bits = tl.zeros((), tl.int32)
        for b in tl.static_range(32):
            diagonal = tl.load(mask_ptr + (word.to(tl.int64) * 32 + b) * mask_stride)
            is_kept = ((removed >> b) & 1) == 0
            is_kept = is_kept & (kept_count < max_keep)
            removed = tl.where(is_kept, removed | diagonal, removed)
            kept_bits = tl.where(is_kept, kept_bits | (tl.full((), 1, tl.int32) << b), kept_bits)
            kept_count += is_kept.to(tl.int32)

        lane_kept = ((kept_bits >> lanes) & 1) != 0
        tl.store(keep_by_rank_ptr + ranks, tl.full((32,), 1, tl.int8), mask=lane_kept)

        # Later words of the segment lose every box that a kept box of this word suppresses.
        if kept_bits != 0:
            words_left = segment_end - word
            for first in range(1, words_left, BLOCK_WORDS):
                rel_words = first + tl.arange(0, BLOCK_WORDS)
                valid = rel_words < words_left
                suppressed = tl.load(removed_ptr + word + rel_words, mask=valid, other=0)
                # One row per kept box; rows of dropped boxes are masked out and never read.
                for b in tl.static_range(32):
                    row_kept = ((kept_bits >> b) & 1) != 0
                    suppressed |= tl.load(
                        mask_ptr + (word.to(tl.int64) * 32 + b) * mask_stride + rel_words,
                        mask=valid & row_kept,
                        other=0,
                    )
                tl.store(removed_ptr + word + rel_words, suppressed, mask=valid)
            # The next word's `removed` is read by other threads of this program.
            tl.debug_barrier()
        word += 1


# Launch options shared by the launches below and by compile_specs(): the IoU kernel must not fuse
# multiplies and adds, so that its IoU rounds exactly like torchvision's.
IOU_MASK_OPTIONS = {"num_warps": 8, "enable_fp_fusion": False}
KEEP_REDUCTION_OPTIONS = {"num_warps": 8}


def compile_specs() -> list[tuple[object, dict[str, str], dict[str, int], dict[str, object]]]:
    """``(kernel, signature, constexprs, options)`` for ``triton.compile`` of every kernel here.

    Lets tests compile the kernels for a GPU target without a GPU (``triton.compiler.ASTSource``);
    the types are those the launches in :func:`nms_keep_by_rank` pass.
    """
    return [
        (
            _iou_mask_kernel,
            {
                "boxes_ptr": "*fp32",
                "word_segment_end_ptr": "*i32",
                "threshold": "fp32",
                "mask_ptr": "*i32",
                "mask_stride": "i32",
                "BLOCK_WORDS": "constexpr",
            },
            {"BLOCK_WORDS": MASK_BLOCK_WORDS},
            IOU_MASK_OPTIONS,
        ),
        (
            _keep_reduction_kernel,
            {
                "mask_ptr": "*i32",
                "mask_stride": "i32",
                "segment_word_start_ptr": "*i32",
                "segment_word_end_ptr": "*i32",
                "slot_rank_ptr": "*i64",
                "removed_ptr": "*i32",
                "keep_by_rank_ptr": "*i8",
                "max_keep": "i32",
                "BLOCK_WORDS": "constexpr",
            },
            {"BLOCK_WORDS": REDUCE_BLOCK_WORDS},
            KEEP_REDUCTION_OPTIONS,
        ),
    ]


def _check_interpreter_mode() -> None:
    """Fail clearly when ``TRITON_INTERPRET=1`` was set only after Triton was imported.

    ``@triton.jit`` (here and in ``triton.language``'s own functions, such as ``tl.sum``) reads
    the variable when Triton is imported, so the kernels would be compiled ones that the
    interpreter cannot run.
    """
    if triton.knobs.runtime.interpret and not isinstance(_iou_mask_kernel, InterpretedFunction):
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after Triton had been imported (torchvision imports it); "
            "set it before the first import of torch/torchvision/triton, e.g. in the environment."
        )


def nms_keep_by_rank(
    *,
    slot_boxes: torch.Tensor,
    slot_rank: torch.Tensor,
    segment_word_start: torch.Tensor,
    segment_word_end: torch.Tensor,
    word_segment_end: torch.Tensor,
    max_segment_words: int,
    num_boxes: int,
    threshold: float,
    max_keep: int,
) -> torch.Tensor:
    """Run both kernels on a prepared slot layout (see the module docstring).

    Args:
        slot_boxes: fp32 ``[S, 4]`` contiguous, ``S`` a multiple of 32.
        slot_rank: int64 ``[S]``, score rank of each slot or ``-1`` for padding.
        segment_word_start, segment_word_end: int32 ``[num_segments]`` word range of each class.
        word_segment_end: int32 ``[S / 32]`` exclusive end word of each word's segment.
        max_segment_words: the largest ``segment_word_end - segment_word_start`` (or a bound).
        num_boxes: ``N``, the number of input boxes.
        threshold: IoU threshold, a float exactly representable in fp32 (rounded down).
        max_keep: the most boxes kept per segment (``>= 1``).

    Returns:
        int8 ``[N]``: 1 at the score rank of every kept box, 0 elsewhere.
    """
    _check_interpreter_mode()
    num_slots = slot_boxes.shape[0]
    num_words = num_slots // BITS_PER_WORD
    device = slot_boxes.device
    mask = torch.empty((num_slots, max_segment_words), dtype=torch.int32, device=device)
    removed = torch.zeros(num_words, dtype=torch.int32, device=device)
    keep_by_rank = torch.zeros(num_boxes, dtype=torch.int8, device=device)
    mask_grid = (num_words, triton.cdiv(max_segment_words, MASK_BLOCK_WORDS))
    _iou_mask_kernel[mask_grid](
        slot_boxes,
        word_segment_end,
        threshold,
        mask,
        max_segment_words,
        BLOCK_WORDS=MASK_BLOCK_WORDS,
        **IOU_MASK_OPTIONS,
    )
    _keep_reduction_kernel[(segment_word_start.shape[0],)](
        mask,
        max_segment_words,
        segment_word_start,
        segment_word_end,
        slot_rank,
        removed,
        keep_by_rank,
        max_keep,
        BLOCK_WORDS=REDUCE_BLOCK_WORDS,
        **KEEP_REDUCTION_OPTIONS,
    )
    return keep_by_rank
