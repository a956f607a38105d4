"""One training run: ``run(cfg, output_dir)`` saves, builds and trains a composed config.

The run path, from the command line to the trainer (docs/training.md):

``lazydet.train.main`` (vet the command line, ``lazydet.config.command_line``) → Hydra →
``lazydet.train.train_job`` (one job: compose, ``run``, report and exit status) →
:func:`run` (save the config, pick the processes) → ``lazydet.engine.launch.launch`` (one process,
or one per GPU / rank) → :func:`train_on_this_rank` (seed, linear scaling, build the config and
load ``train.init_checkpoint``) → :func:`train_built` (device, DDP, checkpointer, hooks, writers)
→ ``lazydet.engine.trainer.Trainer.train``.

The config is read through ``lazydet.config.select`` on a resolved copy (``${...}`` replaced),
never by walking it by hand.
"""

from __future__ import annotations

import copy
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

from lazydet.checkpoint.build import load_model_weights
from lazydet.checkpoint.start import configure_start
from lazydet.config import ConfigError, instantiate, locate, resolve, save, select
from lazydet.engine.evaluation_setup import check_evaluation_setup
from lazydet.utils import comm
from lazydet.utils.comm import select_device
from lazydet.utils.events import ConsoleWriter, JSONLinesWriter, TensorBoardWriter
from lazydet.utils.logging import setup_logging

from .checkpointer import (
    FINAL_CHECKPOINT,
    Checkpointer,
    claim_run_directory,
    release_run_directory,
)
from .hooks import CheckpointHook, EvalHook, MetricsHook
from .launch import launch, linear_scaling, wrap_model
from .run_lock import RunRefused
from .train_config import TrainConfig
from .trainer import Trainer, unwrap_model

__all__ = [
    "RunFiles",
    "RunFinished",
    "RunRefused",
    "TrainResult",
    "apply_linear_scaling",
    "build",
    "check_model_matches_dataset",
    "evaluation_function",
    "run",
    "seed_everything",
    "train_built",
    "train_on_this_rank",
]

logger = logging.getLogger("lazydet.train")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def check_model_matches_dataset(cfg: Mapping[str, Any]) -> None:
    """Raise ValueError when the model's ``num_classes`` / ``num_keypoints`` disagree with the
    training dataset's metadata (``thing_classes`` / ``keypoint_names``), naming both keys.

    Call after the dataset was loaded (loading registers its metadata). A config without
    ``dataloader.train.dataset`` naming a registered dataset is not checked here.
    """
    from lazydet.data.catalog import MetadataCatalog

    cfg = resolve(cfg)
    names = select(cfg, "dataloader.train.dataset")
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        return
    model = select(cfg, "model") or {}
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
    stopped_by_other_rank: bool  # the stop signal reached another rank, not this one
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
        keypoint_skeleton=meta.get("keypoint_skeleton") if keypoint_names else None,
    )


def train_built(
    cfg: Mapping[str, Any],
    built: Mapping[str, Any],
    output_dir: str | os.PathLike,
    *,
    run_files: RunFiles | None = None,
) -> TrainResult:
    """Train ``built["model"]`` as the config says; write checkpoints, metrics.jsonl and
    TensorBoard events under ``output_dir``. Call seeded (``seed_everything``) and, under DDP,
    with the process group initialised; the model is moved to the device and wrapped in
    DistributedDataParallel here when the world size is above 1. ``run_files`` (the run's
    config files) are written once the resume is decided, before the metrics.
    """
    output_dir = Path(output_dir)
    train_cfg = built.get("train")
    if not isinstance(train_cfg, TrainConfig):
        raise ConfigError(
            "train: training needs a typed node, train = L(TrainConfig)(...) with "
            "`from lazydet.engine.train_config import TrainConfig` (see docs/training.md)."
        )
    schedule = built.get("schedule") or {}
    max_iter = schedule.get("max_iter")
    if not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"schedule.max_iter must be a non-negative integer, got {max_iter!r}.")
    dataloader = built.get("dataloader") or {}
    train_loader = dataloader.get("train") if isinstance(dataloader, Mapping) else None
    if train_loader is None:
        raise ValueError("The config has no dataloader.train: nothing to train on.")
    check_model_matches_dataset(cfg)

    device = select_device(train_cfg.device)
    model = built["model"].to(device)
    if train_cfg.channels_last:
        # In place on each parameter (Module._apply keeps the Parameter objects), so an
        # optimizer already built over them still holds the model's own tensors.
        model = model.to(memory_format=torch.channels_last)
    model = wrap_model(model, sync_bn=train_cfg.sync_bn)
    is_main = comm.is_main_process()
    # Checked on every rank before the first step: a bad run dir fails at once, not at a save.
    checkpointer = Checkpointer(
        output_dir,
        max_to_keep=train_cfg.max_to_keep,
        run_outputs=RUN_OUTPUTS,
        metadata=_metadata(cfg, select(resolve(cfg), "dataloader.train.dataset")),
    )
    checkpoint_hook = CheckpointHook(
        checkpointer,
        period=train_cfg.checkpoint_period,
        resume=train_cfg.resume,
        write_run_files=run_files.write if run_files is not None else None,
        config_name=run_files.config_name if run_files is not None else "this config",
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
        stopped_by_other_rank=trainer.stopped_by_other_rank,
        metrics=metrics_file,
        tensorboard=tensorboard_dir,
        eval_results=eval_hook.latest if eval_hook is not None else {},
    )


