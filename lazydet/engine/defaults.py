"""Turning built config objects into a training run: seeding, device, checks, hooks, writers.

``lazydet.train.run`` calls :func:`train_built` with the objects ``instantiate`` built from the
experiment (``model``, ``optimizer``, ``dataloader.train``, ``schedule.lr_scheduler``, the
``train`` node, an optional ``evaluator``). The pieces are functions here so that notebooks and
``lazydet.engine.launch``'s worker processes use the same steps.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lazydet.utils import comm
from lazydet.utils.events import ConsoleWriter, JSONLinesWriter, TensorBoardWriter

from .checkpointer import FINAL_CHECKPOINT, Checkpointer
from .hooks import CheckpointHook, EvalHook, MetricsHook
from .train_config import TrainConfig
from .trainer import Trainer, unwrap_model

__all__ = [
    "TrainResult",
    "apply_linear_scaling",
    "check_model_matches_dataset",
    "evaluation_function",
    "resolved",
    "seed_everything",
    "select_device",
    "train_built",
    "train_worker",
]

logger = logging.getLogger("lazydet.train")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(spec: str | None) -> torch.device:
    """``spec`` as a device; ``None``: this process's GPU if any, else the CPU.

    "This process's GPU" is the current CUDA device, which ``lazydet.engine.launch`` sets per
    rank (``LOCAL_RANK``, or the only visible GPU of a SLURM task with ``--gpus-per-task=1``).
    """
    if spec is not None:
        device = torch.device(spec)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"train.device={spec!r} but no CUDA device is visible; use train.device=cpu or "
                "train.device=null (pick automatically)."
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _count_keys(node: Any, key: str, path: str, out: list[tuple[str, Any]]) -> None:
    if isinstance(node, Mapping):
        for k, v in node.items():
            where = f"{path}.{k}" if path else str(k)
            if k == key and isinstance(v, int) and not isinstance(v, bool):
                out.append((where, v))
            else:
                _count_keys(v, key, where, out)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _count_keys(v, key, f"{path}.{i}", out)


def resolved(cfg: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` of a composed config, interpolations (``${dataset.train}``)
    resolved, as plain containers; None when the key is absent."""
    from omegaconf import OmegaConf

    from lazydet.config import to_container

    try:
        node = OmegaConf.select(OmegaConf.create(to_container(dict(cfg))), key, default=None)
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    except Exception:  # a value OmegaConf cannot hold: fall back to the unresolved one
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        return node


def check_model_matches_dataset(cfg: Mapping[str, Any]) -> None:
    """Raise ValueError when the model's ``num_classes`` / ``num_keypoints`` disagree with the
    training dataset's metadata (``thing_classes`` / ``keypoint_names``), naming both keys.

    Call after the dataset was loaded (loading registers its metadata). A config without
    ``dataloader.train.dataset`` naming a registered dataset is not checked here.
    """
    from lazydet.data.catalog import MetadataCatalog

    names = resolved(cfg, "dataloader.train.dataset")
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        return
    model = resolved(cfg, "model") or {}
    problems = []
    for key, meta_key, what in (
        ("num_classes", "thing_classes", "classes"),
        ("num_keypoints", "keypoint_names", "keypoints"),
    ):
        found: list[tuple[str, Any]] = []
        _count_keys(model, key, "model", found)
        for name in names:
            values = MetadataCatalog.get(name).get(meta_key)
            if values is None:
                continue
            for where, value in found:
                # A keypoint head with 0 keypoints is "no keypoint head"; only a head counts.
                if value != len(values) and not (key == "num_keypoints" and value == 0):
                    shown = ", ".join(map(str, list(values)[:6])) + (
                        ", ..." if len(values) > 6 else ""
                    )
                    problems.append(
                        f"{where}={value} but the training dataset "
                        f"dataloader.train.dataset={name!r} has {len(values)} {what} "
                        f"(MetadataCatalog.get({name!r}).{meta_key}: {shown}). Set {where}="
                        f"{len(values)} (the experiments write '${{dataset.{key}}}'), or train "
                        "on a dataset with that many."
                    )
    if problems:
        raise ValueError("The model and the dataset disagree: " + " ".join(problems))


