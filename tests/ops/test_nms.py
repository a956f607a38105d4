"""lazydet.ops NMS (Triton kernels under the interpreter, and the torchvision fallback) against
torchvision.ops.nms / batched_nms, a per-class torchvision.ops.nms loop and hand-computed cases.

tests/ops/conftest.py sets TRITON_INTERPRET=1, so the "triton" backend runs the kernels on CPU
tensors in Triton's interpreter. With TRITON_INTERPRET=0 on a GPU machine the same tests run the
compiled kernels on CUDA tensors.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from helpers import import_kernels

from lazydet.ops import backend
from lazydet.ops.nms import batched_nms, batched_nms_padded, nms, nms_padded

# Skips only where Triton is not installed, outside CI; a broken import fails (tests/helpers.py).
kernels = import_kernels("lazydet.kernels.nms")

BACKENDS = ("triton", "torchvision")

# Zero-area and non-finite boxes give 0/0 or inf-inf in the IoU (as in torchvision): NaN is the
# intended value there, so numpy's warning about it in the interpreter is noise.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def _clustered_boxes(num_boxes: int, seed: int, *, offset: float = 0.0) -> torch.Tensor:
    """XYXY boxes jittered around a few centres, so that many pairs overlap above any threshold."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(max(num_boxes // 8, 1), 2, generator=gen) * 200 + offset
    pick = torch.randint(0, centres.shape[0], (num_boxes,), generator=gen)
    xy = centres[pick] + torch.randn(num_boxes, 2, generator=gen) * 6
    wh = 10 + torch.rand(num_boxes, 2, generator=gen) * 40
    return torch.cat([xy - wh / 2, xy + wh / 2], dim=1)


def _scores(num_boxes: int, seed: int) -> torch.Tensor:
    return torch.rand(num_boxes, generator=torch.Generator().manual_seed(seed + 1000))


def _with_references(num_boxes: int, *, seed: int, num_classes: int) -> tuple[torch.Tensor, ...]:
    """Clustered boxes, their scores and class ids, and torchvision's keep lists at IoU 0.5:
    ``(boxes, scores, idxs, nms keep, batched_nms keep)``, all on the CPU."""
    boxes, scores = _clustered_boxes(num_boxes, seed), _scores(num_boxes, seed)
    generator = torch.Generator().manual_seed(seed)
    idxs = torch.randint(0, num_classes, (num_boxes,), generator=generator)
    full = torchvision.ops.nms(boxes, scores, 0.5)
    return boxes, scores, idxs, full, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)


def _per_class_reference(boxes, scores, idxs, threshold):
    """torchvision.ops.nms per class, merged by decreasing score with ties in input order."""
    kept = [
        torch.nonzero(idxs == c).squeeze(1)[
            torchvision.ops.nms(boxes[idxs == c].float(), scores[idxs == c].float(), threshold)
        ]
        for c in torch.unique(idxs)
    ]
    if not kept:
        return torch.empty(0, dtype=torch.long)
    keep = torch.sort(torch.cat(kept)).values
    return keep[torch.sort(scores[keep].float(), descending=True, stable=True).indices]


def _run(name, fn, *args, **kwargs):
    with backend.use_backend(name):
        result = fn(*args, **kwargs)
    if isinstance(result, tuple):
        return tuple(r.cpu() for r in result)
    return result.cpu()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_kernel_matches_torchvision(device, seed, threshold):
    boxes, scores = _clustered_boxes(160, seed), _scores(160, seed)
    expected = torchvision.ops.nms(boxes, scores, threshold)
    assert 10 < expected.numel() < 160  # the case exercises suppression
    got = _run("triton", nms, boxes.to(device), scores.to(device), threshold)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("num_classes", [1, 3, 40])
def test_batched_nms_kernel_matches_torchvision(device, seed, num_classes):
    boxes, scores = _clustered_boxes(160, seed), _scores(160, seed)
    idxs = torch.randint(0, num_classes, (160,), generator=torch.Generator().manual_seed(seed))
    expected = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
    got = _run("triton", batched_nms, boxes.to(device), scores.to(device), idxs.to(device), 0.5)
    assert torch.equal(got, expected)


