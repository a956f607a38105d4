"""``python -m lazydet.evaluate conf=EXPERIMENT train.init_checkpoint=PATH [output=DIR]``.

Evaluates a checkpoint on the experiment's test dataset (``dataset.test``) with its test loader
(``dataloader.test``): COCO AP for bbox, and segm / keypoints when the model predicts them. The
command line is composed and vetted exactly as ``lazydet.train`` does (same overrides, same
errors). The config's ``evaluator`` (top level or ``dataloader.evaluator``) is used when it has
one, else ``COCOEvaluator(dataset_name=dataset.test)``. Under ``torchrun`` each process evaluates
its shard and rank 0 reports.

Writes, with ``output=DIR``: ``coco_instances_results.json`` (the detections) and
``metrics.json`` (``{"bbox": {"AP": ...}, ...}``, AP in percent).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from lazydet.config.command_line import UsageError, command_main, compose_from_command_line

__all__ = ["evaluate_checkpoint", "main"]

logger = logging.getLogger("lazydet.evaluate")


def evaluate_checkpoint(cfg: Any, *, output_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Build ``cfg.model``, load ``cfg.train.init_checkpoint``, run ``dataloader.test`` through
    ``inference_on_dataset`` with the config's evaluator (default: ``COCOEvaluator``)."""
    from lazydet.checkpoint.build import build_model
    from lazydet.config import ConfigError, instantiate, select, select_resolved
    from lazydet.evaluation import COCOEvaluator, inference_on_dataset
    from lazydet.utils.comm import select_device

    for key in ("model", "dataloader.test"):
        if select(cfg, key) is None:
            raise ConfigError(f"The config has no '{key}' to build.")
    checkpoint = select(cfg, "train.init_checkpoint")
    if not checkpoint:
        raise ConfigError("Set train.init_checkpoint=PATH (the weights to evaluate).")
    model, _ = build_model(cfg)
    model = model.to(select_device(None))
    loader = instantiate(cfg.dataloader.test)
    evaluator_node = select(cfg, "evaluator") or select(cfg, "dataloader.evaluator")
    if evaluator_node is not None:
        evaluator = instantiate(evaluator_node)
        if output_dir is not None and getattr(evaluator, "output_dir", False) is None:
            # As in training: an evaluator that can write its results (COCOEvaluator) writes
            # them into output= unless the config says where.
            evaluator.output_dir = Path(output_dir)
    else:
        dataset = select_resolved(cfg, "dataset.test")  # coco_json: a ${...} that registers it
        if not isinstance(dataset, str):
            raise ConfigError(
                "The config has no 'evaluator' and dataset.test is not a "
                f"registered dataset name ({dataset!r}); add evaluator=L(COCOEvaluator)(...)."
            )
        evaluator = COCOEvaluator(dataset_name=dataset, output_dir=output_dir)
    results = inference_on_dataset(model, loader, evaluator)
    if results and output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        clean = {
            task: {
                k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in metrics.items()
            }
            for task, metrics in results.items()
        }
        (out / "metrics.json").write_text(json.dumps(clean, indent=1))
    return results


def _evaluate_and_report(cfg: Any, output_dir: str | None) -> dict[str, Any]:
    """One rank's work: evaluate, then print the numbers on rank 0."""
    from lazydet.utils import comm

    results = evaluate_checkpoint(cfg, output_dir=output_dir)
    if comm.is_main_process():
        for task, metrics in results.items():
            shown = ", ".join(f"{k}={v:.2f}" for k, v in metrics.items() if not k.startswith("AP-"))
            print(f"{task}: {shown}")
    return results


def run(argv: list[str]) -> dict[str, Any]:
    from lazydet.engine.launch import launch

    output = [a.split("=", 1)[1] for a in argv if a.startswith("output=")]
    overrides = [a for a in argv if not a.startswith("output=")]
    if len(output) > 1:
        raise UsageError("output= is given twice.")
    cfg = compose_from_command_line(overrides)
    # One process here; under torchrun or in a SLURM job step, launch joins that process group
    # (the one place that reads ranks from the environment) and each rank evaluates its shard.
    return launch(_evaluate_and_report, num_processes=1, args=(cfg, output[0] if output else None))


def main(argv: list[str] | None = None) -> None:
    command_main("lazydet.evaluate", __doc__, run, argv)


if __name__ == "__main__":
    main()
