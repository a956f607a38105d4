"""The training loop: a small core plus hooks.

The trainer knows no concrete model or dataset. It takes a module whose ``forward(batch)``
returns a ``dict[str, Tensor]`` of scalar losses in training mode, an iterable of batches, an
optimizer and (optionally) a per-iteration lr scheduler. Everything else (metrics, checkpoints,
evaluation) is a hook. The call order::

    hook.before_train()            for each hook, in list order (a checkpoint hook resumes here)
    for trainer.iter in range(trainer.start_iter, trainer.max_iter):
        hook.before_step()         for each hook
        trainer.run_step()         grad_accum_steps x (next batch, forward under autocast,
                                   sum the loss dict, check it is finite, backward), then clip,
                                   optimizer.step(), scheduler.step()
        (stop signal agreed)       SIGINT/SIGTERM/SIGUSR2 seen by any rank -> trainer.stop_signal
        hook.after_step()          for each hook (a checkpoint hook saves here on a stop signal)
        break if trainer.stop_signal
    hook.after_train()             for each hook, also after an exception

Where to extend: to change what a step computes (another loss, a teacher model), wrap the model;
to act between steps (log, save, evaluate, change a knob), write a hook; to change how a step
updates the weights, subclass and override ``run_step``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lazydet.utils import comm

from .hooks import HookBase

__all__ = ["NonFiniteLossError", "Trainer", "unwrap_model"]

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class NonFiniteLossError(FloatingPointError):
    """The summed loss of a step is NaN or infinite; the message names the iteration and terms."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or DataParallel) wrapper, else ``model``."""
    return (
        model.module
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel))
        else model
    )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