def test_batched_nms_kernel_class_sizes_around_word_boundaries(device):
    # The kernels pad every class to a multiple of 32 boxes: sizes just below, at and above it.
    sizes = [31, 32, 33, 1, 64, 2]
    idxs = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    idxs = idxs[torch.randperm(idxs.numel(), generator=torch.Generator().manual_seed(11))]
    boxes, scores = _clustered_boxes(idxs.numel(), 11), _scores(idxs.numel(), 11)
    expected = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
    got = _run("triton", batched_nms, boxes.to(device), scores.to(device), idxs.to(device), 0.5)
    assert torch.equal(got, expected)
    got = _run(
        "triton", batched_nms, boxes.to(device), scores.to(device), idxs.to(device), 0.5, max_keep=9
    )
    assert torch.equal(got, expected[:9])


def test_nms_padded_makes_no_host_sync_on_cuda(device):
    if device.type != "cuda":
        pytest.skip("host syncs only exist for compiled kernels on CUDA (TRITON_INTERPRET=0)")
    boxes = _clustered_boxes(300, 12).cuda()
    scores = _scores(300, 12).cuda()
    with backend.use_backend("triton"):
        nms_padded(boxes, scores, 0.5, max_keep=50)  # compile outside the check
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            indices, count = nms_padded(boxes, scores, 0.5, max_keep=50)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    expected = torchvision.ops.nms(boxes, scores, 0.5)[:50]
    assert torch.equal(indices[: int(count)], expected)


def test_nms_kernel_matches_torchvision_1000_boxes(device):
    boxes, scores = _clustered_boxes(1000, 7), _scores(1000, 7)
    expected = torchvision.ops.nms(boxes, scores, 0.6)
    got = _run("triton", nms, boxes.to(device), scores.to(device), 0.6)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", BACKENDS)
def test_equal_scores_keep_input_order(device, name):
    # Two identical boxes (the first in input order wins), then disjoint boxes in input order.
    boxes = torch.tensor(
        [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10], [100, 0, 110, 10], [20, 0, 30, 10]],
        dtype=torch.float32,
    )
    scores = torch.full((5,), 0.5)
    expected = torch.tensor([0, 1, 3, 4])
    assert torch.equal(torchvision.ops.nms(boxes, scores, 0.5), expected)
    assert torch.equal(_run(name, nms, boxes.to(device), scores.to(device), 0.5), expected)
    idxs = torch.tensor([0, 1, 1, 0, 1]).to(device)
    got = _run(name, batched_nms, boxes.to(device), scores.to(device), idxs, 0.5)
    assert torch.equal(got, torch.tensor([0, 1, 2, 3, 4]))  # 0 and 2 differ in class


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize(
    ("second_box", "iou"),
    [
        ([0.0, 0.0, 10.0, 5.0], 0.5),  # inter 50, union 100
        ([0.0, 0.0, 10.0, 2.5], 0.25),  # inter 25, union 100
        ([0.0, 0.0, 10.0, 7.5], 0.75),  # inter 75, union 100
    ],
)
def test_iou_exactly_at_threshold_is_kept(device, name, second_box, iou):
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], second_box], device=device)
    scores = torch.tensor([0.9, 0.8], device=device)
    assert torch.equal(_run(name, nms, boxes, scores, iou), torch.tensor([0, 1]))
    below = math.nextafter(iou, 0.0)  # the smallest step below: now IoU > threshold
    assert torch.equal(_run(name, nms, boxes, scores, below), torch.tensor([0]))


@pytest.mark.parametrize("name", BACKENDS)
def test_non_dyadic_threshold_matches_torchvision(device, name):
    # IoU 1/3 is not an fp32 number: fp32 IoU rounds up past the double threshold 1/3, and
    # torchvision (fp32 IoU compared with the double threshold) suppresses. lazydet agrees.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 3.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    expected = torchvision.ops.nms(boxes, scores, 1 / 3)
    got = _run(name, nms, boxes.to(device), scores.to(device), 1 / 3)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", BACKENDS)
