"""Benchmark: lazydet against torchvision on the same detector with the same weights.

Builds torchvision's ``maskrcnn_resnet50_fpn`` (or ``fasterrcnn_resnet50_fpn`` with ``--model
faster_rcnn``, ``retinanet_resnet50_fpn`` with ``--model retinanet``) with random weights, frozen batch norms (as torchvision's pretrained detectors have)
and class biases that let ~100 detections through (so the mask head runs as on real images),
loads the same weights into lazydet's torchvision preset (``conf/torchvision_*_fpn.py``) with
``load_weights``, checks both return the same detections, then times, interleaved, the median of
``--runs`` forward passes after ``--warmup`` on one image (``--size``, default 800x1066):

* ``torchvision``: the torchvision model;
* ``lazydet``: the lazydet model as built;
* ``lazydet optimized``: after ``optimize_for_inference`` (frozen batch norms folded into the
  convolutions, channels-last weights);
* ``lazydet optimized, bool masks`` (Mask R-CNN): the same with the default
  ``mask_threshold=0.5`` (masks pasted thresholded, as predict and evaluation get them; the
  three above return float mask probabilities, as torchvision does); ``--ablation`` adds each
  of the two alone, ``--compile`` the same plus ``torch.compile`` of the backbone (for a fixed
  input size);
* ``--compile-model``: ``torch.compile`` of the whole detector (``lazydet torch.compile (whole
  model)``: batch norms folded, weights contiguous, Inductor with weight freezing and without
  layout optimisation, the input size fixed, dynamo's flags for data-dependent sizes set as docs/ops.md says), checked to give the
  optimized model's detections (same count, boxes to 1e-3 px) before it is timed;
* ``--exported``: the optimized model exported with ``torch.export`` (``lazydet exported
  (.pt2)``) and as ONNX run by onnxruntime (``lazydet onnxruntime``), both with the Python
  post-step (mask paste), as ``lazydet.deploy.ExportedPredictor`` runs them (docs/deploy.md).

All three run under ``torch.inference_mode()``. ``--train`` also times one training step (forward,
backward, SGD step) on a batch of 2 images (``--train-size``) with synthetic ground truth, for
both libraries. CPU by default with ``torch.set_num_threads(--threads)``; ``--device cuda`` times
on a GPU (synchronised).

Usage: ``python scripts/bench_inference.py [--model mask_rcnn|faster_rcnn|retinanet] [--runs 5] [--train]``
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import detection
from torchvision.ops import FrozenBatchNorm2d

from lazydet.checkpoint import load_weights
from lazydet.config import compose, instantiate
from lazydet.modeling.optimize import optimize_for_inference
from lazydet.structures import BitMasks, Boxes, Instances

NUM_CLASSES = 80  # COCO; torchvision's R-CNNs add a background class
TWO_STAGE = ("mask_rcnn", "faster_rcnn")  # label = class + 1 in torchvision
# --model: torchvision's builder and the lazydet preset loading its weights.
TORCHVISION_MODELS = {
    "mask_rcnn": (detection.maskrcnn_resnet50_fpn, "torchvision_mask_rcnn_fpn"),
    "faster_rcnn": (detection.fasterrcnn_resnet50_fpn, "torchvision_faster_rcnn_fpn"),
    "retinanet": (detection.retinanet_resnet50_fpn, "torchvision_retinanet_fpn"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=list(TORCHVISION_MODELS), default="mask_rcnn")
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1066], metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train", action="store_true", help="also time a training step")
    parser.add_argument("--skip-inference", action="store_true", help="with --train: only train")
    parser.add_argument("--train-size", type=int, nargs=2, default=[800, 1066], metavar=("H", "W"))
    parser.add_argument("--train-runs", type=int, default=3)
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also time batch-norm folding alone and channels-last alone",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time optimize_for_inference(compile_backbone=True) (compiles first)",
    )
    parser.add_argument(
        "--compile-model",
        action="store_true",
        help="also time torch.compile of the whole optimized detector (compiles first; checked "
        "against the optimized model's detections)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--exported",
        action="store_true",
        help="also time the optimized model exported with torch.export (.pt2) and as ONNX in "
        "onnxruntime (lazydet.deploy; CPU), each with the Python post-step (mask paste)",
    )
    return parser.parse_args(argv)


def _freeze_batchnorms(module: nn.Module) -> None:
    """BatchNorm2d -> FrozenBatchNorm2d, as torchvision builds its pretrained detectors."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            n = child.num_features
            frozen.weight.copy_(torch.rand(n) * 0.5 + 0.5)
            frozen.bias.copy_(torch.randn(n) * 0.1)
            frozen.running_mean.copy_(torch.randn(n) * 0.1)
            frozen.running_var.copy_(torch.rand(n) + 0.5)
            setattr(module, name, frozen)
        else:
            _freeze_batchnorms(child)