def evaluation_function(evaluator: Any, model: nn.Module, test_loader: Any) -> Callable[[], Any]:
    """What the eval hook calls: ``evaluator(model)`` for a callable, or
    ``inference_on_dataset(model, test_loader, evaluator)`` for an object with the
    ``reset / process / evaluate`` protocol (``lazydet.evaluation``)."""
    if all(hasattr(evaluator, a) for a in ("reset", "process", "evaluate")):
        try:
            from lazydet.evaluation import inference_on_dataset
        except ImportError as e:
            raise ValueError(
                "evaluator: an evaluator object needs lazydet.evaluation.inference_on_dataset, "
                f"which this installation lacks ({e})."
            ) from e
        if test_loader is None:
            raise ValueError("evaluator: set dataloader.test, the images it evaluates on.")
        return lambda: inference_on_dataset(model, test_loader, evaluator)
    if callable(evaluator):
        return lambda: evaluator(model)
    raise ValueError(
        f"evaluator: got a {type(evaluator).__name__}; give a callable model -> dict of numbers "
        "or an evaluator with reset/process/evaluate."
    )


@dataclass
class TrainResult:
    """Where a run left its outputs, and how it ended."""

    output_dir: Path
    iteration: int
    max_iter: int
    final_weights: Path | None
    last_checkpoint: str | None
    resumed_from: str | None
    stop_signal: str | None
    metrics: Path
    tensorboard: Path
    eval_results: dict[str, float]


def _metadata(cfg: Any, dataset_names: Any) -> dict[str, Any]:
    """``build_metadata`` from the training dataset's catalog entry (class and keypoint names)
    and the config; empty (with a warning) when the dataset is not a registered name."""
    from lazydet.checkpoint import build_metadata
    from lazydet.data.catalog import MetadataCatalog

    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names or [])
    meta = MetadataCatalog.get(names[0]) if names and isinstance(names[0], str) else None
    class_names = list(meta.get("thing_classes") or []) if meta is not None else []
    if not class_names:
        logger.warning(
            "dataloader.train.dataset is not a registered dataset with class names: this run's "
            "checkpoints carry no metadata (a predictor will need the class names given)."
        )
        return {}
    keypoint_names = meta.get("keypoint_names") or None
    return build_metadata(
        class_names=class_names,
        config=cfg,
        keypoint_names=keypoint_names,
        keypoint_flip_map=meta.get("keypoint_flip_map") if keypoint_names else None,
    )


def train_built(
    cfg: Mapping[str, Any],
    built: Mapping[str, Any],
    output_dir: str | os.PathLike,
    train_cfg: TrainConfig,
) -> TrainResult:
    """Train ``built["model"]`` as the config says; write checkpoints, metrics.jsonl and
    TensorBoard events under ``output_dir``. Call seeded (``seed_everything``) and, under DDP,
    with the process group initialised; the model is moved to the device and wrapped in
    DistributedDataParallel here when the world size is above 1.
    """
    output_dir = Path(output_dir)
    schedule = built.get("schedule") or {}
    max_iter = schedule.get("max_iter")
    if not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"schedule.max_iter must be a non-negative integer, got {max_iter!r}.")
    dataloader = built.get("dataloader") or {}
    train_loader = dataloader.get("train") if isinstance(dataloader, Mapping) else None
    if train_loader is None:
        raise ValueError("The config has no dataloader.train: nothing to train on.")
    check_model_matches_dataset(cfg)

    from .launch import wrap_model

    device = select_device(train_cfg.device)
    model = wrap_model(built["model"].to(device), sync_bn=train_cfg.sync_bn)
    is_main = comm.is_main_process()
    # Checked on every rank before the first step: a bad run dir fails at once, not at a save.
    checkpointer = Checkpointer(
        output_dir,
        max_to_keep=train_cfg.max_to_keep,
        run_outputs=("metrics.jsonl", "tensorboard"),
        metadata=_metadata(cfg, resolved(cfg, "dataloader.train.dataset")),
    )
    checkpoint_hook = CheckpointHook(
        checkpointer, period=train_cfg.checkpoint_period, resume=train_cfg.resume
    )
    tensorboard_dir = output_dir / "tensorboard"
    metrics_file = output_dir / "metrics.jsonl"

    def open_writers(start_iter: int) -> list[Any]:
        # Opened once the resume point is known: they drop what a killed run wrote after it.
        if not is_main:
            return []
        return [
            ConsoleWriter(max_iter=max_iter),
            JSONLinesWriter(metrics_file, start_iter=start_iter),
            TensorBoardWriter(tensorboard_dir, start_iter=start_iter),
        ]

    # Order matters (see lazydet.engine.hooks.MetricsHook): resume first, close writers last.
    hooks: list[Any] = [checkpoint_hook]
    eval_hook = None
    if built.get("evaluator") is not None:
        test_loader = dataloader.get("test") if isinstance(dataloader, Mapping) else None
        if getattr(built["evaluator"], "output_dir", False) is None:
            # An evaluator that can write its results (COCOEvaluator) writes them into the run
            # directory unless the config says where, so a run's AP can be checked from its files.
            built["evaluator"].output_dir = output_dir
        evaluate = evaluation_function(built["evaluator"], unwrap_model(model), test_loader)
        eval_hook = EvalHook(evaluate, period=train_cfg.eval_period)
        hooks.append(eval_hook)
    hooks.append(MetricsHook(period=train_cfg.log_period, open_writers=open_writers))

    trainer = Trainer(
        model=model,
        data_loader=train_loader,
        optimizer=built["optimizer"],
        scheduler=schedule.get("lr_scheduler"),
        max_iter=max_iter,
        hooks=hooks,
        amp=train_cfg.amp,
        clip_grad_norm=train_cfg.clip_grad_norm,
        grad_accum_steps=train_cfg.grad_accum_steps,
    )
    logger.info(
        "Training %s on %s for %d iterations (%s); run directory %s",
        type(unwrap_model(model)).__name__,
        device,
        max_iter,
        f"amp={train_cfg.amp}" if train_cfg.amp else "float32",
        output_dir,
    )
    trainer.train()
    final = output_dir / FINAL_CHECKPOINT
    return TrainResult(
        output_dir=output_dir,
        iteration=trainer.completed_iters if not trainer.finished else max_iter,
        max_iter=max_iter,
        final_weights=final if trainer.finished and final.is_file() else None,
        last_checkpoint=checkpoint_hook.last_saved or checkpoint_hook.resumed_from,
        resumed_from=checkpoint_hook.resumed_from,
        stop_signal=trainer.stop_signal,
        metrics=metrics_file,
        tensorboard=tensorboard_dir,
        eval_results=eval_hook.latest if eval_hook is not None else {},
    )


