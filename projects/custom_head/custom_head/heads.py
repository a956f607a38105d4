"""``LightMaskHead``: depthwise-separable convs and a bilinear upsample instead of Mask R-CNN's
3x3 convs and transposed conv.

It follows the contract ``lazydet.modeling.roi_heads.StandardROIHeads`` documents for a mask head
(nothing is registered anywhere: a config names this class by its import path):

* built as ``mask_head(in_channels=C, num_classes=K)``: the ROI heads pass the sizes they know,
  so a config gives only this head's own knobs (``L(LightMaskHead)(hidden_dim=32, _partial_=True)``);
* ``forward(x: Tensor[R, C, P, P]) -> Tensor[R, K or 1, 2P, 2P]`` mask logits over each ROI's box;
* ``losses(logits, proposals, gt_masks) -> {"loss_mask": ...}``;
* ``inference(logits, detections)`` sets ``pred_masks`` on the detections.

The loss and inference are lazydet's public ``mask_rcnn_loss`` / ``mask_rcnn_inference``: a new
head only writes what is new about it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from lazydet.modeling.roi_heads import mask_rcnn_inference, mask_rcnn_loss
from lazydet.structures import BitMasks, Instances, PolygonMasks


class _SeparableConv(nn.Module):
    """3x3 depthwise conv + 1x1 pointwise conv + ReLU: ``[R, D, P, P] -> [R, D, P, P]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.pointwise = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.pointwise(self.depthwise(x)))


class LightMaskHead(nn.Module):
    """1x1 reduction to ``hidden_dim``, ``num_convs`` separable convs, 2x bilinear upsample,
    1x1 predictor.

    Args:
        in_channels: channels of the pooled ROI features (given by ``StandardROIHeads``).
        num_classes: foreground classes (given by ``StandardROIHeads``).
        hidden_dim: channels inside the head.
        num_convs: separable 3x3 convs after the reduction.
        cls_agnostic_mask: predict one mask per ROI instead of one per class.
        loss_weight: multiplier of ``loss_mask``.

    ``forward(x: Tensor[R, in_channels, P, P]) -> Tensor[R, num_classes or 1, 2P, 2P]`` logits
    over each ROI's box (XYXY absolute pixels in the input image).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        hidden_dim: int = 64,
        num_convs: int = 2,
        cls_agnostic_mask: bool = False,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if in_channels <= 0 or num_classes <= 0 or hidden_dim <= 0 or num_convs < 0:
            raise ValueError(
                "LightMaskHead needs positive in_channels, num_classes and hidden_dim and "
                f"num_convs >= 0, got in_channels={in_channels}, num_classes={num_classes}, "
                f"hidden_dim={hidden_dim}, num_convs={num_convs}."
            )
        self.reduce = nn.Conv2d(in_channels, hidden_dim, 1)
        self.convs = nn.Sequential(*(_SeparableConv(hidden_dim) for _ in range(num_convs)))
        self.predictor = nn.Conv2d(hidden_dim, 1 if cls_agnostic_mask else num_classes, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # He init for the convs followed by ReLU...
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        # ...and a small predictor, so every mask starts near probability 0.5.
        nn.init.normal_(self.predictor.weight, std=0.001)
        self.loss_weight = loss_weight

    def forward(self, x: Tensor) -> Tensor:
        x = self.convs(F.relu(self.reduce(x)))
        # Upsampling the hidden features (not the logits) lets the predictor sharpen edges.
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.predictor(x)

    def losses(
        self,
        mask_logits: Tensor,
        proposals: Sequence[Instances],
        gt_masks: Sequence[BitMasks | PolygonMasks],
    ) -> dict[str, Tensor]:
        """``{"loss_mask": ...}``: per-pixel BCE on the foreground ``proposals``."""
        return {"loss_mask": mask_rcnn_loss(mask_logits, proposals, gt_masks) * self.loss_weight}

    def inference(self, mask_logits: Tensor, detections: Sequence[Instances]) -> None:
        """Set ``pred_masks`` (``[D, 2P, 2P]`` probabilities over each box) on ``detections``."""
        mask_rcnn_inference(mask_logits, detections)
