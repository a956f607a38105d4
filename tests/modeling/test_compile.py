"""torch.compile of whole detectors in inference on CPU: graph breaks inside lazydet's own code
are the documented ones only (docs/ops.md, "torch.compile"), and the compiled model gives the
eager detections. The models are the COCO recipes with a ResNet-18 FPN and random weights
(scripts/compile_graph_breaks.py builds them and prints the breaks)."""

from __future__ import annotations

import pytest
import torch
from helpers import break_sites, compile_graph_breaks

graph_breaks = compile_graph_breaks()

# The breaks left per detector and where they are (docs/ops.md lists why each stays).
EXPECTED_BREAKS = {
    "faster_rcnn_fpn": {},
    "mask_rcnn_fpn": {"modeling/postprocessing.py:paste_masks_in_image": 1},
    "keypoint_rcnn_fpn": {"modeling/roi_heads/keypoint_head.py:heatmaps_to_keypoints": 6},
    "retinanet_fpn": {},
}


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(EXPECTED_BREAKS))
def test_compiled_detector_matches_eager_with_only_documented_breaks(
    experiment, capture_data_dependent_shapes
):
    model = graph_breaks.build_detector(experiment)
    inputs = graph_breaks.sample_inputs()
    explanation = graph_breaks.explain(model, inputs)
    assert break_sites(explanation) == EXPECTED_BREAKS[experiment]

    torch._dynamo.reset()
    eager = model(inputs)
    # aot_eager traces what inductor traces (dynamo + AOT autograd with the ops' fake kernels)
    # without minutes of C++ compilation per graph on a small CPU.
    compiled = torch.compile(model, backend="aot_eager")(inputs)
    assert len(compiled) == len(eager)
    for got, expected in zip(compiled, eager, strict=True):
        got, expected = got["instances"], expected["instances"]
        assert len(got) == len(expected) > 0
        torch.testing.assert_close(
            got.pred_boxes.tensor, expected.pred_boxes.tensor, rtol=0, atol=1e-4
        )
        torch.testing.assert_close(got.scores, expected.scores, rtol=0, atol=1e-4)
        assert torch.equal(got.pred_classes, expected.pred_classes)
        for field in ("pred_masks", "pred_keypoints"):
            if expected.has(field):
                torch.testing.assert_close(
                    got.get(field).float(), expected.get(field).float(), rtol=0, atol=1e-4
                )