# Per lr scheduler class: the arguments that count iterations, rescaled with the schedule's
# length. SequentialLR's children ("schedulers") are rescaled by their own class.
ITERATION_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "torch.optim.lr_scheduler.MultiStepLR": ("milestones",),
    "torch.optim.lr_scheduler.StepLR": ("step_size",),
    "torch.optim.lr_scheduler.LinearLR": ("total_iters",),
    "torch.optim.lr_scheduler.ConstantLR": ("total_iters",),
    "torch.optim.lr_scheduler.PolynomialLR": ("total_iters",),
    "torch.optim.lr_scheduler.CosineAnnealingLR": ("T_max",),
    "torch.optim.lr_scheduler.CosineAnnealingWarmRestarts": ("T_0",),
    "torch.optim.lr_scheduler.SequentialLR": ("milestones",),
}


def _scale(value: Any, factor: float) -> Any:
    if isinstance(value, (list, tuple)):
        return [max(1, round(int(v) * factor)) for v in value]
    return max(1, round(int(value) * factor))


def _scale_scheduler(node: Any, factor: float, key: str) -> None:
    """Rescale the iteration arguments of the scheduler node at ``key`` (``ITERATION_ARGUMENTS``)."""
    if node is None:
        return
    target = node.get("_target_") if isinstance(node, Mapping) else None
    names = {locate(t): args for t, args in ITERATION_ARGUMENTS.items()}
    cls = locate(target) if isinstance(target, str) else None
    if cls not in names:
        raise ConfigError(
            f"{key}: linear scaling (train.reference_world_size) does not know which arguments "
            f"of {target or type(node).__name__} count iterations; it rescales "
            f"{', '.join(t.rsplit('.', 1)[1] for t in ITERATION_ARGUMENTS)}. Use one of them, "
            "or drop train.reference_world_size and scale the schedule yourself."
        )
    for name in names[cls]:
        if node.get(name) is not None:
            node[name] = _scale(node[name], factor)
    for i, child in enumerate(node.get("schedulers") or []):
        _scale_scheduler(child, factor, f"{key}.schedulers.{i}")


def apply_linear_scaling(cfg: Any, *, reference_world_size: int, world_size: int) -> None:
    """Rewrite ``cfg`` (before it is built) for ``world_size`` processes when it was written for
    ``reference_world_size``: ``optimizer.lr`` and ``dataloader.train.total_batch_size`` scale
    by their ratio, ``schedule.max_iter`` and the iteration arguments of
    ``schedule.lr_scheduler`` (``ITERATION_ARGUMENTS``: milestones, warm-up length...) by its
    inverse."""
    if reference_world_size == world_size:
        return
    values = resolve(cfg)
    lr, batch, factor = linear_scaling(
        lr=float(select(values, "optimizer.lr")),
        total_batch_size=int(select(values, "dataloader.train.total_batch_size")),
        reference_world_size=reference_world_size,
        world_size=world_size,
    )
    cfg["optimizer"]["lr"] = lr
    cfg["dataloader"]["train"]["total_batch_size"] = batch
    cfg["schedule"]["max_iter"] = _scale(select(values, "schedule.max_iter"), factor)
    _scale_scheduler(cfg["schedule"].get("lr_scheduler"), factor, "schedule.lr_scheduler")
    logger.info(
        "Linear scaling from %d to %d processes: lr %.4g, total batch %d, max_iter %d",
        reference_world_size,
        world_size,
        lr,
        batch,
        cfg["schedule"]["max_iter"],
    )


def build(cfg: Any) -> dict[str, Any]:
    """Instantiate the config; load ``train.init_checkpoint`` into ``model`` when it is set
    (``lazydet.checkpoint.build.load_model_weights``: logged; misfit weights raise
    ``WeightsMisfitError``, an unreadable file one ConfigError). With no starting weights the
    ResNets are unfrozen first (``configure_start``: a frozen random layer is never right).

    Returns the built top-level objects, plus ``"init_checkpoint"``: the ``LoadReport`` (or None).
    """
    configure_start(cfg)
    built = instantiate(cfg)
    checkpoint = select(cfg, "train.init_checkpoint")
    report = None
    if checkpoint:
        if "model" not in built:
            raise ConfigError(
                f"train.init_checkpoint={checkpoint!r} is set but the config has no 'model'."
            )
        report = load_model_weights(built["model"], checkpoint, cfg=cfg, training=True)
    return {**built, "init_checkpoint": report}


