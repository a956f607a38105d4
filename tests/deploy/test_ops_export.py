"""lazydet's operators survive export: each ``torch.ops.lazydet.*`` op inside a small module
exported with ``torch.export`` (saved, loaded, run) and translated to ONNX
(``lazydet.deploy.onnx_ops``, run by onnxruntime) gives the eager op's values, at input sizes
other than the example's. Fast: the detector-level parity tests are ``-m slow``
(tests/deploy/test_export.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lazydet.deploy.export import capture_data_dependent_shapes, drop_runtime_asserts
from lazydet.ops import batched_nms, multilevel_roi_align, nms, roi_align


class Ops(nn.Module):
    """features ``[1, C, H, W]`` and boxes ``[N, 4]`` -> every op's output."""

    def forward(self, features: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor):
        rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], dim=1)
        single = roi_align(features, rois, (7, 7), 0.25, sampling_ratio=0, aligned=True)
        unaligned = roi_align(features, rois, (5, 5), 0.5, sampling_ratio=2, aligned=False)
        pyramid = [features, nn.functional.avg_pool2d(features, 2)]
        levels = multilevel_roi_align(pyramid, [boxes], (7, 7), [0.25, 0.125], 0, True, 16, 2)
        keep = nms(boxes, scores, 0.5)
        classes = (scores * 3).long().clamp(max=2)
        keep_batched = batched_nms(boxes, scores, classes, 0.5, max_keep=10)
        return single, unaligned, levels, keep, keep_batched


def sample(num_boxes: int, height: int, width: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(1, 4, height, width, generator=generator)
    xy = torch.rand(num_boxes, 2, generator=generator) * torch.tensor([width, height]) * 3
    wh = torch.rand(num_boxes, 2, generator=generator) * 40 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(num_boxes, generator=generator)
    return features, boxes, scores


def export_ops() -> torch.export.ExportedProgram:
    capture_data_dependent_shapes()
    n = torch.export.Dim("n", min=2, max=500)
    h = torch.export.Dim("h", min=8, max=128)
    w = torch.export.Dim("w", min=8, max=128)
    return torch.export.export(
        Ops(),
        sample(40, 24, 32, seed=0),
        dynamic_shapes=({2: 2 * h, 3: 2 * w}, {0: n}, {0: n}),
        strict=True,
    )


CHECKS = [(60, 32, 40, 1), (25, 48, 16, 2)]


def assert_same(got, expected) -> None:
    for g, e in zip(got, expected, strict=True):
        g = torch.as_tensor(g)
        if e.dtype == torch.int64:
            assert torch.equal(g.long(), e)
        else:
            torch.testing.assert_close(g, e, rtol=0, atol=1e-5)


def test_torch_export_of_the_ops_round_trips(tmp_path):
    program = export_ops()
    path = tmp_path / "ops.pt2"
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    for num_boxes, height, width, seed in CHECKS:
        inputs = sample(num_boxes, height, width, seed)
        assert_same(loaded(*inputs), Ops()(*inputs))


def test_onnx_translations_match_the_ops():
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from lazydet.deploy.onnx_ops import custom_translation_table

    program = export_ops()
    drop_runtime_asserts(program)
    onnx_program = torch.onnx.export(
        program, dynamo=True, custom_translation_table=custom_translation_table()
    )
    session = onnxruntime.InferenceSession(
        onnx_program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    for num_boxes, height, width, seed in CHECKS:
        inputs = sample(num_boxes, height, width, seed)
        got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})
        assert_same(got, Ops()(*inputs))