class Trainer:
    """Runs ``max_iter`` optimizer steps of ``model`` on ``data_loader``, calling ``hooks``.

    Args:
        model: ``model(batch) -> dict[str, Tensor]`` of scalar losses in training mode (already
            on its device; wrapped in DistributedDataParallel by the caller when world size > 1).
        data_loader: an iterable of batches (``list[dict]`` for lazydet's models). It is iterated
            once, lazily at the first step, so a checkpoint hook can restore its position first;
            a loader with ``state_dict()`` / ``load_state_dict()`` resumes at the exact sample.
        optimizer: a torch optimizer over the model's parameters.
        max_iter: number of optimizer steps of the whole run (``schedule.max_iter``).
        scheduler: an lr scheduler stepped once per iteration, or None.
        hooks: called in list order (see the module docstring).
        amp: ``None`` (float32), ``"bf16"`` (autocast to bfloat16, CPU or CUDA) or ``"fp16"``
            (CUDA only: autocast to float16 with a GradScaler).
        clip_grad_norm: clip the global L2 norm of the gradients to this value.
        grad_accum_steps: micro-batches per optimizer step. Each micro-batch's loss is divided
            by ``k``, so ``k`` micro-batches of ``b`` images give the gradient of one batch of
            ``k*b`` (exactly, for losses that are means over the batch and models without batch
            statistics). Under DDP the first ``k-1`` backward passes skip the all-reduce.
        writers: metric writers (``lazydet.utils.events``) the hooks write to; pass them on
            rank 0 only.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        data_loader: Iterable[Any],
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        scheduler: Any = None,
        hooks: Sequence[HookBase] = (),
        amp: str | None = None,
        clip_grad_norm: float | None = None,
        grad_accum_steps: int = 1,
        writers: Sequence[Any] = (),
    ) -> None:
        if max_iter < 0:
            raise ValueError(f"max_iter must be >= 0, got {max_iter}")
        if grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.max_iter = max_iter
        self.clip_grad_norm = clip_grad_norm
        self.grad_accum_steps = grad_accum_steps
        self.writers = list(writers)
        self.device = _model_device(model)
        self.amp_dtype, self.scaler = self._setup_amp(amp)
        self.iter = 0
        self.start_iter = 0
        self.finished = False  # True once max_iter steps are done (not after an error or a stop)
        self.stop_signal: str | None = None  # the signal name that ended the run early
        self._pending_signal: str | None = None  # set by the handler, agreed on between steps
        # True when the run stopped because another rank saw a signal (this one saw none): a
        # SLURM preemption reaches one task first, and every rank must end the same way.
        self.stopped_by_other_rank = False
        self._data_iter: Iterator[Any] | None = None
        # What the last step produced, for hooks: loss terms (floats), total, data time, lr.
        self.step_outputs: dict[str, Any] = {}
        self.hooks: list[HookBase] = []
        self.register_hooks(hooks)

    def _setup_amp(self, amp: str | None) -> tuple[torch.dtype | None, Any]:
        if amp is None:
            return None, None
        if amp == "bf16":
            return torch.bfloat16, None
        if amp == "fp16":
            if self.device.type != "cuda":
                raise ValueError(
                    f"train.amp='fp16' needs a CUDA device (the model is on {self.device}); "
                    "use train.amp=bf16 on the CPU, or train.amp=null for float32."
                )
            return torch.float16, torch.amp.GradScaler("cuda")
        raise ValueError(f"train.amp must be None, 'bf16' or 'fp16', got {amp!r}.")

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        for hook in hooks:
            if not isinstance(hook, HookBase):
                raise TypeError(f"hooks must be HookBase instances, got {type(hook).__name__}")
            hook.trainer = self
            self.hooks.append(hook)

    # ------------------------------------------------------------------ the loop
    def train(self, *, handle_signals: bool = True) -> None:
        """Run from ``start_iter`` (set by a resuming hook) to ``max_iter``; see the module doc.

        With ``handle_signals`` (and in the main thread), SIGINT, SIGTERM and SIGUSR2 end the run
        at the next step boundary (hooks save a checkpoint); a second SIGINT aborts at once.
        """
        handlers = _StopSignals(self) if handle_signals else contextlib.nullcontext()
        with handlers:
            self.model.train()
            for hook in self.hooks:
                hook.before_train()
            try:
                logger.info("Training from iteration %d to %d", self.start_iter, self.max_iter)
                for iteration in range(self.start_iter, self.max_iter):
                    self.iter = iteration
                    for hook in self.hooks:
                        hook.before_step()
                    self.run_step()
                    self.stop_signal = self._agree_on_stop()
                    for hook in self.hooks:
                        hook.after_step()
                    if self.stop_signal and iteration + 1 < self.max_iter:
                        break
                else:
                    # A signal during the last step changes nothing: the run is complete.
                    self.iter, self.finished, self.stop_signal = self.max_iter, True, None
            finally:
                for hook in self.hooks:
                    hook.after_train()

    @property
    def completed_iters(self) -> int:
        """Optimizer steps done so far (inside ``after_step``: including the current one)."""
        return self.max_iter if self.finished else self.iter + 1

    def _next_batch(self) -> Any:
        if self._data_iter is None:
            self._data_iter = iter(self.data_loader)
        try:
            return next(self._data_iter)
        except StopIteration:
            raise RuntimeError(
                f"the data loader ran out of batches at iteration {self.iter}; training needs an "
                "infinite loader (lazydet.data.build_train_loader), or a smaller schedule.max_iter."
            ) from None

    def run_step(self) -> None:
        """One optimizer step over ``grad_accum_steps`` micro-batches."""
        k = self.grad_accum_steps
        self.optimizer.zero_grad(set_to_none=True)
        data_time = 0.0
        totals: dict[str, float] = {}
        for micro in range(k):
            start = time.perf_counter()
            batch = self._next_batch()
            data_time += time.perf_counter() - start
            # Under DDP, only the last micro-batch's backward all-reduces the gradients.
            skip_sync = micro < k - 1 and hasattr(self.model, "no_sync")
            with self.model.no_sync() if skip_sync else contextlib.nullcontext():
                with self._autocast():
                    loss_dict = self.model(batch)
                total, values = self._sum_losses(loss_dict)
                loss = total / k if k > 1 else total
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            for name, value in values.items():
                totals[name] = totals.get(name, 0.0) + value / k
        if self.clip_grad_norm is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        lr = max(group["lr"] for group in self.optimizer.param_groups)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step_outputs = {
            "losses": totals,
            "total_loss": sum(totals.values()),
            "data_time": data_time,
            "lr": lr,
        }

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _sum_losses(self, loss_dict: Any) -> tuple[torch.Tensor, dict[str, float]]:
        if not isinstance(loss_dict, Mapping) or not loss_dict:
            raise TypeError(
                f"model(batch) returned {type(loss_dict).__name__} in training mode; the trainer "
                "needs a non-empty dict[str, Tensor] of scalar losses (is the model in train mode?)."
            )
        for name, value in loss_dict.items():
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise TypeError(
                    f"loss {name!r} is {type(value).__name__}"
                    f"{'' if not isinstance(value, torch.Tensor) else f' of shape {list(value.shape)}'};"
                    " each entry of the loss dict must be a scalar tensor."
                )
        # One host transfer for all terms: the finiteness check and the logged values.
        stacked = torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()])
        values = dict(zip(loss_dict.keys(), stacked.cpu().tolist()))
        bad = not all(math.isfinite(v) for v in values.values())
        if comm.is_distributed():
            # All ranks must stop together, or the healthy ones hang in the next all-reduce.
            flag = torch.tensor(
                [float(bad)], device=self.device if self.device.type == "cuda" else "cpu"
            )
            bad = comm.all_reduce_mean(flag).item() > 0
        if bad:
            terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            raise NonFiniteLossError(
                f"Loss is not finite at iteration {self.iter} (rank {comm.get_rank()} or another "
                f"rank): {terms}. Nothing was saved from this step; the run directory keeps the "
                "last good checkpoint. Lower the learning rate, raise the warm-up, set "
                "train.clip_grad_norm, or check the data of this iteration."
            )
        return sum(loss_dict.values()), values

    # ------------------------------------------------------------------ stop signals
    def request_stop(self, name: str) -> None:
        """Ask the loop to stop at the next step boundary (what the signal handlers call)."""
        self._pending_signal = name

    def _agree_on_stop(self) -> str | None:
        if not comm.is_distributed():
            return self._pending_signal
        # A signal may reach one rank only: every rank stops at the same step, or DDP hangs.
        flag = torch.tensor(
            [1.0 if self._pending_signal else 0.0],
            device=self.device if self.device.type == "cuda" else "cpu",
        )
        if comm.all_reduce_mean(flag).item() > 0:
            self.stopped_by_other_rank = self._pending_signal is None
            return self._pending_signal or "a signal on another rank"
        return None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain containers (``weights_only``-safe).

        Collective under DDP (the per-rank RNG and data positions are gathered): every rank must
        call it; the returned ``"ranks"`` list is complete on rank 0 only.
        """
        from .checkpointer import capture_rng_state

        per_rank = {"rng": capture_rng_state(), "data": _loader_state(self.data_loader)}
        gathered = comm.gather_object(per_rank)
        state: dict[str, Any] = {
            "iteration": self.completed_iters,
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "world_size": comm.get_world_size(),
            "ranks": gathered if gathered is not None else [],
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; the next step is ``state["iteration"]``."""
        from .checkpointer import restore_rng_state

        unwrap_model(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.start_iter = int(state["iteration"])
        ranks = state.get("ranks") or []
        rank, world_size = comm.get_rank(), comm.get_world_size()
        if len(ranks) == world_size and state.get("world_size") == world_size:
            mine = ranks[rank]
            restore_rng_state(mine["rng"])
            if mine.get("data") is not None and hasattr(self.data_loader, "load_state_dict"):
                self.data_loader.load_state_dict(mine["data"])
        else:
            logger.warning(
                "The checkpoint was written by %s processes and this run has %d: the weights, "
                "optimizer and schedule resume, but the data order and random state start afresh "
                "(the run is not bit-identical to an uninterrupted one).",
                state.get("world_size", "?"),
                world_size,
            )


def _loader_state(loader: Any) -> Any:
    return loader.state_dict() if hasattr(loader, "state_dict") else None


class _StopSignals:
    """Installs handlers that turn SIGINT/SIGTERM/SIGUSR2 into ``trainer.request_stop``."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.trainer._pending_signal and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait
        self.trainer.request_stop(name)
        logger.warning(
            "%s received: saving a checkpoint after the current step, then stopping%s.",
            name,
            " (Ctrl-C again aborts without saving)" if signum == signal.SIGINT else "",
        )

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