def train_on_this_rank(
    cfg: Any, output_dir: Path, run_files: RunFiles | None = None
) -> TrainResult:
    """One rank of a run (what ``launch`` starts): seed, build, train."""
    from lazydet.utils.logging import setup_logging

    # Rank 0 prints to the console; every rank writes its own log file in the run directory.
    setup_logging(output_dir)
    seed = int(select(cfg, "train.seed") or 0)
    reference = select(cfg, "train.reference_world_size")
    if reference:
        apply_linear_scaling(
            cfg, reference_world_size=int(reference), world_size=comm.get_world_size()
        )
    seed_everything(seed)  # the same initial weights on every rank and on every resume
    built = build(cfg)
    built.pop("init_checkpoint", None)
    seed_everything(seed + comm.get_rank())  # different dropout and sampling on each rank
    return train_built(cfg, built, output_dir, run_files=run_files)


def _describe(obj: Any) -> str:
    """A short text for a built object (``ResNet (11,689,512 parameters)``)."""
    if isinstance(obj, torch.nn.Module):
        n = sum(p.numel() for p in obj.parameters())
        return f"{type(obj).__name__} ({n:,} parameters)"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return (
            f"[{', '.join(_describe(v) for v in obj)}]"
            if len(obj) <= 4
            else f"{type(obj).__name__} of {len(obj)}"
        )
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return repr(obj)
    return type(obj).__name__


# Files of the run directory that belong to its checkpoints' run: train.resume=false moves them
# aside with the checkpoints and the config files (``checkpointer.RUN_CONFIG_FILES``).
RUN_OUTPUTS = (
    "metrics.jsonl",
    "tensorboard",
    "coco_instances_results.json",
    "val_predictions.png",
    "curves.png",
)


@dataclass
class RunFiles:
    """The config files a run writes into its directory once it owns it and the resume is
    decided (``config.py``, ``config.yaml`` and, from Hydra, ``.hydra/*.yaml``): the config as
    composed, before linear scaling rewrites it, so that running it again gives the same run.

    Attributes:
        config: the composed config (a copy, kept unchanged).
        output_dir: the run directory.
        extra: more files, ``{relative path: text}`` (Hydra's ``.hydra/`` files).
        config_name: how the messages name this config (``conf=NAME overrides...``).
    """

    config: Any
    output_dir: Path
    extra: dict[str, str]
    config_name: str

    def write(self) -> None:
        save(self.config, self.output_dir / "config.py")
        save(self.config, self.output_dir / "config.yaml")
        for relative, text in self.extra.items():
            path = self.output_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmp.write_text(text)
            os.replace(tmp, path)
        logger.info("Config saved to %s", self.output_dir / "config.py")


class RunFinished(Exception):
    """The run directory holds a finished run of this length: nothing to do, nothing written.

    ``str()`` says so and how to train longer."""


def check_device(spec: Any, *, key: str = "train.device") -> None:
    """ConfigError for a device ``spec`` torch cannot name or this machine lacks (None: fine)."""
    if spec is None:
        return
    try:
        select_device(spec, key=key)
    except (RuntimeError, ValueError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "no CUDA device" in first:
            raise RunRefused(first) from None
        raise RunRefused(
            f"{key}={spec!r} is not a device torch knows ({first}); use cpu, cuda, cuda:N, or "
            "leave it unset (this process's GPU if there is one, else the CPU)."
        ) from None


def _launching_rank() -> int:
    """This process's rank as its launcher set it (torchrun ``RANK``, SLURM ``SLURM_PROCID``),
    before any process group exists; 0 for a plain process (which may spawn the others)."""
    text = os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))
    return int(text) if text.strip().isdigit() else 0


