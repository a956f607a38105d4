"""Benchmark: the training loop's own cost, and how long steps wait for data.

Three measurements on the quick-start Mask R-CNN (``conf=quickstart``), all in one process:

1. **Trainer overhead.** The same ``--iters`` cached batches trained three ways, each from the same
   initial weights (so every variant does exactly the same arithmetic):

   * ``bare``: forward, sum of losses, zero_grad, backward, optimizer and scheduler step;
   * ``torchvision``: the pattern of torchvision's reference ``train_one_epoch``
     (references/detection/engine.py): the same step plus, per iteration, the loss dict reduced
     over ranks, ``.item()`` of the total, a finiteness check and smoothed-value meters, as that
     loop does (written out here: the references are not part of the torchvision package);
   * ``lazydet``: :func:`lazydet.engine.run.train_built`, i.e. the Trainer with the hooks
     and writers ``python -m lazydet.train`` installs (checkpoint hook, metrics every
     ``--log-period`` iterations to the console, metrics.jsonl and TensorBoard, the final
     ``model_final.pth``).

   Variants alternate over ``--repeats`` rounds and the fastest round of each is kept. Reported:
   wall-clock and CPU seconds (``time.process_time``, all threads of this process: the TensorBoard
   writer's too), for the whole call (set-up, writers, final checkpoint included) and per step in
   the steady state (from the first batch taken to the last: hooks and logging included), and
   the ratios lazydet / bare (the overhead) and lazydet / torchvision. On a
   machine shared with other work, wall-clock ratios swing by tens of percent from one round to
   the next; CPU time counts only this process's own work and is the figure to compare there.

2. **Data wait** with the config's own loader and workers: the fraction of each step spent in
   ``next(loader)`` on ``shapes`` (``conf=quickstart``), and on the real COCO photos in
   ``../shared/data/coco_person_val2017`` mapped with the COCO recipe (short edge 640-800, max
   1333, the ``coco2017`` dataset's worker count), trained with the same model.

3. **Step variants** (``--step-variants N``, then only this): N interleaved rounds of one training
   step (forward, backward, SGD) of each variant on the same cached batches, from the same
   initial weights: ``torchvision ROIAlign bwd`` (the CPU backward lazydet used before issue
   #23: torchvision's serial kernel, forced with ``CPU_BACKWARD_MIN_ROIS``), ``as built``,
   ``+ channels-last`` (model weights in channels-last) and ``+ channels-last + bf16`` (under
   ``torch.autocast("cpu", torch.bfloat16)``, what ``train.amp=bf16`` does). Medians of wall
   and CPU seconds per step, ratios to the first.

Usage: ``python scripts/bench_train.py [--iters 20] [--repeats 2] [--data-iters 12]
[--step-variants 9]``
"""

from __future__ import annotations

import argparse
import collections
import copy
import importlib
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lazydet.config import compose, instantiate
from lazydet.engine.run import seed_everything, train_built
from lazydet.engine.train_config import TrainConfig
from lazydet.utils import comm

REPO_ROOT = Path(__file__).resolve().parents[1]
COCO_PHOTOS = REPO_ROOT.parent / "shared" / "data" / "coco_person_val2017"


def _build(cfg, seed: int = 0):
    """Model, optimizer and scheduler from the config, with the same initial weights each time."""
    seed_everything(seed)
    model = instantiate(cfg.model)
    optimizer = instantiate(cfg.optimizer, refs={"model": model}, root=cfg)
    scheduler = instantiate(cfg.schedule.lr_scheduler, refs={"optimizer": optimizer}, root=cfg)
    model.train()
    return model, optimizer, scheduler


class _TimedBatches:
    """The cached batches, noting (wall, CPU) time each time one is taken: the span from the
    first to the last take covers ``len - 1`` whole steps (hooks included), without the set-up
    before the loop and the final checkpoint after it."""

    def __init__(self, batches: list) -> None:
        self.batches = batches
        self.stamps: list[tuple[float, float]] = []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            self.stamps.append((time.perf_counter(), time.process_time()))
            yield batch

    def per_step(self) -> tuple[float, float]:
        (w0, c0), (w1, c1) = self.stamps[0], self.stamps[-1]
        steps = len(self.stamps) - 1
        return (w1 - w0) / steps, (c1 - c0) / steps


