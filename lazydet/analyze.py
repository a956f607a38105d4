"""``python -m lazydet.analyze SUBCOMMAND key=value ...``: look at a run, a model's errors, its
cost and its speed. Pictures: ``docs/analysis.md``.

Subcommands::

    curves runs=RUN_DIR[,RUN_DIR...] [output=curves.png] [smoothing=0.6]
        Losses, lr, time per iteration and each AP over iterations from each run's
        metrics.jsonl, runs overlaid (a sweep's directory stands for its jobs).
    errors gt=ANNOTATIONS.json results=RESULTS.json output=DIR [image_root=DIR]
           [score_threshold=0.3] [count=6]
        Writes DIR/pr_curves.png, breakdown.png, confusion_matrix.png, worst_images.png and
        prints the error buckets (bbox results; what lazydet.evaluate writes).
    cost conf=EXPERIMENT [height=800] [width=1333] [depth=3] [config overrides...]
        Parameters (trainable, frozen) and FLOPs per module for one image of that size.
    speed conf=EXPERIMENT [mode=inference|train] [device=cpu|cuda] [threads=N] [warmup=5]
          [iters=20] [runs=5] [data_loading=false] [checkpoint=PATH] [config overrides...]
        Images per second, median and min-max over runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from lazydet.config.command_line import (
    UsageError,
    command_main,
    own_flag,
    own_number,
    split_own_options,
)

__all__ = ["main", "run"]

OWN_KEYS = {
    "curves": {"runs", "output", "smoothing"},
    "errors": {"gt", "results", "output", "image_root", "score_threshold", "count"},
    "cost": {"height", "width", "depth"},
    "speed": {"mode", "device", "threads", "warmup", "iters", "runs", "data_loading", "checkpoint"},
}
TAKES_CONFIG = {"cost", "speed"}


def _split(command: str, argv: list[str]) -> tuple[dict[str, str], list[str]]:
    return split_own_options(
        argv,
        OWN_KEYS[command],
        is_override=lambda arg: command in TAKES_CONFIG and "=" in arg and not arg.startswith("-"),
        unknown=lambda arg: (
            f"{command}: unknown argument {arg!r}; it takes "
            f"{', '.join(k + '=' for k in sorted(OWN_KEYS[command]))}"
            f"{' and config overrides' if command in TAKES_CONFIG else ''}."
        ),
    )


def _require(own: dict[str, str], *keys: str) -> None:
    missing = [k for k in keys if not own.get(k)]
    if missing:
        raise UsageError(f"Set {', '.join(k + '=...' for k in missing)}.")


def run_curves(own: dict[str, str]) -> None:
    from lazydet.analysis.curves import find_runs, plot_curves

    _require(own, "runs")
    runs = find_runs([p for p in own["runs"].split(",") if p])
    output = plot_curves(
        runs,
        own.get("output", "curves.png"),
        smoothing=own_number(own, "smoothing", float, 0.6, low=0.0),
    )
    print(f"{output}: {len(runs)} run(s): {', '.join(runs)}")


def run_errors(own: dict[str, str]) -> None:
    from lazydet.analysis import errors

    _require(own, "gt", "results", "output")
    out = Path(own["output"])
    analysis = errors.analyze_errors(
        own["gt"],
        own["results"],
        score_threshold=own_number(own, "score_threshold", float, 0.3, low=0.0, high=1.0),
    )
    written = [
        errors.plot_pr_curves(analysis, out / "pr_curves.png"),
        errors.plot_breakdown(analysis, out / "breakdown.png"),
        errors.plot_confusion_matrix(analysis, out / "confusion_matrix.png"),
    ]
    page, worst = errors.plot_worst_images(
        analysis,
        own["gt"],
        own["results"],
        out / "worst_images.png",
        image_root=own.get("image_root"),
        count=own_number(own, "count", int, 6, low=1),
    )
    written.append(page)
    summary = {
        "objects": analysis.gt_buckets,
        "detections": analysis.det_buckets,
        "worst_images": worst,
    }
    (out / "errors.json").write_text(json.dumps(summary, indent=1, default=str))
    print("objects first found at:", ", ".join(f"{k} {v}" for k, v in analysis.gt_buckets.items()))
    print(
        "detections first matching at:",
        ", ".join(f"{k} {v}" for k, v in analysis.det_buckets.items()),
    )
    print("wrote", ", ".join(str(p) for p in [*written, out / "errors.json"]))


def run_cost(own: dict[str, str], overrides: list[str]) -> None:
    import torch

    from lazydet.analysis.cost import format_cost_table, measure_cost
    from lazydet.config import instantiate
    from lazydet.config.command_line import compose_from_command_line

    height, width, depth = (
        own_number(own, "height", int, 800, low=1),
        own_number(own, "width", int, 1333, low=1),
        own_number(own, "depth", int, 3, low=1),
    )
    cfg = compose_from_command_line(overrides)
    model = instantiate(cfg.model).eval()
    # A random image: a detector's heads see this pass's proposals, whatever the image.
    image = torch.randint(
        0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    rows = measure_cost(model, lambda m: m([{"image": image}]), max_depth=depth)
    print(
        format_cost_table(rows, title=f"one {height}x{width} image, untrained weights, eval mode")
    )


def run_speed(own: dict[str, str], overrides: list[str]) -> None:
    from lazydet.analysis.speed import benchmark_config
    from lazydet.config.command_line import compose_from_command_line

    options = dict(
        threads=own_number(own, "threads", int, None, low=1),
        warmup=own_number(own, "warmup", int, 5, low=0),
        iters=own_number(own, "iters", int, 20, low=1),
        runs=own_number(own, "runs", int, 5, low=1),
        data_loading=own_flag(own, "data_loading", False),
    )
    cfg = compose_from_command_line(overrides)  # after the own options: a typo fails fast
    result = benchmark_config(
        cfg,
        mode=own.get("mode", "inference"),
        device=own.get("device"),
        checkpoint=own.get("checkpoint"),
        progress=True,
        **options,
    )
    print(result)


def run(argv: list[str]) -> None:
    if not argv or argv[0] not in OWN_KEYS:
        raise UsageError(
            f"Give a subcommand first: {', '.join(OWN_KEYS)} (python -m lazydet.analyze --help)."
        )
    command, rest = argv[0], argv[1:]
    own, overrides = _split(command, rest)
    if command == "curves":
        run_curves(own)
    elif command == "errors":
        run_errors(own)
    elif command == "cost":
        run_cost(own, overrides)
    else:
        run_speed(own, overrides)


def main(argv: list[str] | None = None) -> None:
    command_main("lazydet.analyze", __doc__, run, argv)


if __name__ == "__main__":
    main()