def test_negative_coordinates_never_merge_classes(device, name):
    # All coordinates negative: torchvision's batched_nms offsets classes by max coordinate + 1,
    # which is <= 0 here. lazydet must equal a per-class loop of torchvision.ops.nms.
    boxes = _clustered_boxes(96, 3, offset=-400.0)
    assert boxes.max() < -1
    scores = _scores(96, 3)
    class_ids = torch.tensor([-3, 7, 1000, 2])  # arbitrary, non-contiguous ids
    idxs = class_ids[torch.randint(0, 4, (96,), generator=torch.Generator().manual_seed(3))]
    expected = _per_class_reference(boxes, scores, idxs, 0.5)
    got = _run(name, batched_nms, boxes.to(device), scores.to(device), idxs.to(device), 0.5)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", BACKENDS)
def test_fp16_many_classes_large_coordinates(device, name):
    # 80 classes x ~1000 px offsets would overflow fp16 (max 65504) with the offset trick.
    boxes = (_clustered_boxes(120, 4) * 4 + 200).half()
    scores = _scores(120, 4).half()
    idxs = torch.randint(0, 80, (120,), generator=torch.Generator().manual_seed(4))
    expected = _per_class_reference(boxes.float(), scores.float(), idxs, 0.4)
    got = _run(name, batched_nms, boxes.to(device), scores.to(device), idxs.to(device), 0.4)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_use_fp32_iou(device, name, dtype):
    boxes, scores = _clustered_boxes(128, 5).to(dtype), _scores(128, 5).to(dtype)
    expected = torchvision.ops.nms(boxes.float(), scores.float(), 0.5)
    assert torch.equal(_run(name, nms, boxes.to(device), scores.to(device), 0.5), expected)


@pytest.mark.parametrize("name", BACKENDS)
def test_empty_input_returns_before_any_launch(device, name, monkeypatch):
    def no_launch(**kwargs):
        raise AssertionError("a kernel was launched for an empty input")

    monkeypatch.setattr(kernels, "nms_keep_by_rank", no_launch)
    boxes = torch.zeros((0, 4), device=device)
    scores = torch.zeros(0, device=device)
    idxs = torch.zeros(0, dtype=torch.long, device=device)
    for got in (
        _run(name, nms, boxes, scores, 0.5),
        _run(name, batched_nms, boxes, scores, idxs, 0.5),
        _run(name, nms, boxes, scores, 0.5, max_keep=3),
    ):
        assert got.dtype == torch.long and got.shape == (0,)
    indices, count = _run(name, batched_nms_padded, boxes, scores, idxs, 0.5, max_keep=3)
    assert torch.equal(indices, torch.full((3,), -1)) and int(count) == 0


@pytest.mark.parametrize("name", BACKENDS)
def test_single_box(device, name):
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0]], device=device)
    scores = torch.tensor([0.1], device=device)
    assert torch.equal(_run(name, nms, boxes, scores, 0.5), torch.tensor([0]))
    idxs = torch.tensor([7], device=device)
    assert torch.equal(_run(name, batched_nms, boxes, scores, idxs, 0.5), torch.tensor([0]))


@pytest.mark.parametrize("name", BACKENDS)
def test_max_keep_truncates(device, name):
    boxes, scores, idxs, full, full_batched = _with_references(100, seed=6, num_classes=3)
    args = (boxes.to(device), scores.to(device))
    for max_keep in (0, 1, 5, full.numel(), full_batched.numel() + 3):
        got = _run(name, nms, *args, 0.5, max_keep=max_keep)
        assert torch.equal(got, full[:max_keep])
        got = _run(name, batched_nms, *args, idxs.to(device), 0.5, max_keep=max_keep)
        assert torch.equal(got, full_batched[:max_keep])  # one cut across classes


