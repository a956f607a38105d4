"""A tiny detector-shaped model and data for the trainer tests (fast on 2 CPU cores).

``TinyDetector`` takes lazydet's model input (``list[dict]`` with a CHW uint8 ``image`` and
``instances.gt_classes``) and returns two losses: which classes are present (multi-label BCE)
and how many instances there are (smooth L1). It has dropout, so a resume that does not restore
the torch generator diverges, and no batch statistics.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

CONF_DIR = Path(__file__).resolve().parent / "tiny_conf"


class TinyDetector(nn.Module):
    def __init__(self, *, num_classes: int, channels: int = 8, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.cls = nn.Linear(channels, num_classes)
        self.count = nn.Linear(channels, 1)

    def features(self, batch: list[dict]) -> torch.Tensor:
        # Images may differ in size: pool each one on its own. [B, channels]
        return torch.cat(
            [F.relu(self.conv(d["image"].float()[None] / 255.0)).mean(dim=(2, 3)) for d in batch]
        )

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        feats = self.dropout(self.features(batch))
        present = torch.zeros(len(batch), self.num_classes)
        counts = torch.zeros(len(batch), 1)
        for i, d in enumerate(batch):
            classes = d["instances"].gt_classes
            present[i, classes] = 1.0
            counts[i, 0] = float(len(classes))
        return {
            "loss_cls": F.binary_cross_entropy_with_logits(self.cls(feats), present),
            "loss_count": F.smooth_l1_loss(self.count(feats), counts),
        }


class NaNAfter(TinyDetector):
    """Returns a NaN ``loss_count`` from iteration ``nan_at`` on (counted in forward calls)."""

    def __init__(self, *, nan_at: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_at = nan_at
        self.calls = 0

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        losses = super().forward(batch)
        self.calls += 1
        if self.calls > self.nan_at:
            losses["loss_count"] = losses["loss_count"] * float("nan")
        return losses


def parameters_of(module: nn.Module) -> list[nn.Parameter]:
    """The optimizer's ``params`` in the tiny config."""
    return list(module.parameters())


class WeightNorm:
    """A callable evaluator for the config's ``evaluator`` slot: ``{"tiny": {"weight_norm": x}}``."""

    def __call__(self, model: nn.Module) -> dict[str, dict[str, float]]:
        with torch.no_grad():
            norm = torch.linalg.vector_norm(torch.cat([p.flatten() for p in model.parameters()]))
        return {"tiny": {"weight_norm": float(norm)}}
