"""Benchmark: lazydet's Triton ROIAlign against torchvision's, on CUDA.

First a correctness gate (on the GPU: the Triton forward and backward against
``torchvision.ops.roi_align``, the fused multi-level pooling against ``MultiScaleRoIAlign``, the
deterministic backward repeated bitwise, bf16 against an fp32 reference); then
``triton.testing.do_bench`` medians at Mask R-CNN sizes: an 800x1344 input, FPN P2..P5 (strides
4..32) with 256 channels, 2 images, and

* the box head: 1000 boxes per image, 7x7;
* the mask head: 100 and 256 boxes per image, 14x14;

for fp32, fp16 and bf16 features (boxes always fp32 for lazydet; torchvision needs boxes in the
feature dtype and has no bf16 kernel on some builds: such rows say ``n/a``). Rows:

* ``P2 fwd``: one level, ``lazydet.ops.roi_align`` vs ``torchvision.ops.roi_align`` (aligned);
* ``FPN fwd`` / ``FPN fwd+bwd``: all four levels, ``lazydet.ops.multilevel_roi_align`` (one fused
  launch; float-atomic and deterministic backward) vs ``torchvision.ops.MultiScaleRoIAlign`` (which
  loops over levels), both ``aligned=False`` because MultiScaleRoIAlign is;
  ``lazydet[torchvision]`` is lazydet's own per-level loop over torchvision.

GB/s is *logical* traffic over time: forward = output bytes + 4 bilinear corner reads per sample
and channel; backward adds the grad_output read and 4 fp32 atomic updates per sample and channel.
Corner reads are mostly served by L1/L2, so it can exceed HBM bandwidth; it compares
implementations on one problem, it is not a roofline.

Without CUDA the script says so and exits 0 (``--smoke`` runs tiny shapes on CPU through Triton's
interpreter instead, to check the script itself).

Usage: ``python scripts/bench_roi_align.py [--dtypes fp32 fp16] [--images 2] [--smoke]``
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
STRIDES = (4, 8, 16, 32)
FEATURE_NAMES = ["p2", "p3", "p4", "p5"]


@dataclass(frozen=True)
class Problem:
    image_size: tuple[int, int]
    images: int
    channels: int
    cases: tuple[tuple[str, int, int], ...]  # (head, boxes per image, output side)


FULL = Problem(
    image_size=(800, 1344),
    images=2,
    channels=256,
    cases=(("box", 1000, 7), ("mask", 100, 14), ("mask", 256, 14)),
)
SMOKE = Problem(image_size=(64, 96), images=2, channels=4, cases=(("box", 4, 7), ("mask", 2, 14)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "fp16", "bf16"]
    )
    parser.add_argument("--images", type=int, default=FULL.images)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny shapes on CPU via TRITON_INTERPRET=1"
    )
    return parser.parse_args(argv)


def make_pyramid(problem: Problem, dtype: torch.dtype, device: str, seed: int) -> list:
    """P2..P5 features [N, C, ceil(H / s), ceil(W / s)]."""
    gen = torch.Generator().manual_seed(seed)
    height, width = problem.image_size
    return [
        torch.randn(
            problem.images, problem.channels, math.ceil(height / s), math.ceil(width / s),
            generator=gen,
        ).to(device, dtype)
        for s in STRIDES
    ]  # fmt: skip


def make_boxes(problem: Problem, per_image: int, device: str, seed: int) -> list:
    """Per image [R, 4] XYXY fp32: log-uniform sides 16..640 px, aspect 1:2..2:1, inside the
    image, like proposals after clipping (so every FPN level gets boxes)."""
    gen = torch.Generator().manual_seed(seed)
    height, width = problem.image_size
    boxes = []
    for _ in range(problem.images):
        side = torch.exp(math.log(16) + torch.rand(per_image, generator=gen) * math.log(640 / 16))
        aspect = torch.exp((torch.rand(per_image, generator=gen) - 0.5) * math.log(4))
        wh = torch.stack([side * aspect.sqrt(), side / aspect.sqrt()], 1)
        wh = torch.minimum(wh, torch.tensor([width - 1.0, height - 1.0]))
        xy = torch.rand(per_image, 2, generator=gen) * (torch.tensor([width, height]) - wh)
        boxes.append(torch.cat([xy, xy + wh], 1).to(device))
    return boxes


def to_rois(boxes: list) -> torch.Tensor:
    return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])


def sample_count(boxes: list, output: int, aligned: bool, multilevel: bool) -> int:
    """Bilinear samples of an adaptive-grid pooling (for the GB/s model)."""
    from lazydet.ops.roi_align import assign_boxes_to_levels

    all_boxes = torch.cat(boxes).double().cpu()
    if multilevel:
        levels = assign_boxes_to_levels([all_boxes.float()], 2, 5)
        scale = 0.5 ** (levels.double() + 2)
    else:
        scale = torch.full((len(all_boxes),), 0.25, dtype=torch.float64)
    sides = (all_boxes[:, 2:] - all_boxes[:, :2]) * scale[:, None]
    if not aligned:
        sides = sides.clamp(min=1.0)
    grid = torch.ceil(sides / output).clamp(min=0)
    return int((grid[:, 0] * grid[:, 1]).sum().item()) * output * output


def gbps(num_bytes: float, ms: float) -> float:
    return num_bytes / (ms * 1e-3) / 1e9


class Timer:
    """Median milliseconds: do_bench on CUDA, a perf_counter loop on CPU (smoke mode)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __call__(self, fn: Callable[[], object], grad_to_none: list | None = None) -> float:
        if self.cuda:
            import triton.testing

            return triton.testing.do_bench(fn, grad_to_none=grad_to_none, return_mode="median")
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return sorted(times)[1]