@pytest.mark.parametrize("name", BACKENDS)
def test_padded_results(device, name):
    boxes, scores, idxs, full, full_batched = _with_references(64, seed=8, num_classes=2)
    args = (boxes.to(device), scores.to(device))
    for max_keep in (1, 4, full_batched.numel() + 5):
        for result, reference in (
            (_run(name, nms_padded, *args, 0.5, max_keep=max_keep), full),
            (
                _run(name, batched_nms_padded, *args, idxs.to(device), 0.5, max_keep=max_keep),
                full_batched,
            ),
        ):
            indices, count = result
            kept = reference[:max_keep]
            assert indices.shape == (max_keep,) and count.dtype == torch.long
            assert int(count) == kept.numel()
            assert torch.equal(indices[: kept.numel()], kept)
            assert bool((indices[kept.numel() :] == -1).all())


@pytest.mark.parametrize("name", BACKENDS)
def test_non_finite_boxes_neither_suppress_nor_get_suppressed(device, name):
    nan, inf = float("nan"), float("inf")
    boxes = torch.tensor(
        [
            [0, 0, 10, 10],  # 0: kept
            [nan, 0, 10, 10],  # 1: highest score, NaN: kept, suppresses nothing
            [0, 0, 10, 10],  # 2: duplicate of 0: suppressed
            [0, 0, inf, 10],  # 3: infinite: kept although it covers box 0
            [1, 1, 10, 10],  # 4: IoU 0.81 with box 0: suppressed
            [0, 0, 10, nan],  # 5: NaN duplicate of 0: kept
        ],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.9, 0.95, 0.8, 0.85, 0.7, 0.6])
    expected = torch.tensor([1, 0, 3, 5])  # hand-computed
    assert torch.equal(torchvision.ops.nms(boxes, scores, 0.5), expected)
    assert torch.equal(_run(name, nms, boxes.to(device), scores.to(device), 0.5), expected)
    idxs = torch.zeros(6, dtype=torch.long, device=device)
    got = _run(name, batched_nms, boxes.to(device), scores.to(device), idxs, 0.5)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", BACKENDS)
def test_nan_scores_sort_first_like_torchvision(device, name):
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30]])
    scores = torch.tensor([0.9, float("nan"), 0.5])
    expected = torchvision.ops.nms(boxes, scores, 0.5)
    assert torch.equal(expected, torch.tensor([1, 2]))
    assert torch.equal(_run(name, nms, boxes.to(device), scores.to(device), 0.5), expected)


def test_float64_boxes_run_torchvision_in_float64(device):
    boxes, scores = _clustered_boxes(50, 9).double(), _scores(50, 9).double()
    expected = torchvision.ops.nms(boxes, scores, 0.5)
    assert torch.equal(_run("triton", nms, boxes.to(device), scores.to(device), 0.5), expected)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda b, s: nms(b[:, :3], s, 0.5), ValueError),
        (lambda b, s: nms(b, s[:2], 0.5), ValueError),
        (lambda b, s: nms(b.long(), s, 0.5), TypeError),
        (lambda b, s: nms(b, s, "0.5"), TypeError),
        (lambda b, s: nms(b, s, 0.5, max_keep=-1), ValueError),
        (lambda b, s: batched_nms(b, s, torch.zeros(3), 0.5), TypeError),
        (lambda b, s: batched_nms(b, s, torch.zeros(2, dtype=torch.long), 0.5), ValueError),
        (lambda b, s: nms_padded(b, s, 0.5, max_keep=None), ValueError),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error):
    boxes, scores = _clustered_boxes(3, 0), _scores(3, 0)
    with pytest.raises(error, match="nms"):
        call(boxes, scores)


def test_interpreter_set_after_triton_import_fails_clearly(device, monkeypatch):
    # Simulates TRITON_INTERPRET=1 set after the kernels were compiled as JIT functions.
    from triton.runtime.jit import JITFunction

    if not backend.triton_interpreter_enabled():
        pytest.skip("checks the interpreter mode")
    monkeypatch.setattr(kernels, "_iou_mask_kernel", JITFunction(kernels._iou_mask_kernel.fn))
    boxes, scores = _clustered_boxes(4, 0).to(device), _scores(4, 0).to(device)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1 was set after Triton"):
        _run("triton", nms, boxes, scores, 0.5)