def check_previous_run(cfg: Any, output_dir: Path) -> None:
    """Before a resume writes anything: refuse a ``schedule.max_iter`` below the iteration of the
    directory's newest checkpoint (ConfigError with the fix), and raise :class:`RunFinished` when
    that checkpoint already reached it."""
    values = resolve(cfg)
    if select(values, "train.resume") is False:
        return
    max_iter = select(values, "schedule.max_iter")
    if not isinstance(max_iter, int) or isinstance(max_iter, bool):
        return  # train_built reports it
    latest = Checkpointer(output_dir).load_latest()  # the run holds the directory's lock
    if latest is None:
        return
    path, state = latest
    done = state.get("iteration")
    if not isinstance(done, int) or isinstance(done, bool):
        return
    if done > max_iter:
        raise RunRefused(
            f"schedule.max_iter={max_iter} is below the iteration of this run's checkpoint "
            f"{path} ({done}): a run cannot be shortened after the fact. Give schedule.max_iter "
            f"of at least {done} to resume it, train.resume=false to start over here (the old run "
            "is moved aside), or a new hydra.run.dir=DIR. Nothing was changed."
        )
    if done == max_iter:
        raise RunFinished(
            f"The run in {output_dir} is finished ({done} of {max_iter} iterations, {path.name}); "
            f"nothing to do, nothing was written. To train longer, give a larger "
            f"schedule.max_iter (e.g. schedule.max_iter={max(2 * done, done + 1)}: it resumes from "
            "this checkpoint); to train again from the start, give a new hydra.run.dir=DIR (or "
            "train.resume=false, which moves this run aside)."
        )


def run(
    cfg: Any,
    output_dir: str | os.PathLike,
    *,
    extra_files: Mapping[str, str] | None = None,
    config_name: str | None = None,
) -> TrainResult | dict[str, str]:
    """Train ``cfg`` in ``output_dir`` and save its config there (docs/training.md).

    Training needs ``dataloader.train``, ``schedule`` (``max_iter``, ``lr_scheduler``),
    ``optimizer`` and a ``train = L(TrainConfig)(...)`` node. Runs one process, or one per GPU /
    ``train.num_processes`` (or joins torchrun's / srun's), each in
    :func:`train_on_this_rank`; returns rank 0's :class:`TrainResult`. The same run directory
    resumes from its newest complete checkpoint. A config without ``dataloader`` and
    ``schedule`` (a model-only experiment) is built and described (``{key: text}``), not trained.

    Nothing the run does not own is overwritten: the directory's lock is taken first (a run in
    progress there: BlockingIOError); a resume is checked against the checkpoint
    (:func:`check_previous_run`: a shorter ``max_iter`` is a ConfigError, a finished run raises
    :class:`RunFinished`; a model that does not fit it, a ConfigError from the checkpoint hook)
    before ``config.py``, ``config.yaml`` and ``extra_files`` (``{relative path: text}``, e.g.
    Hydra's ``.hydra/``) are written; ``train.resume=false`` moves the old run's checkpoints
    and config files aside first. ``config_name`` names this config in messages.
    """
    if not str(output_dir).strip():
        raise RunRefused(
            "The run directory is empty (an unset shell variable in hydra.run.dir=?); give "
            "one, e.g. hydra.run.dir=runs/exp1."
        )
    output_dir = Path(output_dir)
    check_evaluation_setup(cfg)  # eval_period > 0 with no evaluator: a config error, first
    check_device(select(resolve(cfg), "train.device"))
    run_files = RunFiles(
        config=copy.deepcopy(cfg),
        output_dir=output_dir,
        extra=dict(extra_files or {}),
        config_name=config_name or "this command's config",
    )
    launching = _launching_rank() == 0
    output_dir.mkdir(parents=True, exist_ok=True)
    if launching:
        claim_run_directory(output_dir)  # before anything else is written here
    try:
        if not ("dataloader" in cfg and "schedule" in cfg):
            if launching:
                setup_logging(output_dir)  # log.txt has what the console has, from line one
                run_files.write()
            return _build_and_describe(cfg)
        train_node = select(cfg, "train") or {}
        if train_node.get("_target_") != f"{TrainConfig.__module__}.TrainConfig":
            raise ConfigError(
                "train: training needs a typed node, train = L(TrainConfig)(...) with "
                "`from lazydet.engine.train_config import TrainConfig` (see docs/training.md); "
                f"this config has {type(train_node).__name__} {dict(train_node)!r}."
            )
        if launching:
            check_previous_run(cfg, output_dir)
            setup_logging(output_dir)  # after the checks: a refused run writes no log line here
        return launch(
            train_on_this_rank,
            num_processes=train_node.get("num_processes"),
            args=(cfg, output_dir, run_files if launching else None),
        )
    finally:
        if launching:
            release_run_directory(output_dir)


def _build_and_describe(cfg: Any) -> dict[str, str]:
    seed_everything(int(select(cfg, "train.seed") or 0))
    built = build(cfg)
    checkpoint_report = built.pop("init_checkpoint")
    report = {key: _describe(value) for key, value in built.items()}
    for key, text in report.items():
        logger.info("%s: %s", key, text)
    if checkpoint_report is not None:
        report["init_checkpoint"] = str(checkpoint_report).splitlines()[0]
    logger.warning("The config has no dataloader and schedule: built and saved, nothing to train.")
    return report
