"""Small pieces for the SLURM tests' config (``conf/slurm_tiny.py``): a model of a few hundred
parameters whose steps take a set time (so that a signal lands mid-training), that can fail on
purpose, and an evaluator that saves each rank's weights."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from lazydet.utils import comm


class SleepyTiny(nn.Module):
    """Predicts which classes an image holds from pooled conv features.

    ``step_seconds`` sleeps in every forward (the tests need training to last a few seconds);
    ``fail_at`` raises ``RuntimeError`` in that forward call (a job that crashes).
    """

    def __init__(self, *, num_classes: int, step_seconds: float = 0.0, fail_at: int = -1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.cls = nn.Linear(4, num_classes)
        self.num_classes = num_classes
        self.step_seconds = step_seconds
        self.fail_at = fail_at
        self.calls = 0

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        if self.calls == self.fail_at:
            raise RuntimeError(f"SleepyTiny fails on purpose at call {self.calls}")
        self.calls += 1
        time.sleep(self.step_seconds)
        feats = torch.cat(
            [F.relu(self.conv(d["image"].float()[None] / 255.0)).mean(dim=(2, 3)) for d in batch]
        )
        present = torch.zeros(len(batch), self.num_classes)
        for i, d in enumerate(batch):
            present[i, d["instances"].gt_classes] = 1.0
        return {"loss_cls": F.binary_cross_entropy_with_logits(self.cls(feats), present)}


def parameters_of(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters())


class SaveRankWeights:
    """Evaluator: saves this rank's weights to ``{out}/weights_rank{rank}.pt``."""

    def __init__(self, *, out: str) -> None:
        self.out = Path(out)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), self.out / f"weights_rank{comm.get_rank()}.pt")
        return {"saved_rank": float(comm.get_rank())}
