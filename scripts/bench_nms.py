"""Benchmark: lazydet's Triton NMS against torchvision's, on CUDA.

First a correctness gate (lazydet's kernels must return exactly torchvision's indices, fp32 IoU for
fp16/bf16 boxes, per-class NMS for several classes), then ``triton.testing.do_bench`` medians for

* ``nms`` (1 class) against ``torchvision.ops.nms`` and
* ``batched_nms`` (5 and 80 classes) against ``torchvision.ops.batched_nms``,

at 1k/5k/10k/100k boxes, fp32/fp16/bf16 boxes, plus lazydet with ``max_keep`` (early exit of the
reduction; torchvision has no equivalent and is timed without it). torchvision's CUDA NMS has no
bf16 kernel: it is then timed on the boxes converted to fp32 (the conversion is included).

Boxes imitate a detector's pre-NMS candidates: clustered around objects in a 1333x800 image.
Without CUDA the script says so and exits 0.

Usage: ``python scripts/bench_nms.py [--sizes 1000 5000] [--classes 1 80] [--dtypes fp32]
[--max-keep 1000] [--threshold 0.5]``
"""

from __future__ import annotations

import argparse
import sys

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000, 100000])
    parser.add_argument("--classes", type=int, nargs="+", default=[1, 5, 80])
    parser.add_argument(
        "--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "fp16", "bf16"]
    )
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--max-keep", type=int, default=1000, help="lazydet's early-exit column")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def make_inputs(num_boxes: int, num_classes: int, dtype: torch.dtype, seed: int, device: str):
    """``(boxes [N, 4] XYXY, scores [N], class ids [N])`` clustered like detector candidates."""
    gen = torch.Generator().manual_seed(seed)
    num_objects = max(num_boxes // 50, 1)
    centres = torch.rand(num_objects, 2, generator=gen) * torch.tensor([1333.0, 800.0])
    sizes = 16 + torch.rand(num_objects, 2, generator=gen) * 300
    pick = torch.randint(0, num_objects, (num_boxes,), generator=gen)
    jitter = torch.randn(num_boxes, 2, generator=gen) * sizes[pick] * 0.15
    half = sizes[pick] * (0.4 + 0.2 * torch.rand(num_boxes, 2, generator=gen)) / 2
    xy = centres[pick] + jitter
    boxes = torch.cat([xy - half, xy + half], dim=1)
    scores = torch.rand(num_boxes, generator=gen)
    classes = torch.randint(0, num_classes, (num_boxes,), generator=gen)
    return boxes.to(device, dtype), scores.to(device, dtype), classes.to(device)


def _torchvision_call(boxes, scores, classes, threshold):
    import torchvision

    def call():
        b, s = boxes, scores
        if b.dtype == torch.bfloat16:  # no bf16 CUDA kernel in torchvision
            b, s = b.float(), s.float()
        if classes is None:
            return torchvision.ops.nms(b, s, threshold)
        return torchvision.ops.batched_nms(b, s, classes, threshold)

    return call


def correctness_gate(
    args: argparse.Namespace, *, device: str = "cuda", sizes: tuple[int, ...] = (1000, 5000)
) -> bool:
    """lazydet's kernels against per-class torchvision.ops.nms (lazydet's torchvision backend,
    which tests/ops/test_nms.py pins to that loop); prints a line per case."""
    from lazydet.ops.backend import use_backend
    from lazydet.ops.nms import batched_nms, nms

    ok = True
    for num_boxes in sizes:
        for num_classes in (1, 80):
            for name, dtype in DTYPES.items():
                boxes, scores, classes = make_inputs(
                    num_boxes, num_classes, dtype, args.seed, device
                )
                # torchvision's CPU kernel is the exact reference (its CUDA kernel may fuse
                # multiply-adds, which moves IoUs within an ulp of the threshold).
                with use_backend("torchvision"):
                    expected = batched_nms(boxes.cpu(), scores.cpu(), classes.cpu(), args.threshold)
                with use_backend("triton"):
                    if num_classes == 1:
                        got = nms(boxes, scores, args.threshold)
                    else:
                        got = batched_nms(boxes, scores, classes, args.threshold)
                    truncated = batched_nms(boxes, scores, classes, args.threshold, max_keep=100)
                good = torch.equal(got.cpu(), expected)
                good = good and torch.equal(truncated.cpu(), expected[:100])
                ok &= good
                print(
                    f"gate n={num_boxes} classes={num_classes} {name}: "
                    f"{'ok' if good else 'MISMATCH'} ({expected.numel()} kept)"
                )
    return ok


def run(args: argparse.Namespace) -> int:
    """Run the gate and the timings; returns the process exit code."""
    if not torch.cuda.is_available():
        print("bench_nms: CUDA is not available; the NMS benchmark needs a GPU. Skipping.")
        return 0
    import triton.testing

    from lazydet.ops.backend import use_backend
    from lazydet.ops.nms import batched_nms, nms

    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    if not correctness_gate(args):
        print("bench_nms: correctness gate failed; no timings.")
        return 1

    def bench(fn) -> float:
        return triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")

    header = (
        f"{'boxes':>7} {'classes':>7} {'dtype':>5} {'kept':>6} {'lazydet ms':>10} "
        f"{'tv ms':>8} {'speedup':>7} {f'lazydet k={args.max_keep} ms':>18}"
    )
    print(header)
    for num_boxes in args.sizes:
        for num_classes in args.classes:
            for name in args.dtypes:
                boxes, scores, classes = make_inputs(
                    num_boxes, num_classes, DTYPES[name], args.seed, "cuda"
                )
                idxs = None if num_classes == 1 else classes

                def lazydet_call(max_keep=None, boxes=boxes, scores=scores, idxs=idxs):
                    with use_backend("triton"):
                        if idxs is None:
                            return nms(boxes, scores, args.threshold, max_keep=max_keep)
                        return batched_nms(boxes, scores, idxs, args.threshold, max_keep=max_keep)

                reference = _torchvision_call(boxes, scores, idxs, args.threshold)
                try:
                    kept = lazydet_call().numel()
                    ours = bench(lazydet_call)
                    ours_k = bench(lambda: lazydet_call(args.max_keep))
                    theirs = bench(reference)
                except torch.cuda.OutOfMemoryError:
                    print(f"{num_boxes:>7} {num_classes:>7} {name:>5}  out of GPU memory")
                    torch.cuda.empty_cache()
                    continue
                print(
                    f"{num_boxes:>7} {num_classes:>7} {name:>5} {kept:>6} {ours:>10.3f} "
                    f"{theirs:>8.3f} {theirs / ours:>6.2f}x {ours_k:>18.3f}"
                )
                del boxes, scores, classes
                torch.cuda.empty_cache()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
