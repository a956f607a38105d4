"""Helpers shared by the test files (importable as ``helpers``: tests/conftest.py puts tests/ on
``sys.path``). One home each, so that a fix to a helper reaches every test that uses it."""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import io
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

__all__ = [
    "freeze_batchnorms",
    "import_kernels",
    "in_ci",
    "losses_before_and_after_steps",
    "pycocotools_evaluate",
    "random_boxes",
    "run_python",
    "tiny_vit",
]


def random_boxes(
    count: int,
    generator: torch.Generator | int,
    *,
    extent: float | tuple[float, float] = 50.0,
    offset: float = 0.0,
    min_side: float = 0.5,
    side_spread: float = 50.0,
    clip_to: tuple[float, float] | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``count`` random XYXY boxes (absolute pixels), shape ``(count, 4)``.

    The top-left corner is uniform in ``[offset, offset + extent)`` (``extent`` a number or
    ``(width, height)``), each side uniform in ``[min_side, min_side + side_spread)``, so every
    box has positive width and height when ``min_side > 0``. With ``clip_to=(width, height)``
    the bottom-right corner is clipped to the image (boxes then stay inside it when the
    top-left is).

    Args:
        generator: a ``torch.Generator`` (consumed: two draws), or a seed for a fresh one.
    """
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    scale = torch.tensor(extent, dtype=dtype) if isinstance(extent, tuple) else extent
    top_left = torch.rand(count, 2, generator=generator, dtype=dtype) * scale + offset
    sides = torch.rand(count, 2, generator=generator, dtype=dtype) * side_spread + min_side
    bottom_right = top_left + sides
    if clip_to is not None:
        bottom_right = torch.minimum(bottom_right, torch.tensor(clip_to, dtype=dtype))
    return torch.cat((top_left, bottom_right), dim=1)


def in_ci() -> bool:
    """Whether the tests run in CI (``CI=true``, as GitHub Actions, GitLab and most CIs set)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def import_kernels(module: str) -> ModuleType:
    """Import a Triton kernel module for a test file, at module level.

    Skips the file only where Triton itself is not installed (a laptop without it) and not in
    CI. Any other import failure (a broken import inside ``lazydet.kernels``), and any failure at
    all in CI, fails the file's collection: a broken import must never silently skip all of a
    file's kernel tests.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = getattr(error, "name", None) or ""
        if missing.split(".")[0] == "triton" and not in_ci():
            pytest.skip(
                f"{module} needs Triton, which is not installed ({error}); in CI (CI=true) "
                "this fails instead",
                allow_module_level=True,
            )
        raise ImportError(
            f"{module} failed to import: {error}. "
            + (
                "CI=true, so a missing Triton fails here rather than skipping."
                if missing.split(".")[0] == "triton"
                else "This is a broken import, not a missing optional dependency."
            )
        ) from error


def freeze_batchnorms(module: torch.nn.Module) -> None:
    """Replace every ``BatchNorm2d`` in ``module`` by a ``FrozenBatchNorm2d`` with the same
    statistics, as torchvision's detection models do for pretrained backbones (in place)."""
    from torchvision.ops import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, key).copy_(getattr(child, key).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorms(child)


def pycocotools_evaluate(gt: dict, results: list, iou_type: str, **params: Any) -> Any:
    """The reference: ``pycocotools.cocoeval.COCOeval`` run directly on copies of ``gt`` (a COCO
    dataset dict) and ``results`` (its result list), ``params`` set on ``evaluator.params``
    (``catIds=[1]``, ``maxDets=[1, 5, 20]``...). Returns the evaluator after ``summarize``
    (``.stats``: the 12 numbers, 10 for keypoints); its printout is swallowed."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iou_type)
        for key, value in params.items():
            setattr(evaluator.params, key, value)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def run_python(
    args: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``python *args`` with the interpreter running the tests (``["-m", "lazydet.train", ...]``,
    ``["-c", code]``), as a user runs it: a separate process, stdout and stderr captured as text.

    ``env`` defaults to this process's environment (where ``fixture_conf`` has set
    ``LAZYDET_CONFIG_PATH`` and ``PYTHONPATH``); ``timeout`` (seconds) stops a hung child, it is
    not a speed target.
    """
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_vit(**overrides: Any) -> torch.nn.Module:
    """A ViT small enough for CPU tests: 2 blocks of width 64 (4 heads) on 64x64 images in 16-pixel
    patches, relative positions, block 0 in 2x2-token windows; ``overrides`` replace any of these
    (or set another ``ViT`` argument)."""
    from lazydet.modeling.backbone import ViT

    size = dict(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=4)
    attention = dict(use_rel_pos=True, window_size=2, window_block_indexes=(0,))
    return ViT(**{**size, **attention, "pretrain_img_size": 64, **overrides})


def losses_before_and_after_steps(
    losses_at: Callable[[int], dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    steps: int,
    *,
    probe_seed: int = 100,
) -> tuple[dict[str, float], dict[str, float]]:
    """``(before, after)``: the losses of ``losses_at(probe_seed)`` before and after ``steps``
    optimizer steps on the summed losses of ``losses_at(0)``, ``losses_at(1)``...

    ``losses_at(seed)`` runs the model in training mode with its random sampling (anchors,
    ROIs) seeded by ``seed``, so ``before`` and ``after`` compare the same draw.
    """
    before = {name: loss.item() for name, loss in losses_at(probe_seed).items()}
    for step in range(steps):
        losses = losses_at(step)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    after = {name: loss.item() for name, loss in losses_at(probe_seed).items()}
    return before, after


def compile_graph_breaks() -> ModuleType:
    """``scripts/compile_graph_breaks.py`` as a module (it builds the models the compile tests use
    and sets dynamo's flags for data-dependent shapes)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "compile_graph_breaks.py"
    spec = importlib.util.spec_from_file_location("compile_graph_breaks", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def break_sites(explanation: Any) -> dict[str, int]:
    """``torch._dynamo.explain``'s graph breaks counted by ``file:function`` under lazydet/."""
    sites: dict[str, int] = {}
    for reason in explanation.break_reasons:
        frame = reason.user_stack[-1]
        site = f"{frame.filename.split('lazydet/')[-1]}:{frame.name}"
        sites[site] = sites.get(site, 0) + 1
    return sites