def build_models(kind: str, size: tuple[int, int]) -> tuple[nn.Module, nn.Module]:
    """(torchvision model, lazydet model) with the same random weights."""
    min_size, max_size = min(size), 1333
    builder, experiment = TORCHVISION_MODELS[kind]
    tv_model = builder(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES + (kind in TWO_STAGE),
        min_size=min_size, max_size=max_size,
    )  # fmt: skip
    with torch.no_grad():
        _freeze_batchnorms(tv_model)
        if kind in TWO_STAGE:
            # Like a trained model on a busy image: ~100 boxes pass the 0.05 score threshold.
            predictor = tv_model.roi_heads.box_predictor
            nn.init.normal_(predictor.cls_score.bias, 0.0, 1.0)
            predictor.cls_score.bias[0] -= 3.0
            nn.init.normal_(tv_model.rpn.head.cls_logits.bias, 0.0, 1.0)
        else:
            nn.init.normal_(tv_model.head.classification_head.cls_logits.bias, -3.0, 1.0)
    # torchvision trains layer2..layer4 of a pretrained backbone (trainable_backbone_layers=3);
    # lazydet's default freeze_at=2 is the same.
    for part in (tv_model.backbone.body.conv1, tv_model.backbone.body.layer1):
        part.requires_grad_(False)
    cfg = compose(experiment, ["dataset=coco2017"])
    model = instantiate(cfg.model)
    report = load_weights(model, tv_model.state_dict())
    unused = [
        n for n in report.missing if ".lateral_convs.0." not in n and ".output_convs.0." not in n
    ]
    if unused or report.unexpected or report.mismatched:
        raise RuntimeError(f"weights did not load completely:\n{report}")
    if kind == "mask_rcnn":
        model.mask_threshold = None  # torchvision returns mask probabilities too
    return tv_model.eval(), model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    functions: dict[str, Callable[[], object]], runs: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each function; calls alternate so load changes hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for index in range(warmup + runs):
        for name, function in functions.items():
            _sync(device)
            start = time.perf_counter()
            function()
            _sync(device)
            if index >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def check_same_detections(tv_output: dict, instances: Instances, label_offset: int) -> str:
    """Compare detections as sets: detections with equal scores (ties are common with random
    weights on flat image regions) may come in another order in the two libraries."""
    if len(instances) != len(tv_output["boxes"]):
        return f"MISMATCH: {len(instances)} vs {len(tv_output['boxes'])} detections"
    same = ((instances.scores[:, None] - tv_output["scores"][None]).abs() < 1e-5) & (
        (instances.pred_classes[:, None] + label_offset) == tv_output["labels"][None]
    )
    distance = torch.cdist(instances.pred_boxes.tensor, tv_output["boxes"], p=float("inf"))
    distance = distance.masked_fill(~same, float("inf"))
    box_error = distance.min(dim=0).values.max().item()
    return (
        f"{len(instances)} detections, each matched by score and label to a box within "
        f"{box_error:.2e} px"
    )


