"""Exported detectors give the eager detections: ``torch.export`` (``.pt2``) and ONNX
(onnxruntime), for Faster / Mask / Keypoint R-CNN and RetinaNet.

The models are the COCO recipes with a ResNet-18 FPN and seeded random weights
(``scripts/compile_graph_breaks.build_detector``: score threshold 0 so every detection counts).
Each is exported once at 128x160 with dynamic height and width, then run at two other sizes and
compared with the eager model at the same input: same count, boxes to 1e-3 px, scores to 1e-4,
labels equal, box-relative mask probabilities to 1e-4 (the pasted masks' IoU >= 0.99),
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

from lazydet.deploy import export_program
from lazydet.deploy.graph import DetectionGraph

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "compile_graph_breaks", ROOT / "scripts" / "compile_graph_breaks.py"
)
graph_breaks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(graph_breaks)

EXPORT_SIZE = (128, 160)
CHECK_SIZES = ((96, 128), (192, 224))
DETECTORS = ("faster_rcnn_fpn", "mask_rcnn_fpn", "keypoint_rcnn_fpn", "retinanet_fpn")


def images(seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(3, h, w, generator=generator) * 255).round() for h, w in CHECK_SIZES]


def assert_same_detections(got, expected, names) -> None:
    got, expected = dict(zip(names, got)), dict(zip(names, expected))
    assert got["boxes"].shape == expected["boxes"].shape
    assert len(expected["boxes"]) > 0
    torch.testing.assert_close(got["boxes"], expected["boxes"], rtol=0, atol=1e-3)
    torch.testing.assert_close(got["scores"], expected["scores"], rtol=0, atol=1e-4)
    assert torch.equal(got["labels"].long(), expected["labels"].long())
    if "mask_probs" in expected:
        torch.testing.assert_close(got["mask_probs"], expected["mask_probs"], rtol=0, atol=1e-4)
    if "keypoints" in expected:
        torch.testing.assert_close(got["keypoints"], expected["keypoints"], rtol=0, atol=1e-3)


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
    names = (
        ["boxes", "scores", "labels"]
        + (["mask_probs"] if graph.has_masks else [])
        + (["keypoints"] if graph.has_keypoints else [])
    )
    with torch.no_grad():
        for image, got in zip(inputs, outputs, strict=True):
            assert_same_detections(got, graph(image), names)
