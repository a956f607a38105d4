"""A detector whose predictions are its weights, for tests that must know which weights ran.

``BoxOracle`` predicts one box per image, the same on every image: its parameter ``box`` (XYXY,
pixels of the original image) with score 1 and class ``logits.argmax()``. Built fresh, the box is
all zeros (an empty box, which matches nothing): only loaded weights can score any AP.
"""

from __future__ import annotations

import torch
from torch import nn

from lazydet.structures import Boxes, Instances


class BoxOracle(nn.Module):
    def __init__(self, *, num_classes: int) -> None:
        super().__init__()
        self.box = nn.Parameter(torch.zeros(4))
        self.logits = nn.Parameter(torch.zeros(num_classes))

    def forward(self, batch: list[dict]) -> list[dict]:
        outputs = []
        for item in batch:
            size = (
                item.get("height", item["image"].shape[-2]),
                item.get("width", item["image"].shape[-1]),
            )
            instances = Instances(size)
            instances.pred_boxes = Boxes(self.box.detach().clone()[None])
            instances.scores = torch.ones(1)
            instances.pred_classes = self.logits.detach().argmax()[None]
            outputs.append({"instances": instances})
        return outputs


def oracle_weights(box: list[float], class_index: int, num_classes: int) -> dict[str, torch.Tensor]:
    """A ``BoxOracle`` state dict that predicts ``box`` of contiguous class ``class_index``."""
    logits = torch.zeros(num_classes)
    logits[class_index] = 1.0
    return {"box": torch.tensor(box, dtype=torch.float32), "logits": logits}