def exported_variants(
    args: argparse.Namespace, model: nn.Module, image: torch.Tensor, device: torch.device
) -> dict[str, Callable[[], object]]:
    """``lazydet.deploy`` timings: the ``ExportedProgram`` and onnxruntime on the same image
    (0-255), each followed by ``postprocess`` (mask paste at the image size), as
    ``ExportedPredictor`` runs them (without its resize: the image is at the model's size)."""
    import tempfile
    from pathlib import Path

    from lazydet.deploy import DetectionGraph, export_program, postprocess
    from lazydet.deploy.export import export_onnx
    from lazydet.deploy.graph import output_names

    if device.type != "cpu":
        raise SystemExit("--exported times on CPU only.")
    graph = DetectionGraph(model=model)
    metadata = {
        "outputs": output_names(has_masks=graph.has_masks, has_keypoints=graph.has_keypoints),
        "mask_threshold": getattr(model, "mask_threshold", 0.5),
        "mask_paste": getattr(model, "mask_paste", "torchvision"),
    }
    size = (int(image.shape[1]), int(image.shape[2]))
    start = time.perf_counter()
    # Fixed size: with the torchvision preset (anchors spaced by padded size // feature size)
    # dynamic height/width fail on a guard the solver cannot prove (docs/deploy.md).
    program = export_program(model, height=size[0], width=size[1], dynamic=False)
    print(f"torch.export took {time.perf_counter() - start:.1f} s")
    module = program.module()

    def run_program() -> object:
        with torch.no_grad():
            outputs = module(image)
        return postprocess(outputs, metadata, input_size=size, original_size=size)

    variants: dict[str, Callable[[], object]] = {"lazydet exported (.pt2)": run_program}
    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime is not installed (pip install 'lazydet[export]'): no ONNX column")
        return variants
    folder = Path(tempfile.mkdtemp(prefix="lazydet_bench_"))
    start = time.perf_counter()
    fixed = export_program(model, height=size[0], width=size[1], dynamic=False)
    export_onnx(fixed, folder / "m.onnx", metadata)
    print(f"ONNX export took {time.perf_counter() - start:.1f} s")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(folder / "m.onnx"), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    array = image.cpu().numpy()

    def run_onnx() -> object:
        outputs = [torch.from_numpy(o) for o in session.run(None, {name: array})]
        return postprocess(outputs, metadata, input_size=size, original_size=size)

    variants["lazydet onnxruntime"] = run_onnx
    return variants


def compile_whole_model(
    model: nn.Module, optimized: nn.Module, lazydet_inputs: list[dict]
) -> Callable[[], object]:
    """``torch.compile`` of the whole detector after ``optimize_for_inference`` with batch norms
    folded but weights left contiguous, compiled now and checked against the optimized model's
    detections (same count, boxes to 1e-3 px, scores to 1e-4).

    Dynamo traces NMS, ``nonzero`` and score thresholds into the graph (data-dependent sizes)
    only with ``capture_dynamic_output_shape_ops`` / ``capture_scalar_outputs`` (docs/ops.md,
    "torch.compile"); the mask paste stays eager (the one documented graph break). The input
    size is fixed (``dynamic=False``) and Inductor freezes the weights, as the backbone-only
    variant does. No channels-last weights, and Inductor's own ``layout_optimization`` (which
    makes them channels-last) off: the ROI heads' convolutions run on a data-dependent number of
    ROIs, for which torch's fake convolution cannot tell that a channels-last weight makes a
    channels-last output, and the compiled code then fails its stride check (torch 2.14)."""
    torch._dynamo.config.capture_dynamic_output_shape_ops = True
    torch._dynamo.config.capture_scalar_outputs = True
    folded = optimize_for_inference(copy.deepcopy(model), channels_last=False)
    compiled = torch.compile(
        folded, dynamic=False, options={"freezing": True, "layout_optimization": False}
    )
    start = time.perf_counter()
    with torch.inference_mode():
        got = compiled(lazydet_inputs)[0]["instances"]
    print(f"compiling the whole model took {time.perf_counter() - start:.1f} s")
    with torch.inference_mode():
        expected = optimized(lazydet_inputs)[0]["instances"]
    if len(got) != len(expected):
        raise SystemExit(
            f"torch.compile (whole model) gave {len(got)} detections, the optimized model "
            f"{len(expected)}: not timing a model that detects differently."
        )
    # As sets (detections with equal scores may come in another order): each optimized
    # detection needs a compiled one of its label, its score to 1e-4 and its box to 1e-3 px.
    same = ((expected.scores[:, None] - got.scores[None]).abs() <= 1e-4) & (
        expected.pred_classes[:, None] == got.pred_classes[None]
    )
    distance = torch.cdist(expected.pred_boxes.tensor, got.pred_boxes.tensor, p=float("inf"))
    matched = distance.masked_fill(~same, float("inf")).min(dim=1).values
    box_error = matched.max().item() if len(matched) else 0.0
    if box_error > 1e-3:
        raise SystemExit(
            f"torch.compile (whole model) detections differ from the optimized model's: the "
            f"worst has no compiled detection of its label and score within {box_error:.2e} px "
            "(allowed 1e-3)."
        )
    print(
        f"torch.compile (whole model) vs optimized: {len(got)} detections, each matched by "
        f"label and score to a box within {box_error:.2e} px"
    )

    def run() -> object:
        with torch.inference_mode():
            return compiled(lazydet_inputs)

    return run


