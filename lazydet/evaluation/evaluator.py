"""The evaluator protocol and the loop that feeds it: ``inference_on_dataset(model, loader, evaluator)``.

An evaluator sees every batch the model answered and computes metrics at the end::

    evaluator.reset()
    for inputs in loader:                      # this rank's shard of the dataset
        outputs = model(inputs)                # list[dict(instances=Instances)], image coordinates
        evaluator.process(inputs, outputs)     # keep what the metrics need (on CPU)
    results = evaluator.evaluate()             # gathers to rank 0; {} on the other ranks

Distributed gathering happens inside ``evaluate`` (``lazydet.utils.comm.gather_object``), so the
loop is the same in one process and under DDP. To add a metric, write a class with these three
methods; to run several, wrap them in ``DatasetEvaluators``.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from lazydet.utils import comm

logger = logging.getLogger("lazydet.evaluation")

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "inference_on_dataset"]


@runtime_checkable
class DatasetEvaluator(Protocol):
    """What ``inference_on_dataset`` needs from an evaluator."""

    def reset(self) -> None:
        """Forget everything processed so far (called before each evaluation)."""

    def process(self, inputs: Sequence[dict], outputs: Sequence[dict]) -> None:
        """Take one batch: the model's inputs (``image_id``, ``height``, ``width``, ...) and its
        outputs (``{"instances": Instances}`` per image, in original image coordinates)."""

    def evaluate(self) -> dict[str, Any]:
        """Metrics over everything processed on all ranks: ``{task: {metric: value}}`` on rank 0,
        ``{}`` on the others."""


class DatasetEvaluators:
    """Several evaluators run as one; their result dicts are merged (keys must not clash)."""

    def __init__(self, evaluators: Sequence[DatasetEvaluator]) -> None:
        self.evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self.evaluators:
            evaluator.reset()

    def process(self, inputs: Sequence[dict], outputs: Sequence[dict]) -> None:
        for evaluator in self.evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for evaluator in self.evaluators:
            for key, value in (evaluator.evaluate() or {}).items():
                if key in results:
                    raise ValueError(
                        f"Two evaluators both report {key!r} ({type(evaluator).__name__} is the "
                        "second); give them distinct tasks."
                    )
                results[key] = value
        return results


def _length(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def inference_on_dataset(
    model: nn.Module | Any,
    loader: Iterable[list[dict]],
    evaluator: DatasetEvaluator | None,
    *,
    log_period_s: float = 10.0,
) -> dict[str, Any]:
    """Run ``model`` on every batch of ``loader`` in eval mode and evaluate its outputs.

    Args:
        model: called as ``model(list[dict]) -> list[dict(instances=Instances)]``; put in eval
            mode for the loop (its mode is restored afterwards), gradients off.
        loader: batches (``list[dict]``) of this rank's shard (``build_test_loader`` shards).
        evaluator: a ``DatasetEvaluator`` (``None``: run inference and time it only).
        log_period_s: seconds between progress lines (images done, images/s, ETA).

    Returns:
        ``evaluator.evaluate()`` (``{}`` on ranks other than 0, or without an evaluator).
    """
    total = _length(loader)
    if evaluator is not None:
        evaluator.reset()
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    num_images, num_batches = 0, 0
    start = last_log = time.perf_counter()
    warmup_images, warmup_time = 0, 0.0  # the first batch (allocations, compilation) is not timed
    try:
        with torch.no_grad():
            for inputs in loader:
                outputs = model(inputs)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()  # time the model, not its queue
                if len(outputs) != len(inputs):
                    raise ValueError(
                        f"The model returned {len(outputs)} outputs for a batch of {len(inputs)} "
                        "images; it must return one dict per input image."
                    )
                if evaluator is not None:
                    evaluator.process(inputs, outputs)
                num_images += len(inputs)
                num_batches += 1
                now = time.perf_counter()
                if num_batches == 1:
                    warmup_images, warmup_time = num_images, now - start
                if now - last_log >= log_period_s:
                    last_log = now
                    logger.info(
                        "%s",
                        _progress(
                            num_batches, total, num_images, warmup_images, now - start - warmup_time
                        ),
                    )
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)
    elapsed = time.perf_counter() - start
    timed = elapsed - warmup_time
    rate = (
        (num_images - warmup_images) / timed
        if timed > 0 and num_images > warmup_images
        else (num_images / elapsed if elapsed > 0 else float("nan"))
    )
    logger.info(
        "Inference on %d images (this rank) took %s: %.2f images/s per process (%d processes).",
        num_images,
        datetime.timedelta(seconds=round(elapsed)),
        rate,
        comm.get_world_size(),
    )
    if num_images == 0:
        logger.warning("The loader yielded no image on rank %d.", comm.get_rank())
    if evaluator is None:
        return {}
    return evaluator.evaluate() or {}


def _progress(
    batches: int, total: int | None, images: int, warmup_images: int, timed_s: float
) -> str:
    rate = (images - warmup_images) / timed_s if timed_s > 0 else float("nan")
    if total is None:
        return f"Inference: {batches} batches, {images} images, {rate:.2f} images/s"
    per_batch = timed_s / max(batches - 1, 1)
    eta = datetime.timedelta(seconds=round(per_batch * (total - batches)))
    return f"Inference: batch {batches}/{total}, {rate:.2f} images/s, ETA {eta}"
