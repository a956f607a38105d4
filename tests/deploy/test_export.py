"""Exported detectors give the eager detections: ``torch.export`` (``.pt2``) and ONNX
(onnxruntime), for Faster / Mask / Keypoint R-CNN and RetinaNet.

The models are the COCO recipes with a ResNet-18 FPN and seeded random weights
(``scripts/compile_graph_breaks.build_detector``: score threshold 0 so every detection counts).
Each is exported once at 150x210 with dynamic height and width, then run at two other sizes and
compared, after ``lazydet.deploy.postprocess``, with the eager model's own detections at the same
input: same count, boxes to 1e-3 px, scores to 1e-4, labels equal, pasted masks IoU >= 0.99,
keypoints to 1e-3. The ``.pt2`` is loaded and run in a fresh process that imports only
``lazydet.ops`` (not lazydet's models).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lazydet.deploy import export_program, postprocess
from lazydet.deploy.export import export_onnx
from lazydet.deploy.graph import DetectionGraph, output_names

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "compile_graph_breaks", ROOT / "scripts" / "compile_graph_breaks.py"
)
graph_breaks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graph_breaks)

# RetinaNet's P7 (stride 128) needs sizes above 128.
EXPORT_SIZE = (150, 210)
CHECK_SIZES = ((192, 160), (230, 297))
DETECTORS = ("faster_rcnn_fpn", "mask_rcnn_fpn", "keypoint_rcnn_fpn", "retinanet_fpn")


def images(seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(3, h, w, generator=generator) * 255).round() for h, w in CHECK_SIZES]


def post_metadata(graph: DetectionGraph) -> dict:
    """What ``postprocess`` reads of the metadata (``build_metadata`` needs a Predictor)."""
    model = graph.model
    head = getattr(model.roi_heads, "keypoint_head", None) if hasattr(model, "roi_heads") else None
    return {
        "outputs": output_names(has_masks=graph.has_masks, has_keypoints=graph.has_keypoints),
        "mask_threshold": getattr(model, "mask_threshold", 0.5),
        "mask_paste": getattr(model, "mask_paste", "torchvision"),
        "keypoint_score_type": getattr(head, "score_type", "logit"),
    }


def match_detections(got, expected) -> torch.Tensor:
    """Index into ``got`` of the detection matching each of ``expected`` (one to one; a
    detection without a match keeps its own position, so the comparison below reports it)."""
    close = (got.pred_boxes.tensor[None] - expected.pred_boxes.tensor[:, None]).abs().amax(
        2
    ) <= 1e-3
    close &= (got.scores[None] - expected.scores[:, None]).abs() <= 1e-4
    close &= got.pred_classes[None] == expected.pred_classes[:, None]
    taken: set[int] = set()
    order = []
    for i in range(len(expected)):
        candidates = [int(j) for j in torch.nonzero(close[i]).flatten() if int(j) not in taken]
        choice = i if i not in taken and (not candidates or i in candidates) else None
        if choice is None:
            choice = (
                candidates[0] if candidates else next(j for j in range(len(got)) if j not in taken)
            )
        taken.add(choice)
        order.append(choice)
    return torch.tensor(order, dtype=torch.long)


def assert_matches_eager(model, graph, image, outputs) -> None:
    """``outputs`` of the exported graph on ``image``, post-processed, against the eager model's
    detections (``model.inference`` with its own postprocessing) at the image's size."""
    height, width = int(image.shape[1]), int(image.shape[2])
    with torch.no_grad():
        expected = model.inference([{"image": image, "height": height, "width": width}])
    expected = expected[0]["instances"]
    got = postprocess(
        [torch.as_tensor(t) for t in outputs],
        post_metadata(graph),
        input_size=(height, width),
        original_size=(height, width),
    )
    assert len(got) == len(expected) > 0
    # Detections are a set: with random weights many scores tie to ~1e-7, and onnxruntime's
    # convolutions may order such near-ties differently. Each eager detection must have its own
    # exported one with the same label, box within 1e-3 px and score within 1e-4.
    order = match_detections(got, expected)
    got = got[order]
    torch.testing.assert_close(got.pred_boxes.tensor, expected.pred_boxes.tensor, rtol=0, atol=1e-3)
    torch.testing.assert_close(got.scores, expected.scores, rtol=0, atol=1e-4)
    assert torch.equal(got.pred_classes, expected.pred_classes)
    if expected.has("pred_masks"):
        a, b = got.pred_masks.flatten(1), expected.pred_masks.flatten(1)
        union = (a | b).sum(1)
        iou = torch.where(union > 0, (a & b).sum(1) / union.clamp(min=1), 1.0)
        assert iou.min() >= 0.99, iou.min()
    if expected.has("pred_keypoints"):
        torch.testing.assert_close(got.pred_keypoints, expected.pred_keypoints, rtol=0, atol=1e-3)


_LOAD_AND_RUN = """
import sys, torch
import lazydet.ops  # the operators' registration, nothing else of lazydet
program = torch.export.load(sys.argv[1])
images = torch.load(sys.argv[2])
with torch.no_grad():
    outputs = [[t.clone() for t in program.module()(image)] for image in images]
torch.save(outputs, sys.argv[3])
loaded = sorted(m for m in sys.modules if m.startswith("lazydet.") and not m.startswith("lazydet.ops"))
print(",".join(loaded))
"""


@pytest.mark.slow
@pytest.mark.parametrize("experiment", DETECTORS)
def test_torch_export_matches_eager_in_a_fresh_process(experiment, tmp_path):
    model = graph_breaks.build_detector(experiment)
    graph = DetectionGraph(model=model)
    program = export_program(model, height=EXPORT_SIZE[0], width=EXPORT_SIZE[1])
    path = tmp_path / "model.pt2"
    torch.export.save(program, str(path))
    inputs = images()
    torch.save(inputs, tmp_path / "images.pt")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _LOAD_AND_RUN,
            str(path),
            str(tmp_path / "images.pt"),
            str(tmp_path / "out.pt"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded_modules = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert "lazydet.modeling" not in loaded_modules, loaded_modules
    outputs = torch.load(tmp_path / "out.pt")
    for image, got in zip(inputs, outputs, strict=True):
        assert_matches_eager(model, graph, image, got)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", DETECTORS)
def test_onnx_matches_eager_in_onnxruntime(experiment, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model = graph_breaks.build_detector(experiment)
    graph = DetectionGraph(model=model)
    program = export_program(model, height=EXPORT_SIZE[0], width=EXPORT_SIZE[1])
    path = tmp_path / "model.onnx"
    export_onnx(program, path, post_metadata(graph))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for image in images():
        outputs = session.run(None, {session.get_inputs()[0].name: image.numpy()})
        assert_matches_eager(model, graph, image, [torch.from_numpy(o) for o in outputs])