# Keys of torch's lr schedulers whose values count iterations (scaled with the schedule length).
_ITERATION_KEYS = ("milestones", "total_iters", "T_max", "T_0", "step_size", "warmup_iters")


def _scale_iterations(node: Any, factor: float) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in _ITERATION_KEYS and isinstance(value, int) and not isinstance(value, bool):
                node[key] = max(1, round(value * factor))
            elif key in _ITERATION_KEYS and isinstance(value, list):
                node[key] = [max(1, round(v * factor)) for v in value]
            else:
                _scale_iterations(value, factor)
    elif isinstance(node, list):
        for value in node:
            _scale_iterations(value, factor)


def apply_linear_scaling(cfg: Any, *, reference_world_size: int, world_size: int) -> None:
    """Rewrite ``cfg`` (before it is built) for ``world_size`` processes when it was written for
    ``reference_world_size``: lr and global batch scale by their ratio, ``schedule.max_iter``
    and the scheduler's iteration counts (milestones, warm-up length) by its inverse."""
    from .launch import linear_scaling

    if reference_world_size == world_size:
        return
    lr, batch, factor = linear_scaling(
        lr=float(resolved(cfg, "optimizer.lr")),
        total_batch_size=int(resolved(cfg, "dataloader.train.total_batch_size")),
        reference_world_size=reference_world_size,
        world_size=world_size,
    )
    cfg["optimizer"]["lr"] = lr
    cfg["dataloader"]["train"]["total_batch_size"] = batch
    cfg["schedule"]["max_iter"] = max(1, round(int(resolved(cfg, "schedule.max_iter")) * factor))
    _scale_iterations(cfg["schedule"].get("lr_scheduler"), factor)
    logger.info(
        "Linear scaling from %d to %d processes: lr %.4g, total batch %d, max_iter %d",
        reference_world_size,
        world_size,
        lr,
        batch,
        cfg["schedule"]["max_iter"],
    )


def train_worker(build: Callable[[Any], dict[str, Any]], cfg: Any, output_dir: Path) -> TrainResult:
    """One rank of a run (what ``lazydet.engine.launch.launch`` starts): seed, build with
    ``build(cfg)`` (``lazydet.train.build``), train. Returns the :class:`TrainResult`."""
    from lazydet.utils.logging import setup_logging

    # Rank 0 prints to the console; every rank writes its own log file in the run directory.
    setup_logging(output_dir)
    train_node = cfg.get("train") or {}
    seed = int(train_node.get("seed", 0) or 0)
    reference = train_node.get("reference_world_size")
    if reference:
        apply_linear_scaling(
            cfg, reference_world_size=int(reference), world_size=comm.get_world_size()
        )
    seed_everything(seed)  # the same initial weights on every rank and on every resume
    built = build(cfg)
    built.pop("init_checkpoint", None)
    seed_everything(seed + comm.get_rank())  # different dropout and sampling on each rank
    return train_built(cfg, built, output_dir, built["train"])
