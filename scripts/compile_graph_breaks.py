"""Count torch.compile graph breaks of whole detectors (CPU), in inference or in training, and
check the compiled model gives the eager detections.

Builds the four COCO recipes (Faster / Mask / Keypoint R-CNN, RetinaNet) with a ResNet-18 FPN and
seeded random weights, runs ``torch._dynamo.explain`` on ``model(batched_inputs)`` for a small
batch and prints every break (its reason and where in the user code it happened).

    python scripts/compile_graph_breaks.py [--detectors faster_rcnn_fpn ...] [--compile] [--train]

``--compile`` also runs ``torch.compile(model)`` (inductor) and compares its detections with
eager (count, boxes to 1e-4, scores to 1e-4). ``--train`` explains the training forward (the
losses) instead, on two generated 128x128 ``shapes`` images with their ground truth.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import torch

from lazydet.config import compose, instantiate

DETECTORS = ("faster_rcnn_fpn", "mask_rcnn_fpn", "keypoint_rcnn_fpn", "retinanet_fpn")


def build_detector(
    experiment: str, *, seed: int = 0, dataset: str | None = None
) -> torch.nn.Module:
    """A small version of a COCO recipe in eval mode: ResNet-18 FPN, seeded random weights.
    ``dataset``: a ``conf/dataset`` choice sizing the heads (classes, keypoints) other than the
    recipe's COCO; ``"shapes"`` for ``sample_training_inputs``."""
    overrides = ["model.backbone=resnet18"]
    if dataset is not None:
        overrides.append(f"dataset={dataset}")
    if experiment != "retinanet_fpn":
        overrides += [
            "model.proposal_generator.post_nms_topk_test=64",
            "model.roi_heads.box_head.fc_dims=[64,64]",
        ]
    if experiment == "mask_rcnn_fpn":
        overrides.append("model.roi_heads.mask_head.conv_dims=[32,32]")
    if experiment == "keypoint_rcnn_fpn":
        overrides.append("model.roi_heads.keypoint_head.conv_dims=[32,32]")
    cfg = compose(experiment, overrides)
    torch.manual_seed(seed)
    model = instantiate(cfg.model).eval()
    # Random weights score everything near 1 / num_classes: keep low-scoring detections so the
    # comparison has boxes to compare.
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    if predictor is not None:
        predictor.test_score_thresh = 0.0
    if hasattr(model, "score_threshold"):
        model.score_threshold = 0.0
    return model


def sample_inputs(*, seed: int = 0, sizes=((96, 128), (128, 96))) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "image": (torch.rand(3, h, w, generator=generator) * 255).round(),
            "height": h,
            "width": w,
        }
        for h, w in sizes
    ]


def sample_training_inputs(
    *, num_images: int = 2, image_size: int = 128, seed: int = 0, root: str | Path | None = None
) -> list[dict]:
    """``num_images`` generated ``shapes`` images (``generate_shapes``, deterministic for the
    arguments) mapped for training: ``image`` uint8 ``[3, S, S]`` and ``instances`` with
    ``gt_boxes``, ``gt_classes`` (3 classes), ``gt_masks`` (``BitMasks``) and ``gt_keypoints``.
    ``root``: where to write the images (a temporary directory, removed after, when None)."""
    from lazydet.data.datasets import generate_shapes, load_coco_json
    from lazydet.data.mapper import DatasetMapper

    with tempfile.TemporaryDirectory(prefix="lazydet_shapes_") as temporary:
        folder = Path(root if root is not None else temporary)
        generate_shapes(folder, num_images=num_images, image_size=image_size, seed=seed)
        records = load_coco_json(folder / "annotations.json", folder)
        mapper = DatasetMapper(
            augmentations=None, is_train=True, use_masks=True, use_keypoints=True
        )
        return [mapper(record) for record in records]


def capture_data_dependent_shapes(enabled: bool = True) -> None:
    """Let dynamo trace ops whose output size depends on the data (nonzero, boolean indexing,
    NMS) and ``.item()``: without these two flags each such op is a graph break."""
    torch._dynamo.config.capture_dynamic_output_shape_ops = enabled
    torch._dynamo.config.capture_scalar_outputs = enabled


def explain(model: torch.nn.Module, inputs: list[dict]):
    torch._dynamo.reset()
    return torch._dynamo.explain(model)(inputs)


def describe_breaks(explanation) -> list[str]:
    lines = []
    for reason in explanation.break_reasons:
        frames = [
            f"{f.filename.split('lazydet/')[-1]}:{f.lineno} {f.name}" for f in reason.user_stack
        ]
        where = frames[-1] if frames else "?"
        lines.append(f"{where}: {reason.reason.splitlines()[0][:200]}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=DETECTORS)
    parser.add_argument("--compile", action="store_true", help="also compare compiled vs eager")
    parser.add_argument(
        "--train", action="store_true", help="explain the training forward (losses) instead"
    )
    parser.add_argument(
        "--no-capture", action="store_true", help="leave dynamo's capture_* flags at defaults"
    )
    args = parser.parse_args()
    capture_data_dependent_shapes(not args.no_capture)
    for experiment in args.detectors:
        if args.train:
            model = build_detector(experiment, dataset="shapes").train()
            inputs = sample_training_inputs()
        else:
            model = build_detector(experiment)
            inputs = sample_inputs()
        start = time.perf_counter()
        explanation = explain(model, inputs)
        seconds = time.perf_counter() - start
        print(
            f"== {experiment}: {explanation.graph_count} graphs, "
            f"{explanation.graph_break_count} graph breaks ({seconds:.1f} s)"
        )
        for line, count in collections.Counter(describe_breaks(explanation)).items():
            print(f"   {count}x {line}")
        if args.compile and not args.train:
            torch._dynamo.reset()
            eager = model(inputs)
            compiled = torch.compile(model)(inputs)
            for e, c in zip(eager, compiled, strict=True):
                e, c = e["instances"], c["instances"]
                same = len(e) == len(c) and torch.allclose(
                    e.pred_boxes.tensor, c.pred_boxes.tensor, atol=1e-4, rtol=0
                )
                print(f"   compiled vs eager: {len(c)} vs {len(e)} detections, same={same}")


if __name__ == "__main__":
    main()
