"""The ``train`` node of an experiment: every knob of the training loop, typed.

Configs write ``train = L(TrainConfig)(checkpoint_period=5000, ...)``; because it is a target like
any other, ``validate()`` and the command line check ``train.log_period=abc`` or
``train.chekpoint_period=10`` against this signature (with "did you mean"), and instantiating the
config gives a ``TrainConfig`` object. The length of a run is ``schedule.max_iter``, not a field
here: the schedule owns it together with the lr milestones it must agree with.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

__all__ = ["TrainConfig"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Knobs of ``python -m lazydet.train`` (see docs/training.md).

    Attributes:
        init_checkpoint: weights to start from: a file (lazydet, torchvision or Detectron2) or a
            name such as ``torchvision:resnet50`` (docs/weights.md), loaded into ``model`` before
            training; ignored when the run resumes from its own checkpoint. ``None`` trains from
            scratch: then no ResNet stage is frozen and its norms train
            (``lazydet.checkpoint.start.configure_start``).
        init_checkpoint_skip: model-name prefixes (``["roi_heads.box_predictor",
            "roi_heads.mask_head.predictor"]``) left at their initial values: new heads on
            pretrained weights, e.g. another ``num_classes``.
        init_checkpoint_strict: a checkpoint that leaves tensors missing or mismatched (outside
            ``init_checkpoint_skip``) in the part it is for is an error; ``False`` loads what
            fits and lists what was left at its initial value.
        seed: seeds Python, numpy and torch before anything is built (each rank adds its rank).
        resume: continue from the newest complete checkpoint in the run directory (the default);
            ``False`` starts over and moves the run directory's old checkpoints aside.
        checkpoint_period: save a resumable checkpoint every this many iterations.
        max_to_keep: periodic checkpoints kept on disk (the newest ones); ``model_final.pth`` is
            always kept.
        eval_period: evaluate every this many iterations (0: only at the end); needs an
            ``evaluator`` in the config.
        log_period: one console line and one ``metrics.jsonl`` / TensorBoard point every this many
            iterations.
        amp: mixed precision: ``"bf16"`` (CUDA or CPU) or ``"fp16"`` (CUDA, with a gradient
            scaler); ``None`` trains in float32.
        channels_last: keep the model's 4-D weights (and so its convolutions' outputs) in
            channels-last memory order: the same values in another layout, cheaper convolutions
            on CPUs with oneDNN and on tensor-core GPUs (docs/benchmarks.md measures it).
        clip_grad_norm: clip the global gradient norm to this value (``None``: no clipping).
        grad_accum_steps: micro-batches per optimizer step; ``k`` steps of batch ``b`` equal one
            step of batch ``k*b`` (for models without batch statistics).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; ``None`` picks this process's GPU if
            there is one, else the CPU.
        num_processes: processes to train with on this machine (``None``: one per visible GPU,
            or one on a machine without a GPU); read by ``lazydet.engine.launch``.
        sync_bn: turn BatchNorm layers into SyncBatchNorm when several processes train (GPUs).
        reference_world_size: the number of processes the config's batch and lr were written
            for. ``None`` (default): the global batch is split over the processes and the lr is
            unchanged. Set: each process keeps ``total_batch_size / reference_world_size``
            images, and lr, global batch and schedule length follow Detectron2's linear
            scaling rule (``lazydet.engine.launch.linear_scaling``).
    """

    init_checkpoint: str | None = None
    init_checkpoint_skip: list[str] | None = None
    init_checkpoint_strict: bool = True
    seed: int = 0
    resume: bool = True
    checkpoint_period: int = 5000
    max_to_keep: int = 3
    eval_period: int = 0
    log_period: int = 20
    amp: Literal["fp16", "bf16"] | None = None
    channels_last: bool = False
    clip_grad_norm: float | None = None
    grad_accum_steps: int = 1
    device: str | None = None
    num_processes: int | None = None
    sync_bn: bool = False
    reference_world_size: int | None = None

    def __post_init__(self) -> None:
        positive = ("checkpoint_period", "max_to_keep", "log_period", "grad_accum_steps")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"train.{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.eval_period, int) or self.eval_period < 0:
            raise ValueError(
                f"train.eval_period must be 0 (evaluate at the end only) or a positive integer, "
                f"got {self.eval_period!r}."
            )
        if self.amp not in (None, "fp16", "bf16"):
            raise ValueError(f"train.amp must be null, 'bf16' or 'fp16', got {self.amp!r}.")
        if not isinstance(self.channels_last, bool):
            raise ValueError(
                f"train.channels_last must be true or false, got {self.channels_last!r}."
            )
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(
                f"train.clip_grad_norm must be a positive number or null, got {self.clip_grad_norm!r}."
            )
        if self.reference_world_size is not None and self.reference_world_size < 1:
            raise ValueError(
                "train.reference_world_size must be a positive integer or null, got "
                f"{self.reference_world_size!r}."
            )
        if self.num_processes is not None and self.num_processes < 1:
            raise ValueError(
                f"train.num_processes must be a positive integer or null, got {self.num_processes!r}."
            )
