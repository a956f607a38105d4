"""The run directory seen from the command line, before and after a run.

Before Hydra starts (``lazydet.train.main``), a command line is checked for what would write into
a directory that is not the run's: a ``hydra.run.dir`` that a live run holds, a device this
machine cannot use; and Hydra is told not to write ``.hydra/`` itself (the run writes the same
files once it holds the directory's lock, :func:`hydra_files`). After a finished run, the
pictures a user looks at first: ``val_predictions.png`` and ``curves.png``, drawn on rank 0 as a
courtesy that never fails the run.

Kept free of torch at import: the command line is vetted before torch is imported.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lazydet.config import select_resolved
from lazydet.config.command_line import fail

from .run_lock import RunRefused, check_run_directory_free

__all__ = [
    "defer_hydra_files",
    "draw_run_curves",
    "draw_validation_predictions",
    "hydra_files",
    "refuse_busy_run_directory",
    "refuse_unusable_device",
]

logger = logging.getLogger("lazydet.train")


def refuse_busy_run_directory(argv: list[str]) -> None:
    """``hydra.run.dir=DIR`` that a live training run holds: one message, exit 2, before Hydra
    writes anything there (its log, its ``.hydra/``). Tried without writing (a non-blocking
    ``flock`` on an existing ``DIR/.lock``); the run takes the lock itself when it starts."""
    for text in argv:
        key, _, value = text.partition("=")
        if key.lstrip("+") != "hydra.run.dir" or "${" in value or not value.strip():
            continue
        directory = Path(value).expanduser()
        if directory.is_dir():
            try:
                check_run_directory_free(directory)
            except OSError as e:
                fail("lazydet.train", f"'{text}': {e.strerror or e}", 2)


def refuse_unusable_device(argv: list[str]) -> None:
    """``train.device=tpu`` on the command line: one message, exit 2, before Hydra creates the
    run directory (a device set in a config file is checked by the run, before it writes)."""
    from lazydet.engine.run import check_device  # imports torch: only when asked

    for text in argv:
        key, _, value = text.partition("=")
        if (
            key.lstrip("+") == "train.device"
            and value not in ("", "null", "None")
            and "," not in value
        ):
            try:
                check_device(value)
            except RunRefused as e:
                fail("lazydet.train", e, 2)


def defer_hydra_files(argv: list[str]) -> list[str]:
    """``argv`` plus ``hydra.output_subdir=null`` unless the command sets it: Hydra writes
    ``.hydra/`` before the task function runs, i.e. before the run holds the directory's lock
    and has checked its resume; ``train_job`` writes the same files through the run instead."""
    if any(a.lstrip("+").split("=", 1)[0] == "hydra.output_subdir" for a in argv):
        return argv
    return [*argv, "hydra.output_subdir=null"]


def hydra_files(task_cfg: Any) -> dict[str, str]:
    """What Hydra writes into ``.hydra/`` (its ``run_job``: the task config, its own config and
    the overrides), as text, for the run to write once it owns the directory (Hydra itself is
    told ``hydra.output_subdir=null``, see ``main``)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hydra = HydraConfig.get()
    return {
        ".hydra/config.yaml": OmegaConf.to_yaml(task_cfg),
        ".hydra/hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra})),
        ".hydra/overrides.yaml": OmegaConf.to_yaml(hydra.overrides.task),
    }


def draw_validation_predictions(cfg: Any, weights: Any, output_dir: Path) -> Path | None:
    """``val_predictions.png`` in the run directory: the final model on the first images of
    ``dataset.test``, drawn by the predictor built from the final checkpoint alone. A picture is
    a courtesy: failing to draw it is logged, never fails the finished run."""
    test = select_resolved(cfg, "dataset.test")
    rank = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))  # torchrun / srun ranks
    if rank != "0" or not (weights and test and Path(weights).is_file()):
        return None
    try:
        from lazydet.data import DatasetCatalog
        from lazydet.evaluation.pictures import save_prediction_grid
        from lazydet.evaluation.predictor import Predictor

        records = DatasetCatalog.get(test)[:8]
        # The run's own file, with the config this run composed (a project's own classes are
        # not on the untrusted allow-list that a checkpoint's stored config is read with).
        predictor = Predictor.from_checkpoint(weights, device="cpu", config=cfg)
        images = [Path(r["file_name"]) for r in records]
        return save_prediction_grid(predictor, images, output_dir / "val_predictions.png")
    except Exception as e:
        logger.warning("Could not draw the validation predictions: %s: %s", type(e).__name__, e)
        return None


def draw_run_curves(output_dir: Path) -> Path | None:
    """``curves.png`` in the run directory (losses, lr, time and AP over iterations, from
    ``metrics.jsonl``); rank 0 only, and like the picture a courtesy that never fails the run."""
    if os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) != "0":
        return None
    try:
        from lazydet.analysis.curves import write_run_curves

        return write_run_curves(output_dir)
    except Exception as e:
        logger.warning("Could not draw the training curves: %s: %s", type(e).__name__, e)
        return None