def correctness_gate(device: str) -> None:
    """Raise SystemExit if the kernels disagree with torchvision on this device."""
    import torchvision
    from torchvision.ops import MultiScaleRoIAlign

    from lazydet.ops import backend
    from lazydet.ops.roi_align import multilevel_roi_align, roi_align

    problem = Problem(image_size=(96, 128), images=2, channels=8, cases=())
    features = make_pyramid(problem, torch.float32, device, seed=1)
    boxes = make_boxes(problem, 12, device, seed=2)
    rois = to_rois(boxes)
    failures = []

    def check(name, actual, expected, atol):
        error = (actual.float() - expected.float()).abs().max().item()
        if not error <= atol:
            failures.append(f"{name}: max error {error:.3g} > {atol}")

    for aligned in (True, False):
        for sampling_ratio in (0, 2):
            ref_in = features[0].clone().requires_grad_(True)
            expected = torchvision.ops.roi_align(
                ref_in, rois, 7, 0.25, sampling_ratio or -1, aligned
            )
            grad = torch.randn_like(expected)
            expected.backward(grad)
            with backend.use_backend("triton"):
                for deterministic in (False, True):
                    got_in = features[0].clone().requires_grad_(True)
                    actual = roi_align(got_in, rois, 7, 0.25, sampling_ratio, aligned,
                                       deterministic=deterministic)  # fmt: skip
                    actual.backward(grad)
                    tag = f"aligned={aligned} sr={sampling_ratio} det={deterministic}"
                    check(f"forward {tag}", actual, expected, 1e-4)
                    check(f"backward {tag}", got_in.grad, ref_in.grad, 1e-4)
    pooler = MultiScaleRoIAlign(FEATURE_NAMES, 7, sampling_ratio=0)
    expected = pooler(dict(zip(FEATURE_NAMES, features)), boxes, [problem.image_size] * 2)
    with backend.use_backend("triton"):
        actual = multilevel_roi_align(features, boxes, 7, [1 / s for s in STRIDES], aligned=False)
        check("multilevel vs MultiScaleRoIAlign", actual, expected, 1e-4)
        grads = []
        for _ in range(2):
            inputs = [f.clone().requires_grad_(True) for f in features]
            out = multilevel_roi_align(inputs, boxes, 7, [1 / s for s in STRIDES],
                                       deterministic=True)  # fmt: skip
            out.backward(torch.ones_like(out))
            grads.append(torch.cat([i.grad.flatten() for i in inputs]))
        if not torch.equal(grads[0], grads[1]):
            failures.append("deterministic multilevel backward differs between two runs")
        bf16 = [f.to(torch.bfloat16) for f in features]
        actual = multilevel_roi_align(bf16, boxes, 7, [1 / s for s in STRIDES], aligned=False)
        reference = pooler(dict(zip(FEATURE_NAMES, [f.float() for f in bf16])), boxes,
                           [problem.image_size] * 2)  # fmt: skip
        check("bf16 multilevel vs fp32 reference", actual, reference, 3e-2)
    if failures:
        raise SystemExit("correctness gate failed:\n  " + "\n  ".join(failures))
    print("correctness gate: ok (forward/backward vs torchvision, multilevel vs "
          "MultiScaleRoIAlign, deterministic repeat, bf16)")  # fmt: skip


@dataclass
class Inputs:
    """One benchmark problem on the device: features (and leaf copies for backward), boxes."""

    features: list
    grad_leaves: list
    boxes: list
    rois: torch.Tensor
    output: int
    image_sizes: list


def torchvision_calls(inputs: Inputs, pooler, upcast: bool) -> dict[str, Callable[[], object]]:
    """torchvision's calls per op; ``upcast`` runs them on fp32 copies (copy included), for
    dtypes torchvision has no kernel for."""
    import torchvision

    def cast(tensors):
        return [t.float() for t in tensors] if upcast else tensors

    def single():
        features = cast(inputs.features)[0]
        # torchvision wants the boxes in the feature dtype (fp16 boxes round coordinates).
        rois = inputs.rois.to(features.dtype)
        return torchvision.ops.roi_align(features, rois, inputs.output, 0.25, -1, True)

    def fpn(tensors):
        return pooler(dict(zip(FEATURE_NAMES, cast(tensors))), inputs.boxes, inputs.image_sizes)

    return {
        "P2 fwd": single,
        "FPN fwd": lambda: fpn(inputs.features),
        "FPN fwd+bwd": _with_backward(lambda: fpn(inputs.grad_leaves)),
    }


