"""Hooks: what happens around the trainer's steps (see ``lazydet.engine.trainer`` for the order).

A hook gets ``self.trainer`` when registered and may read ``trainer.iter``,
``trainer.completed_iters``, ``trainer.max_iter``, ``trainer.step_outputs`` (the last step's loss
terms, total, data time and lr) and ``trainer.writers``. Hooks that run a collective (averaging
losses over ranks, gathering checkpoint state, evaluating) run on every rank at the same
iterations; only their writing is limited to rank 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from lazydet.utils import comm
from lazydet.utils.events import MetricWriter, peak_memory_mb

if TYPE_CHECKING:
    from .checkpointer import Checkpointer
    from .trainer import Trainer

__all__ = ["CheckpointHook", "EvalHook", "HookBase", "MetricsHook"]

logger = logging.getLogger(__name__)


class HookBase:
    """Override any of the four methods; the defaults do nothing."""

    trainer: Trainer

    def before_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        pass


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}/{key}" if prefix else str(key), item, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)


class MetricsHook(HookBase):
    """Every ``period`` iterations (and at the last), writes the means since the last write of
    the loss terms, total loss, time per iteration and data time, plus lr, ETA and peak memory.

    Losses are averaged over ranks (a collective: every rank runs this hook); the writers are
    the trainer's. With ``open_writers``, this hook opens them in ``before_train`` once the
    resume point is known (``open_writers(start_iter) -> writers``; return none on ranks other
    than 0) and closes them in ``after_train``: register it after the checkpoint hook (which
    resumes) and after the eval hook (which writes its final numbers in ``after_train``).
    """

    def __init__(
        self,
        *,
        period: int,
        open_writers: Callable[[int], list[MetricWriter]] | None = None,
    ) -> None:
        if period < 1:
            raise ValueError(f"log period must be >= 1, got {period}")
        self.period = period
        self.open_writers = open_writers
        self._reset()

    def _reset(self) -> None:
        self._sums: dict[str, float] = {}
        self._count = 0
        self._step_start = 0.0

    def before_train(self) -> None:
        self._reset()
        self._last_step_end: float | None = None
        if self.open_writers is not None:
            self.trainer.writers = list(self.open_writers(self.trainer.start_iter))

    def after_train(self) -> None:
        if self.open_writers is not None:
            for writer in self.trainer.writers:
                writer.close()

    def before_step(self) -> None:
        self._step_start = time.perf_counter()

    def after_step(self) -> None:
        out = self.trainer.step_outputs
        now = time.perf_counter()
        # Time per iteration runs from one step's end to the next (hooks included), so the
        # ETA accounts for logging and checkpointing too; the first step uses its own span.
        span = now - (self._last_step_end if self._last_step_end is not None else self._step_start)
        self._last_step_end = now
        values = {**out.get("losses", {}), "time": span, "data_time": out.get("data_time", 0.0)}
        if "total_loss" in out:
            values["total_loss"] = out["total_loss"]
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + value
        self._count += 1
        done = self.trainer.completed_iters
        if done % self.period == 0 or done >= self.trainer.max_iter or self.trainer.stop_signal:
            self._write(done, out.get("lr"))

    def _write(self, iteration: int, lr: float | None) -> None:
        means = {k: v / self._count for k, v in self._sums.items()}
        means = comm.reduce_dict_mean(means)
        metrics = {k: v for k, v in means.items() if k not in ("time", "data_time")}
        if lr is not None:
            metrics["lr"] = lr
        metrics["time"] = means["time"]
        metrics["data_time"] = means["data_time"]
        metrics["eta_seconds"] = means["time"] * (self.trainer.max_iter - iteration)
        metrics["max_mem_mb"] = peak_memory_mb(self.trainer.device)
        for writer in self.trainer.writers:
            writer.write(iteration, metrics)
        self._sums, self._count = {}, 0


class CheckpointHook(HookBase):
    """Resumes in ``before_train``; saves every ``period`` iterations, on a stop signal, and
    ``model_final.pth`` at the end.

    A checkpoint whose model tensors (names and shapes) do not fit this run's model is refused
    with a ``RunRefused`` (a ConfigError) naming the run directory's ``config.py`` (the config the checkpoint was
    trained with) and ``config_name`` (this command's), before anything is loaded or written.

    Args:
        checkpointer: the run directory's :class:`Checkpointer`.
        period: iterations between periodic saves.
        resume: load the newest complete checkpoint before the first step (else move old ones
            aside and start over).
        write_run_files: called on rank 0 once the resume is decided (the checkpoint fits, or
            the old run was moved aside), before anything else is written: the run's config
            files are written there, so a refused resume leaves the old ones in place.
        config_name: this command's config, for the message of a checkpoint that does not fit.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        *,
        period: int,
        resume: bool = True,
        write_run_files: Callable[[], None] | None = None,
        config_name: str = "this command's config",
    ) -> None:
        if period < 1:
            raise ValueError(f"checkpoint period must be >= 1, got {period}")
        self.checkpointer = checkpointer
        self.period = period
        self.resume = resume
        self.write_run_files = write_run_files
        self.config_name = config_name
        self.resumed_from: str | None = None
        self.last_saved: str | None = None

    def before_train(self) -> None:
        if comm.is_main_process():
            self.checkpointer.lock()
        if not self.resume:
            if comm.is_main_process():
                moved = self.checkpointer.move_aside()
                if moved is not None:
                    logger.warning(
                        "train.resume=false: starting over; the previous checkpoints of %s were "
                        "moved to %s.",
                        self.checkpointer.directory,
                        moved,
                    )
            self._write_run_files()
            return
        found = self.checkpointer.load_latest()
        if found is not None:
            path, state = found
            self._check_fits(path, state.get("model"))
            self.trainer.load_state_dict(state)
            self.resumed_from = str(path)
            logger.info("Resumed from %s at iteration %d", path, self.trainer.start_iter)
        self._write_run_files()

    def _write_run_files(self) -> None:
        if self.write_run_files is not None and comm.is_main_process():
            self.write_run_files()
        comm.synchronize()

    def _check_fits(self, path: Any, saved: Any) -> None:
        """ConfigError when the checkpoint's model tensors (names, shapes) differ from the
        model's: it belongs to a run of another config."""
        from torch import nn

        from .run_lock import RunRefused

        model = self.trainer.model  # unwrapped here: trainer.py imports this module
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        own = model.state_dict()
        saved = saved if isinstance(saved, Mapping) else {}
        missing = [k for k in own if k not in saved]
        unexpected = [k for k in saved if k not in own]
        shapes = [
            f"{k} {tuple(saved[k].shape)} vs {tuple(own[k].shape)}"
            for k in own
            if k in saved and hasattr(saved[k], "shape") and saved[k].shape != own[k].shape
        ]
        if not (missing or unexpected or shapes):
            return
        parts = []
        for what, names in (
            ("missing from the checkpoint", missing),
            ("not in the model", unexpected),
            ("of another shape (checkpoint vs model)", shapes),
        ):
            if names:
                more = f" and {len(names) - 3} more" if len(names) > 3 else ""
                parts.append(f"{len(names)} tensor(s) {what}: {', '.join(names[:3])}{more}")
        directory = self.checkpointer.directory
        raise RunRefused(
            f"Cannot resume: {path} does not fit the model of {self.config_name} "
            f"({'; '.join(parts)}). The run in {directory} was trained with "
            f"{directory / 'config.py'}. Resume it with that config (conf={directory / 'config.py'}), "
            "train this config in a new directory (hydra.run.dir=NEW_DIR), or start over here "
            "with train.resume=false (the old run is moved aside). Nothing was changed."
        )

    def _save(self, name: str) -> None:
        state = self.trainer.state_dict()  # collective under DDP: every rank calls it
        if comm.is_main_process():
            self.last_saved = str(self.checkpointer.save(name, state))
        comm.synchronize()

    def after_step(self) -> None:
        from .checkpointer import periodic_name

        done = self.trainer.completed_iters
        # The final iteration is saved by after_train as model_final.pth.
        if done < self.trainer.max_iter and (done % self.period == 0 or self.trainer.stop_signal):
            self._save(periodic_name(done))

    def after_train(self) -> None:
        from .checkpointer import FINAL_CHECKPOINT

        try:
            # A rerun of a finished run (start_iter == max_iter) already has its final file.
            if self.trainer.finished and self.trainer.start_iter < self.trainer.max_iter:
                self._save(FINAL_CHECKPOINT)
        finally:
            self.checkpointer.unlock()


