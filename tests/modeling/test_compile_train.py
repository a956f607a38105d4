"""torch.compile of a whole Mask R-CNN in training on CPU: graph breaks inside lazydet's own code
are the documented ones only (docs/ops.md, "torch.compile"), and three SGD steps of the compiled
model give eager's losses (to 1e-4) and weights. The model is the COCO recipe with a ResNet-18
FPN, seeded random weights and heads sized for ``shapes`` (scripts/compile_graph_breaks.py builds
it and the two generated 128x128 training images, and prints the breaks with ``--train``). Fast:
the pieces that broke the graph (sampling, ground-truth checks) compile whole."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import break_sites, compile_graph_breaks

from lazydet.modeling.meta_arch.preprocessing import check_gt_instances
from lazydet.modeling.sampling import subsample_labels
from lazydet.structures import Boxes, Instances

graph_breaks = compile_graph_breaks()

STEPS = 3
# The breaks left in the training forward and where they are (docs/ops.md lists why each stays).
EXPECTED_TRAINING_BREAKS = {"modeling/roi_heads/mask_head.py:mask_rcnn_loss": 3}


def _train(model: torch.nn.Module, inputs: list[dict], backend: str | None):
    """``STEPS`` SGD steps on the same batch; per step the losses (detached), and the model.

    The global generator is seeded before each step: the RPN and the ROI heads sample their
    training anchors / proposals with ``torch.randperm``, which the compiled graph runs with the
    same generator, so both runs draw the same samples."""
    model.train()
    forward = model if backend is None else torch.compile(model, backend=backend)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9)
    history = []
    for step in range(STEPS):
        torch.manual_seed(1000 + step)
        losses = forward(inputs)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        history.append({name: loss.detach() for name, loss in losses.items()})
    return history


def _check_same_training(eager_model, eager_history, compiled_model, compiled_history):
    for step, (got, expected) in enumerate(zip(compiled_history, eager_history, strict=True)):
        assert sorted(got) == sorted(expected)
        assert sorted(expected) == [
            "loss_box_reg",
            "loss_cls",
            "loss_mask",
            "loss_rpn_cls",
            "loss_rpn_loc",
        ]
        for name in expected:
            assert expected[name].item() > 0, f"step {step}: {name} is zero"
            torch.testing.assert_close(
                got[name], expected[name], rtol=0, atol=1e-4, msg=f"step {step}: {name}"
            )
    # The steps moved the weights, and both runs moved them alike.
    expected_state = eager_model.state_dict()
    for name, value in compiled_model.state_dict().items():
        torch.testing.assert_close(value, expected_state[name], rtol=1e-4, atol=1e-5, msg=name)


def test_subsample_labels_compiles_whole_and_draws_as_eager(capture_data_dependent_shapes):
    """The sampler's ``randperm`` of a data-dependent count traces (it broke the graph once per
    call), and the compiled sampler draws eager's elements from the same global generator."""
    labels = torch.randint(-1, 3, (200,), generator=torch.Generator().manual_seed(0))

    def sample(labels):
        return subsample_labels(labels, num_samples=32, positive_fraction=0.25, background_label=0)

    compiled = torch.compile(sample, fullgraph=True, backend="aot_eager")
    for seed in range(3):
        torch.manual_seed(seed)
        expected = sample(labels)
        torch.manual_seed(seed)
        got = compiled(labels)
        for got_idxs, expected_idxs in zip(got, expected, strict=True):
            assert torch.equal(got_idxs, expected_idxs)
    assert len(expected[0]) == 8 and len(expected[1]) == 24


def test_compiled_ground_truth_checks_stay_in_the_graph(capture_data_dependent_shapes):
    """``check_gt_instances`` compiles without a break and still refuses NaN boxes and classes
    out of range, from inside the graph (``RuntimeError`` with the check's message)."""

    def check(inputs):
        return check_gt_instances(inputs, num_classes=3, owner="Model")

    compiled = torch.compile(check, fullgraph=True, backend="aot_eager")

    def inputs(boxes, classes):
        instances = Instances(
            (64, 64), gt_boxes=Boxes(torch.tensor(boxes)), gt_classes=torch.tensor(classes)
        )
        return [{"image": torch.zeros(3, 64, 64), "instances": instances}]

    good = inputs([[1.0, 2.0, 30.0, 40.0]], [2])
    assert compiled(good)[0] is good[0]["instances"]
    with pytest.raises(RuntimeError, match="input 0: gt_boxes have NaN or infinite"):
        compiled(inputs([[1.0, float("nan"), 30.0, 40.0]], [2]))
    with pytest.raises(RuntimeError, match=r"input 0: gt_classes outside \[0, 3\)"):
        compiled(inputs([[1.0, 2.0, 30.0, 40.0]], [3]))


@pytest.fixture(scope="module")
def shapes_batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    inputs = graph_breaks.sample_training_inputs(num_images=2, image_size=128, root=root)
    assert all(len(x["instances"]) > 0 for x in inputs)
    return inputs


@pytest.mark.slow
def test_compiled_mask_rcnn_training_matches_eager(capture_data_dependent_shapes, shapes_batch):
    model = graph_breaks.build_detector("mask_rcnn_fpn", dataset="shapes").train()
    initial = copy.deepcopy(model.state_dict())

    explanation = graph_breaks.explain(model, shapes_batch)
    assert break_sites(explanation) == EXPECTED_TRAINING_BREAKS
    model.load_state_dict(initial)  # explain ran the forward once

    torch._dynamo.reset()
    eager_model = copy.deepcopy(model)
    eager_history = _train(eager_model, shapes_batch, backend=None)
    moved = [
        name
        for name, value in eager_model.state_dict().items()
        if value.is_floating_point() and not torch.equal(value, initial[name])
    ]
    assert any("roi_heads.mask_head" in name for name in moved)
    assert any("backbone.bottom_up" in name for name in moved)

    # aot_eager traces what inductor traces (dynamo + AOT autograd: forward and backward graphs,
    # the ops' fake kernels and registered backward) without minutes of C++ compilation per
    # graph on a small CPU; inductor's numerics are the default backend's business.
    compiled_model = copy.deepcopy(model)
    compiled_history = _train(compiled_model, shapes_batch, backend="aot_eager")
    _check_same_training(eager_model, eager_history, compiled_model, compiled_history)