def bare_loop(model, optimizer, scheduler, batches) -> None:
    for batch in batches:
        loss_dict = model(batch)
        loss = sum(loss_dict.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


class _SmoothedValue:
    """torchvision references' SmoothedValue: a window and a global average."""

    def __init__(self, window_size: int = 20) -> None:
        self.deque: collections.deque[float] = collections.deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0

    def update(self, value: float) -> None:
        self.deque.append(value)
        self.count += 1
        self.total += value


def torchvision_loop(model, optimizer, scheduler, batches) -> None:
    """The per-iteration work of torchvision's reference ``train_one_epoch``."""
    meters: dict[str, _SmoothedValue] = collections.defaultdict(_SmoothedValue)
    for batch in batches:
        loss_dict = model(batch)
        losses = sum(loss for loss in loss_dict.values())
        # utils.reduce_dict: all-reduce the stacked losses (a no-op in one process).
        names = sorted(loss_dict)
        stacked = torch.stack([loss_dict[k].detach() for k in names])
        if comm.is_distributed():
            torch.distributed.all_reduce(stacked)
            stacked /= comm.get_world_size()
        reduced = dict(zip(names, stacked))
        loss_value = sum(reduced.values()).item()
        if not math.isfinite(loss_value):
            sys.exit(f"Loss is {loss_value}, stopping training")
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()
        scheduler.step()
        meters["loss"].update(loss_value)
        for k, v in reduced.items():
            meters[k].update(v.item())
        meters["lr"].update(optimizer.param_groups[0]["lr"])


def lazydet_loop(cfg, model, optimizer, scheduler, batches, log_period: int) -> None:
    built = {
        "model": model,
        "optimizer": optimizer,
        "schedule": {"max_iter": len(batches), "lr_scheduler": scheduler},
        "dataloader": {"train": batches},
        "train": TrainConfig(
            log_period=log_period, checkpoint_period=10**9, resume=False, device="cpu"
        ),
    }
    with tempfile.TemporaryDirectory() as run_dir:
        train_built(cfg, built, run_dir)


def overhead(cfg, iters: int, repeats: int, log_period: int) -> dict[str, float]:
    loader = iter(instantiate(cfg.dataloader.train))
    batches = [next(loader) for _ in range(iters)]
    del loader
    runners = {
        "bare": lambda m, o, s, b: bare_loop(m, o, s, b),
        "torchvision": lambda m, o, s, b: torchvision_loop(m, o, s, b),
        "lazydet": lambda m, o, s, b: lazydet_loop(cfg, m, o, s, b, log_period),
    }
    # Per variant, the best of the rounds: [total wall, total CPU, step wall, step CPU].
    best = {name: [math.inf] * 4 for name in runners}
    for round_index in range(repeats):
        order = list(runners) if round_index % 2 == 0 else list(reversed(runners))
        for name in order:
            model, optimizer, scheduler = _build(cfg)
            timed = _TimedBatches(batches)
            start, start_cpu = time.perf_counter(), time.process_time()
            runners[name](model, optimizer, scheduler, timed)
            figures = (
                time.perf_counter() - start,
                time.process_time() - start_cpu,
                *timed.per_step(),
            )
            best[name] = [min(a, b) for a, b in zip(best[name], figures)]
            print(
                f"  round {round_index} {name:<12} total {figures[0]:.2f} s wall "
                f"{figures[1]:.2f} s CPU; per step {figures[2]:.3f} s wall {figures[3]:.3f} s CPU",
                flush=True,
            )
    return best


def data_wait(cfg, iters: int, skip: int = 2) -> tuple[float, float]:
    """(fraction of step time spent waiting for the loader, seconds per step)."""
    model, optimizer, scheduler = _build(cfg)
    batches = iter(instantiate(cfg.dataloader.train))
    waited = total = 0.0
    for i in range(iters + skip):
        start = time.perf_counter()
        batch = next(batches)
        got = time.perf_counter()
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if i >= skip:  # the first batches include the workers' start-up
            waited += got - start
            total += time.perf_counter() - start
    return waited / total, total / iters


def step_variants(cfg, rounds: int) -> None:
    """Interleaved training steps of the variants in the module docstring (3.)."""
    roi_align_module = importlib.import_module("lazydet.ops.roi_align")
    built_min_rois = roi_align_module.CPU_BACKWARD_MIN_ROIS
    loader = iter(instantiate(cfg.dataloader.train))
    batches = [next(loader) for _ in range(6)]
    del loader
    variants = {  # name: (torchvision's ROIAlign backward, channels-last, bf16 autocast)
        "torchvision ROIAlign bwd": (True, False, False),
        "as built": (False, False, False),
        "+ channels-last": (False, True, False),
        "+ channels-last + bf16": (False, True, True),
    }
    model, _, _ = _build(cfg)
    states = {}
    for name, (_, channels_last, _) in variants.items():
        copied = copy.deepcopy(model)
        if channels_last:
            copied = copied.to(memory_format=torch.channels_last)
        states[name] = (copied, torch.optim.SGD(copied.parameters(), lr=0.02, momentum=0.9))
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(rounds + 1):  # round 0 warms up
        order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
        for name in order:
            torchvision_backward, _, bf16 = variants[name]
            roi_align_module.CPU_BACKWARD_MIN_ROIS = (
                10**9 if torchvision_backward else built_min_rois
            )
            variant_model, optimizer = states[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = sum(variant_model(batches[round_index % len(batches)]).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if round_index > 0:
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    roi_align_module.CPU_BACKWARD_MIN_ROIS = built_min_rois
    first = next(iter(variants))
    wall0, cpu0 = statistics.median(wall[first]), statistics.median(cpu[first])
    print(f"\nTraining step variants, median of {rounds} interleaved rounds:")
    print(f"  {'':<26} {'wall s':>8} {'ratio':>6} {'CPU s':>8} {'ratio':>6}")
    for name in variants:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"  {name:<26} {w:8.3f} {w / wall0:6.2f} {c:8.3f} {c / cpu0:6.2f}")


def coco_photos_config():
    from lazydet.data.datasets.coco import register_coco

    name = "bench_coco_person_val2017"
    register_coco(name, COCO_PHOTOS / "test_coco.json", COCO_PHOTOS)
    coco = compose("quickstart", ["dataset=coco2017"])
    cfg = compose("quickstart")
    cfg.dataloader.train.dataset = name
    augmentations = cfg.dataloader.train.mapper.augmentations
    augmentations.short_edge_length = list(coco.dataset.train_short_edge)
    augmentations.max_size = coco.dataset.max_size
    cfg.dataloader.train.num_workers = coco.dataset.num_workers
    cfg.dataloader.train.total_batch_size = 2  # 4 photos: two per batch
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=20, help="steps per overhead variant")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the three variants")
    parser.add_argument("--log-period", type=int, default=20, help="lazydet's train.log_period")
    parser.add_argument("--data-iters", type=int, default=12, help="steps for the data wait")
    parser.add_argument("--skip-coco", action="store_true", help="no COCO-photo data wait")
    parser.add_argument(
        "--step-variants", type=int, default=0, metavar="N", help="only time step variants"
    )
    args = parser.parse_args()

    cfg = compose("quickstart")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs; model: conf=quickstart (batch "
        f"{cfg.dataloader.train.total_batch_size})",
        flush=True,
    )
    if args.step_variants:
        step_variants(cfg, args.step_variants)
        return
    best = overhead(cfg, args.iters, args.repeats, args.log_period)
    print(f"\nTrainer overhead, {args.iters} steps, best of {args.repeats} rounds:")
    print(f"  {'':<12} {'total wall':>10} {'total CPU':>10} {'step wall':>10} {'step CPU':>10}")
    for name, (tw, tc, sw, sc) in best.items():
        print(f"  {name:<12} {tw:9.2f}s {tc:9.2f}s {sw:9.3f}s {sc:9.3f}s")
    for other in ("bare", "torchvision"):
        ratios = [a / b for a, b in zip(best["lazydet"], best[other])]
        print(
            f"  lazydet / {other:<12} total wall {ratios[0]:.3f}  total CPU {ratios[1]:.3f}  "
            f"step wall {ratios[2]:.3f}  step CPU {ratios[3]:.3f}"
        )

    fraction, step = data_wait(cfg, args.data_iters)
    workers = cfg.dataloader.train.num_workers
    print(
        f"\nData wait, shapes ({workers} worker(s)): {fraction:.1%} of step time ({step:.3f} s/step)"
    )
    if args.skip_coco:
        return
    if not (COCO_PHOTOS / "test_coco.json").is_file():
        print(f"Data wait, COCO photos: skipped ({COCO_PHOTOS} not found)")
        return
    coco_cfg = coco_photos_config()
    fraction, step = data_wait(coco_cfg, max(4, args.data_iters // 2))
    workers = coco_cfg.dataloader.train.num_workers
    print(
        f"Data wait, COCO photos 640-800 px ({workers} workers, batch 2): {fraction:.1%} of step "
        f"time ({step:.3f} s/step)"
    )


if __name__ == "__main__":
    main()