def lazydet_calls(inputs: Inputs) -> list[tuple[str, str, Callable[[], object]]]:
    from lazydet.ops import backend
    from lazydet.ops.roi_align import multilevel_roi_align, roi_align

    scales = [1 / s for s in STRIDES]

    def fpn(tensors, name="triton", deterministic=False):
        with backend.use_backend(name):
            return multilevel_roi_align(tensors, inputs.boxes, inputs.output, scales,
                                        aligned=False, deterministic=deterministic)  # fmt: skip

    def single():
        with backend.use_backend("triton"):
            return roi_align(inputs.features[0], inputs.rois, inputs.output, 0.25)

    leaves = inputs.grad_leaves
    return [
        ("P2 fwd", "lazydet", single),
        ("FPN fwd", "lazydet", lambda: fpn(inputs.features)),
        ("FPN fwd", "lazydet[torchvision]", lambda: fpn(inputs.features, "torchvision")),
        ("FPN fwd+bwd", "lazydet", _with_backward(lambda: fpn(leaves))),
        ("FPN fwd+bwd", "lazydet deterministic",
         _with_backward(lambda: fpn(leaves, deterministic=True))),
    ]  # fmt: skip


def _with_backward(forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
    def step():
        out = forward()
        out.backward(torch.ones_like(out))

    return step


def run(args: argparse.Namespace) -> list[dict]:
    """Gate, then time every (case, dtype, op, implementation); returns the rows printed."""
    from torchvision.ops import MultiScaleRoIAlign

    problem = SMOKE if args.smoke else FULL
    problem = Problem(problem.image_size, args.images, problem.channels, problem.cases)
    device = "cpu" if args.smoke else "cuda"
    correctness_gate(device)
    timer = Timer(cuda=device == "cuda")
    rows: list[dict] = []
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (interpreter)"
    print(f"device: {name}; image {problem.image_size}, {problem.images} images, "
          f"C={problem.channels}, P2..P5")  # fmt: skip
    header = f"{'case':<22}{'dtype':<6}{'op':<12}{'impl':<32}{'ms':>10}{'GB/s':>9}{'x tv':>7}"
    print(header)
    print("-" * len(header))
    for head, per_image, output in problem.cases:
        boxes = make_boxes(problem, per_image, device, seed=args.seed)
        case = f"{head} {per_image}/img {output}x{output}"
        pooler = MultiScaleRoIAlign(FEATURE_NAMES, output, sampling_ratio=0)
        channels = problem.channels
        single_samples = sample_count(boxes, output, aligned=True, multilevel=False)
        fpn_samples = sample_count(boxes, output, aligned=False, multilevel=True)
        for dtype_name in args.dtypes:
            features = make_pyramid(problem, DTYPES[dtype_name], device, seed=args.seed)
            inputs = Inputs(
                features=features,
                grad_leaves=[f.detach().clone().requires_grad_(True) for f in features],
                boxes=boxes,
                rois=to_rois(boxes),
                output=output,
                image_sizes=[problem.image_size] * problem.images,
            )
            esize = features[0].element_size()
            out_bytes = inputs.rois.shape[0] * channels * output * output * esize
            fwd_bytes = {
                "P2 fwd": out_bytes + 4 * channels * esize * single_samples,
                "FPN fwd": out_bytes + 4 * channels * esize * fpn_samples,
            }
            fwd_bytes["FPN fwd+bwd"] = (
                fwd_bytes["FPN fwd"] + out_bytes + 16 * channels * fpn_samples
            )

            def time_op(op, fn, leaves=inputs.grad_leaves):
                return timer(fn, grad_to_none=leaves if "bwd" in op else None)

            measured = []
            baseline: dict[str, float] = {}
            for op, fn in torchvision_calls(inputs, pooler, upcast=False).items():
                impl = "MultiScaleRoIAlign" if op.startswith("FPN") else "torchvision"
                try:
                    ms = time_op(op, fn)
                except (RuntimeError, NotImplementedError):  # no kernel for this dtype
                    ms = time_op(op, torchvision_calls(inputs, pooler, upcast=True)[op])
                    impl += " (fp32 copy)"
                baseline[op] = ms
                measured.append((op, impl, ms))
            for op, impl, fn in lazydet_calls(inputs):
                measured.append((op, impl, time_op(op, fn)))
            for op, impl, ms in sorted(measured, key=lambda m: list(fwd_bytes).index(m[0])):
                row = dict(case=case, dtype=dtype_name, op=op, impl=impl, ms=ms,
                           gbps=gbps(fwd_bytes[op], ms), speedup=baseline[op] / ms)  # fmt: skip
                rows.append(row)
                print(f"{case:<22}{dtype_name:<6}{op:<12}{impl:<32}{ms:>10.4f}"
                      f"{row['gbps']:>9.1f}{row['speedup']:>7.2f}")  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    elif not torch.cuda.is_available():
        print("bench_roi_align: CUDA is not available; nothing to benchmark (use --smoke to check "
              "the script on CPU).")  # fmt: skip
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
