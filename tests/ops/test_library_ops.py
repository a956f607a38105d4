"""lazydet's ops as ``torch.library`` operators: registration checks (``opcheck``) and tracing.

``opcheck`` runs each op eagerly, under fake tensors, through AOT autograd with dynamic shapes and
through its registered backward, and compares with eager: a wrong fake kernel (shape, dtype), a
wrong schema (an undeclared mutation, an output aliasing an input) or a broken ``register_autograd``
fails here. Both backends are covered on CPU: torchvision's kernel and the Triton kernel in
Triton's interpreter (``TRITON_INTERPRET=1``, set by tests/conftest.py).
"""

from __future__ import annotations

import pytest
import torch
import torchvision

import lazydet.ops  # noqa: F401  (registers torch.ops.lazydet.*)
from lazydet.ops import backend, batched_nms, multilevel_roi_align, nms, roi_align

BACKENDS = ["torchvision", "triton"]


def _features(*shape: int, seed: int = 0, requires_grad: bool = True) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator).requires_grad_(requires_grad)


def _rois() -> torch.Tensor:
    return torch.tensor(
        [
            [0, 4.0, 6.0, 40.0, 30.0],
            [1, -10.0, -6.0, 20.0, 18.0],
            [0, 2.0, 3.0, 60.0, 50.0],
            [1, 12.5, 8.25, 13.0, 8.5],
            [1, 1.0, 1.0, float("nan"), 5.0],  # invalid: pools zeros, no gradient
        ]
    )


def _nms_inputs(count: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator) * 40
    side = torch.rand(count, 2, generator=generator) * 30 + 1
    boxes = torch.cat([corner, corner + side], dim=1)
    scores = torch.rand(count, generator=generator)
    classes = torch.randint(0, 3, (count,), generator=generator)
    return boxes, scores, classes


@pytest.mark.parametrize("name", BACKENDS)
def test_opcheck_roi_align(name):
    args = (_features(2, 3, 13, 17), _rois(), [3, 4], 0.25, 2, True, False)
    with backend.use_backend(name):
        torch.library.opcheck(torch.ops.lazydet.roi_align.default, args)


@pytest.mark.parametrize("name", BACKENDS)
def test_opcheck_multilevel_roi_align(name):
    features = [_features(2, 3, 16, 16, seed=1), _features(2, 3, 8, 8, seed=2)]
    rois = torch.tensor([[0, 1.0, 2.0, 20.0, 30.0], [1, 0.0, 0.0, 60.0, 64.0], [1, 3, 3, 9, 9.0]])
    args = (features, rois, [2, 2], [0.25, 0.125], 2, True, 224.0, 4, False)
    with backend.use_backend(name):
        torch.library.opcheck(torch.ops.lazydet.multilevel_roi_align.default, args)


@pytest.mark.parametrize("name", BACKENDS)
def test_opcheck_roi_align_backward_ops(name):
    grad = torch.randn(5, 3, 3, 4)
    with backend.use_backend(name):
        torch.library.opcheck(
            torch.ops.lazydet.roi_align_backward.default,
            (grad, _rois(), [2, 3, 13, 17], torch.float32, [3, 4], 0.25, 2, True, False),
        )
        torch.library.opcheck(
            torch.ops.lazydet.multilevel_roi_align_backward.default,
            (
                torch.randn(3, 3, 2, 2),
                torch.tensor([[0, 1.0, 2.0, 20.0, 30.0], [1, 0, 0, 60, 64.0], [1, 3, 3, 9, 9.0]]),
                [2, 3, 16, 16, 2, 3, 8, 8],
                torch.float32,
                [2, 2],
                [0.25, 0.125],
                2,
                True,
                224.0,
                4,
                False,
            ),
        )


@pytest.mark.parametrize("name", BACKENDS)
def test_opcheck_nms(name):
    boxes, scores, classes = _nms_inputs()
    with backend.use_backend(name):
        torch.library.opcheck(torch.ops.lazydet.nms.default, (boxes, scores, 0.5, None))
        torch.library.opcheck(torch.ops.lazydet.nms.default, (boxes, scores, 0.3, 5))
        torch.library.opcheck(
            torch.ops.lazydet.batched_nms.default, (boxes, scores, classes, 0.5, None)
        )
        torch.library.opcheck(
            torch.ops.lazydet.batched_nms.default, (boxes, scores, classes, 0.5, 4)
        )


