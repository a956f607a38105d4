"""Images per second of a model's inference or training step, as D2's/MMDet's ``benchmark.py``.

Protocol: ``warmup`` untimed steps (allocator, cuDNN autotuning, lazy initialisation), then
``runs`` timed runs of ``iters`` steps each; each run gives images/s = images / seconds, and the
result is the median over runs with the min and max as the spread. With ``data_loading=False``
one batch is read before timing and fed again and again (the model alone); with ``True`` every
step reads the next batch from the loader (what a user sees). On CUDA every step ends with a
``torch.cuda.synchronize()`` so the clock sees the GPU's work. The thread count (intra-op CPU
threads, ``torch.set_num_threads``) is set and reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["SpeedResult", "benchmark_config", "benchmark_steps", "inference_step", "train_step"]


@dataclass
class SpeedResult:
    """What one benchmark measured (``images_per_s``: one number per timed run)."""

    mode: str
    device: str
    threads: int
    batch_size: int
    data_loading: bool
    warmup: int
    iters: int
    runs: int
    images_per_s: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.images_per_s)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.images_per_s), max(self.images_per_s)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "median": self.median, "min": self.spread[0], "max": self.spread[1]}

    def __str__(self) -> str:
        low, high = self.spread
        return (
            f"{self.mode} on {self.device}, {self.threads} thread(s), batch {self.batch_size}, "
            f"data loading {'on' if self.data_loading else 'off'}: {self.median:.2f} images/s "
            f"(median of {self.runs} runs of {self.iters} iterations after {self.warmup} "
            f"warm-up; min {low:.2f}, max {high:.2f})"
        )


def _cycle(loader: Iterable) -> Iterator:
    while True:  # a test loader ends; a benchmark longer than the dataset starts it again
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("The data loader gave no batch: nothing to benchmark on.")


def benchmark_steps(
    step: Callable[[Any], None],
    loader: Iterable,
    *,
    mode: str,
    device: torch.device,
    warmup: int = 5,
    iters: int = 20,
    runs: int = 5,
    threads: int | None = None,
    data_loading: bool = False,
    progress: bool = False,
) -> SpeedResult:
    """Time ``step(batch)`` on batches of ``loader`` (each batch a list of images' dicts)."""
    for name, value, least in (("warmup", warmup, 0), ("iters", iters, 1), ("runs", runs, 1)):
        if value < least:
            raise ValueError(f"{name}={value} must be at least {least}.")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads={threads} must be at least 1.")
        torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    batches = _cycle(loader)
    fixed = next(batches)
    next_batch = (lambda: next(batches)) if data_loading else (lambda: fixed)
    for _ in range(warmup):
        step(next_batch())
    sync()
    timed = range(runs)
    if progress:
        from tqdm import tqdm

        timed = tqdm(timed, desc=f"{mode} runs", unit="run")
    speeds = []
    batch_size = len(fixed)
    for _ in timed:
        images = 0
        start = time.perf_counter()
        for _ in range(iters):
            batch = next_batch()
            step(batch)
            sync()
            images += len(batch)
        speeds.append(images / (time.perf_counter() - start))
    return SpeedResult(
        mode=mode,
        device=str(device),
        threads=torch.get_num_threads(),
        batch_size=batch_size,
        data_loading=data_loading,
        warmup=warmup,
        iters=iters,
        runs=runs,
        images_per_s=speeds,
    )


def inference_step(model: nn.Module) -> Callable[[Any], None]:
    """``model(batch)`` in eval mode without autograd."""
    model.eval()

    def step(batch: Any) -> None:
        with torch.inference_mode():
            model(batch)

    return step


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[Any], None]:
    """One optimizer step on the sum of the model's losses (the trainer's step, less hooks)."""
    model.train()

    def step(batch: Any) -> None:
        losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    return step


def benchmark_config(
    cfg: Any,
    *,
    mode: str = "inference",
    device: str | None = None,
    checkpoint: str | None = None,
    **kwargs: Any,
) -> SpeedResult:
    """Benchmark the experiment ``cfg``: its ``model`` on ``dataloader.test`` (inference) or
    ``dataloader.train`` with its ``optimizer`` (train). ``checkpoint`` (default
    ``train.init_checkpoint``, if set) loads weights first: a trained model keeps fewer
    proposals than a random one, so its heads run faster. ``kwargs`` go to ``benchmark_steps``.
    """
    from lazydet.checkpoint.build import build_model
    from lazydet.config import ConfigError, instantiate, select
    from lazydet.utils.comm import select_device

    if mode not in ("inference", "train"):
        raise ConfigError(f"mode={mode!r} is not 'inference' or 'train'.")
    loader_key = "dataloader.test" if mode == "inference" else "dataloader.train"
    for key in ("model", loader_key) + (("optimizer",) if mode == "train" else ()):
        if select(cfg, key) is None:
            raise ConfigError(f"The config has no '{key}' to build (needed by mode={mode}).")
    torch_device = select_device(device, key="device")
    # The one way a config becomes a model with its weights (the config's
    # train.init_checkpoint unless checkpoint= is given; "random" or none: initial weights).
    model, _ = build_model(cfg, weights=checkpoint or None, training=mode == "train")
    model = model.to(torch_device)
    loader = instantiate(select(cfg, loader_key))
    if mode == "inference":
        step = inference_step(model)
    else:
        optimizer = instantiate(cfg.optimizer, refs={"model": model})
        step = train_step(model, optimizer)
    return benchmark_steps(step, loader, mode=mode, device=torch_device, **kwargs)