class EvalHook(HookBase):
    """Runs ``evaluate()`` every ``period`` iterations (0: never in between) and after the last;
    writes the numbers it returns (a possibly nested dict of floats, e.g.
    ``{"bbox": {"AP": 41.2}}`` -> ``bbox/AP``) to the trainer's writers.

    ``evaluate`` runs on every rank (evaluators gather across ranks themselves); it is expected
    to put the model in eval mode and back (``inference_on_dataset`` does), and this hook
    restores training mode regardless.
    """

    def __init__(self, evaluate: Callable[[], Any], *, period: int = 0) -> None:
        if period < 0:
            raise ValueError(f"eval period must be >= 0, got {period}")
        self.evaluate = evaluate
        self.period = period
        self.latest: dict[str, float] = {}

    def _run(self) -> None:
        iteration = self.trainer.completed_iters
        start = time.perf_counter()
        results = self.evaluate()
        self.trainer.model.train()
        flat: dict[str, float] = {}
        _flatten("", results or {}, flat)
        self.latest = flat
        logger.info(
            "Evaluation at iteration %d (%.1f s): %s",
            iteration,
            time.perf_counter() - start,
            ", ".join(f"{k}={v:.4g}" for k, v in flat.items()) or "no numbers",
        )
        for writer in self.trainer.writers:
            writer.write(iteration, flat)
        comm.synchronize()

    def after_step(self) -> None:
        done = self.trainer.completed_iters
        if self.period and done % self.period == 0 and done < self.trainer.max_iter:
            self._run()

    def after_train(self) -> None:
        if self.trainer.finished:
            self._run()
