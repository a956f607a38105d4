"""Where training metrics go: ``metrics.jsonl``, TensorBoard event files and the console.

Every writer takes ``write(iteration, metrics)`` with ``metrics`` a flat ``dict[str, float]``
(keys like ``"loss_cls"``, ``"lr"``, ``"bbox/AP"``) and ``close()``. The trainer's metrics hook
computes the numbers on every rank (the loss averages are a collective) and hands them to the
writers on rank 0 only; the writers themselves do no rank check, so they stay usable alone.

Iterations are counted as completed steps. Resuming from a checkpoint taken after ``N`` steps
must not leave the killed run's later points behind: ``JSONLinesWriter`` drops the lines with
``iteration > N`` when it opens, and ``TensorBoardWriter`` passes ``purge_step=N + 1`` to
TensorBoard, which hides the events the killed run wrote after ``N``.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import resource
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = [
    "ConsoleWriter",
    "JSONLinesWriter",
    "MetricWriter",
    "TensorBoardWriter",
    "peak_memory_mb",
]


class MetricWriter:
    """Base of the writers: ``write`` one iteration's scalars, ``close`` at the end."""

    def write(self, iteration: int, metrics: Mapping[str, float]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _finite_or_text(value: float) -> float | str:
    # JSON has no NaN/inf; write them as strings so every line stays parseable by json.loads.
    return value if math.isfinite(value) else str(value)


class JSONLinesWriter(MetricWriter):
    """One JSON object per call, ``{"iteration": i, key: value, ...}``, appended to ``path``.

    Args:
        path: the ``.jsonl`` file (created with its parent directories).
        start_iter: the completed steps a resumed run restarts from; lines of a previous run
            with ``iteration > start_iter`` are dropped (they belong to steps that run again).
    """

    def __init__(self, path: str | os.PathLike, *, start_iter: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():  # a fresh start (0) drops a killed first attempt's lines
            self._truncate_after(start_iter)
        self._file = self.path.open("a", encoding="utf-8")

    def _truncate_after(self, start_iter: int) -> None:
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("iteration", -1) > start_iter:
                    continue
            except (json.JSONDecodeError, AttributeError):
                continue  # a line cut by the kill: drop it rather than keep a broken file
            kept.append(line + "\n")
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self, iteration: int, metrics: Mapping[str, float]) -> None:
        record = {"iteration": iteration, **{k: _finite_or_text(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardWriter(MetricWriter):
    """Scalars into TensorBoard event files under ``log_dir`` (``tensorboard --logdir DIR``)."""

    def __init__(self, log_dir: str | os.PathLike, *, start_iter: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        # purge_step hides the events a killed run wrote after the step we resume from.
        self._writer = SummaryWriter(str(log_dir), purge_step=start_iter + 1)

    def write(self, iteration: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, value, iteration)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak memory of this process in MiB: CUDA allocator peak on a GPU, else peak RSS."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (
        peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    )  # bytes on macOS, KiB on Linux


def _format_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


class ConsoleWriter(MetricWriter):
    """One log line per call: iteration, ETA, losses, lr, time/iter, data time, peak memory.

    Reads the keys the metrics hook produces: ``total_loss`` and ``loss_*``, ``lr``, ``time``
    (s/iter), ``data_time`` (s/iter), ``eta_seconds``, ``max_mem_mb``; anything else (evaluation
    numbers) is printed after them.
    """

    _KNOWN = ("lr", "time", "data_time", "eta_seconds", "max_mem_mb")

    def __init__(self, *, max_iter: int, logger: logging.Logger | None = None) -> None:
        self.max_iter = max_iter
        self.logger = logger or logging.getLogger("lazydet.train")

    def write(self, iteration: int, metrics: Mapping[str, float]) -> None:
        parts = [f"iter {iteration}/{self.max_iter}"]
        if "eta_seconds" in metrics:
            parts.append(f"eta {_format_seconds(metrics['eta_seconds'])}")
        losses = {k: v for k, v in metrics.items() if k == "total_loss" or k.startswith("loss")}
        parts += [f"{k} {v:.4g}" for k, v in losses.items()]
        if "lr" in metrics:
            parts.append(f"lr {metrics['lr']:.4g}")
        if "time" in metrics:
            parts.append(f"time {metrics['time']:.3f}s/it")
        if "data_time" in metrics:
            parts.append(f"data {metrics['data_time']:.3f}s")
        if "max_mem_mb" in metrics:
            parts.append(f"max_mem {metrics['max_mem_mb']:.0f}M")
        rest = {k: v for k, v in metrics.items() if k not in losses and k not in self._KNOWN}
        parts += [f"{k} {v:.4g}" for k, v in rest.items()]
        self.logger.info("  ".join(parts))