def _training_inputs(kind: str, size: tuple[int, int], device: torch.device, seed: int):
    """Two images with 5 objects each, as torchvision targets and as lazydet inputs."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    tv_images, tv_targets, lazydet_inputs = [], [], []
    for _ in range(2):
        image = torch.rand(3, height, width, generator=generator)
        xy = torch.rand(5, 2, generator=generator) * torch.tensor([width * 0.6, height * 0.6])
        wh = 32 + torch.rand(5, 2, generator=generator) * torch.tensor([width * 0.3, height * 0.3])
        boxes = torch.cat([xy, xy + wh], dim=1)
        classes = torch.randint(0, NUM_CLASSES, (5,), generator=generator)
        masks = torch.zeros(5, height, width, dtype=torch.bool)
        for i, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
            masks[i, y1:y2, x1:x2] = True
        target = {"boxes": boxes, "labels": classes + (1 if kind in TWO_STAGE else 0)}
        instances = Instances((height, width), gt_boxes=Boxes(boxes), gt_classes=classes)
        if kind == "mask_rcnn":
            target["masks"] = masks.to(torch.uint8)
            instances.gt_masks = BitMasks(masks)
        tv_images.append(image.to(device))
        tv_targets.append({k: v.to(device) for k, v in target.items()})
        lazydet_inputs.append({"image": (image * 255).to(device), "instances": instances})
    return tv_images, tv_targets, lazydet_inputs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = tuple(args.size)
    tv_model, model = build_models(args.model, size)
    tv_model.to(device)
    model.to(device)
    optimized = optimize_for_inference(copy.deepcopy(model))
    label_offset = 1 if args.model in TWO_STAGE else 0

    generator = torch.Generator().manual_seed(args.seed)
    coarse = torch.rand(1, 3, size[0] // 32, size[1] // 32, generator=generator)
    image = nn.functional.interpolate(coarse, size=size, mode="bilinear")[0].clamp(0, 1).to(device)
    lazydet_inputs = [{"image": image * 255, "height": size[0], "width": size[1]}]

    print(f"device={device} threads={torch.get_num_threads()} model={args.model} image={size}")
    with torch.inference_mode():
        tv_output = tv_model([image])[0]
        plain = model(lazydet_inputs)[0]["instances"]
        fast = optimized(lazydet_inputs)[0]["instances"]
    print("lazydet vs torchvision:", check_same_detections(tv_output, plain, label_offset))
    print("optimized vs torchvision:", check_same_detections(tv_output, fast, label_offset))
    coarsest_stride = 64 if args.model in TWO_STAGE else 128
    padded = [-(-side // 32) * 32 for side in size]
    if any(side % coarsest_stride for side in padded):
        print(
            f"  (padded size {padded} is not a multiple of {coarsest_stride}: torchvision spaces "
            "the coarsest levels' anchors by padded size // feature size, not the stride, so "
            "detections from those levels may differ; see docs/weights.md)"
        )

    if not args.skip_inference:
        time_inference(args, tv_model, model, optimized, image, lazydet_inputs, device)
    if args.train:
        time_training(args, tv_model, model, device)


def time_inference(
    args: argparse.Namespace,
    tv_model: nn.Module,
    model: nn.Module,
    optimized: nn.Module,
    image: torch.Tensor,
    lazydet_inputs: list[dict],
    device: torch.device,
) -> None:
    """Forward passes of torchvision, lazydet and optimised lazydet, interleaved."""

    def infer(module: nn.Module, inputs: object) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return module(inputs)

        return run

    variants = {
        "torchvision": infer(tv_model, [image]),
        "lazydet": infer(model, lazydet_inputs),
        "lazydet optimized": infer(optimized, lazydet_inputs),
    }
    if args.model == "mask_rcnn":
        # What predict and evaluation get by default: bool masks (pasted thresholded).
        thresholded = copy.copy(optimized)  # shares the modules
        thresholded.mask_threshold = 0.5
        variants["lazydet optimized, bool masks"] = infer(thresholded, lazydet_inputs)
    if args.ablation:
        folded = optimize_for_inference(copy.deepcopy(model), channels_last=False)
        nhwc = optimize_for_inference(copy.deepcopy(model), fold_batchnorm=False)
        variants["lazydet fold BN only"] = infer(folded, lazydet_inputs)
        variants["lazydet NHWC only"] = infer(nhwc, lazydet_inputs)
    if args.compile:
        compiled = optimize_for_inference(copy.deepcopy(model), compile_backbone=True)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(lazydet_inputs)
        print(f"compiling the backbone took {time.perf_counter() - start:.1f} s")
        variants["lazydet optimized+compile"] = infer(compiled, lazydet_inputs)
    if args.compile_model:
        variants["lazydet torch.compile (whole model)"] = compile_whole_model(
            model, optimized, lazydet_inputs
        )
    if args.exported:
        variants.update(exported_variants(args, optimized, image * 255, device))
    times = time_interleaved(variants, args.runs, args.warmup, device)
    baseline = statistics.median(times["torchvision"])
    print(f"\nInference, median of {args.runs} after {args.warmup} warm-up:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:36s} {median * 1000:9.1f} ms  ({median / baseline:.2f}x torchvision)")


def time_training(
    args: argparse.Namespace, tv_model: nn.Module, model: nn.Module, device: torch.device
) -> None:
    """One SGD step (forward, backward, update) on 2 images, both libraries, interleaved."""
    tv_images, tv_targets, train_inputs = _training_inputs(
        args.model, tuple(args.train_size), device, args.seed
    )
    tv_model.train()
    model.train()
    tv_optimizer = torch.optim.SGD([p for p in tv_model.parameters() if p.requires_grad], lr=1e-4)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(module: nn.Module, optim: torch.optim.Optimizer, call: Callable[[], dict]):
        def run() -> None:
            losses = call()
            optim.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optim.step()

        return run

    train_times = time_interleaved(
        {
            "torchvision": step(tv_model, tv_optimizer, lambda: tv_model(tv_images, tv_targets)),
            "lazydet": step(model, optimizer, lambda: model(train_inputs)),
        },
        args.train_runs,
        1,
        device,
    )
    baseline = statistics.median(train_times["torchvision"])
    print(
        f"\nTraining step (batch 2, {tuple(args.train_size)}), median of {args.train_runs} "
        "after 1 warm-up:"
    )
    for name, values in train_times.items():
        median = statistics.median(values)
        print(f"  {name:26s} {median * 1000:9.1f} ms  ({median / baseline:.2f}x torchvision)")


if __name__ == "__main__":
    main()
