"""GPU benchmark of lazydet's ops against torchvision's: ROIAlign (single and multi-level) and NMS.

    python scripts/bench_ops.py            # both; each checks correctness before timing
    python scripts/bench_ops.py --only nms

Each part gates on correctness, then prints ``triton.testing.do_bench`` medians at Mask R-CNN
sizes. Without CUDA it says so and exits 0. Results go to docs/benchmarks.md with the device named.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("roi_align", "nms"), default=None)
    args = parser.parse_args(argv)
    status = 0
    for part in ("roi_align", "nms"):
        if args.only in (None, part):
            print(f"== {part} ==", flush=True)
            status |= int(_load(f"bench_{part}").main([]) or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