def test_roi_align_op_backward_matches_torchvision():
    """The gradient registered with register_autograd equals torchvision's (valid rois)."""
    rois = _rois()[:4]
    features = _features(2, 3, 13, 17)
    grad = torch.randn(4, 3, 3, 4, generator=torch.Generator().manual_seed(3))
    torch.ops.lazydet.roi_align(features, rois, [3, 4], 0.25, 0, True, False).backward(grad)
    reference = features.detach().clone().requires_grad_(True)
    torchvision.ops.roi_align(reference, rois, (3, 4), 0.25, -1, True).backward(grad)
    torch.testing.assert_close(features.grad, reference.grad, rtol=0, atol=1e-6)


def _public_calls(features, pyramid, boxes, scores, classes):
    pooled = roi_align(features, torch.cat([torch.zeros(4, 1), boxes[:4]], dim=1), 3, 0.25)
    pooled_levels = multilevel_roi_align(pyramid, [boxes[:6], boxes[6:10]], 2, [0.25, 0.125])
    keep = nms(boxes, scores, 0.5)
    keep_classes = batched_nms(boxes, scores, classes, 0.5, max_keep=5)
    return pooled, pooled_levels, keep, keep_classes


def _public_inputs():
    boxes, scores, classes = _nms_inputs()
    features = _features(2, 3, 13, 17, requires_grad=False)
    pyramid = [_features(2, 3, 16, 16, seed=1), _features(2, 3, 8, 8, seed=2)]
    pyramid = [level.detach() for level in pyramid]
    return features, pyramid, boxes, scores, classes


def test_public_ops_trace_without_graph_break():
    """torch.compile sees each public function as checks plus one op call: no graph break."""
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(_public_calls)(*_public_inputs())
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_public_ops_compiled_fullgraph_match_eager():
    """Traced as one graph (fake kernels, NMS's dynamic size through AOT autograd) and run; the
    aot_eager backend skips inductor's C++ compilation, which takes minutes on a small CPU."""
    torch._dynamo.reset()
    inputs = _public_inputs()
    compiled = torch.compile(_public_calls, fullgraph=True, backend="aot_eager")
    for got, expected in zip(compiled(*inputs), _public_calls(*inputs), strict=True):
        assert torch.equal(got, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)")
@pytest.mark.parametrize("name", BACKENDS)
def test_opcheck_on_cuda(name):
    """The same registrations on CUDA: the compiled Triton kernels (not the interpreter) and
    torchvision's CUDA kernels, with their fake kernels and ROIAlign's backward."""

    def cuda(value):
        return (
            value.detach().cuda().requires_grad_(value.requires_grad)
            if torch.is_tensor(value)
            else value
        )

    features = cuda(_features(2, 3, 13, 17))
    levels = [cuda(_features(2, 3, 16, 16, seed=1)), cuda(_features(2, 3, 8, 8, seed=2))]
    level_rois = torch.tensor([[0, 1.0, 2.0, 20.0, 30.0], [1, 0, 0, 60, 64.0], [1, 3, 3, 9, 9.0]])
    boxes, scores, classes = (cuda(t) for t in _nms_inputs())
    with backend.use_backend(name):
        torch.library.opcheck(
            torch.ops.lazydet.roi_align.default,
            (features, cuda(_rois()), [3, 4], 0.25, 2, True, False),
        )
        torch.library.opcheck(
            torch.ops.lazydet.multilevel_roi_align.default,
            (levels, cuda(level_rois), [2, 2], [0.25, 0.125], 2, True, 224.0, 4, False),
        )
        torch.library.opcheck(torch.ops.lazydet.nms.default, (boxes, scores, 0.5, None))
        torch.library.opcheck(
            torch.ops.lazydet.batched_nms.default, (boxes, scores, classes, 0.5, None)
        )
