"""Mask R-CNN mask head: pooled ROI features -> per-class mask logits, its loss and inference.

A mask prediction covers its ROI's box: an ``M x M`` grid stretched over the box (``M`` is twice
the pooler resolution), not the image. ``lazydet.modeling.postprocessing.paste_masks_in_image``
turns it into an image-sized mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lazydet.layers import NormSpec, caffe2_msra_fill, check_positive_sizes, conv_norm_act_stack
from lazydet.modeling.roi_heads.loss_inputs import check_roi_loss_inputs
from lazydet.ops import roi_align
from lazydet.structures import BitMasks, Instances, PolygonMasks


class MaskRCNNConvUpsampleHead(nn.Module):
    """``len(conv_dims)`` 3x3 convs + ReLU, a 2x2 stride-2 deconv + ReLU, a 1x1 mask predictor.

    The architecture of Detectron2's ``MaskRCNNConvUpsampleHead`` and torchvision's
    ``MaskRCNNHeads`` + ``MaskRCNNPredictor``, except that Detectron2 (and lazydet) predict one
    channel per foreground class (``num_classes``) where torchvision also predicts one for the
    background.

    Args:
        in_channels: channels of the pooled features (given by ``StandardROIHeads``).
        num_classes: foreground classes (given by ``StandardROIHeads``).
        conv_dims: output channels of the 3x3 convs; the deconv keeps the last one
            (``in_channels`` when empty).
        norm: after each conv (see ``lazydet.layers.get_norm``): a name, a class/partial called
            with the channel count, or None.
        cls_agnostic_mask: predict one mask per ROI instead of one per class.
        loss_weight: multiplier of ``loss_mask``.
        target_aligned: crop the ground-truth masks with RoIAlign ``aligned=True`` (Detectron2)
            or ``False`` (torchvision). Only ``BitMasks`` support ``False``.
        binarize_targets: threshold the cropped targets at 0.5 (Detectron2) or train on the soft
            crops (torchvision).

    ``forward(x: Tensor[R, in_channels, P, P]) -> Tensor[R, num_classes or 1, 2P, 2P]`` logits.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        conv_dims: Sequence[int] = (256, 256, 256, 256),
        norm: NormSpec = None,
        cls_agnostic_mask: bool = False,
        loss_weight: float = 1.0,
        target_aligned: bool = True,
        binarize_targets: bool = True,
    ) -> None:
        super().__init__()
        check_positive_sizes(
            "MaskRCNNConvUpsampleHead",
            in_channels=in_channels,
            num_classes=num_classes,
            conv_dims=conv_dims,
        )
        # Convs and deconv are followed by ReLU: He init (fan_out), Detectron2's "MSRA fill".
        owner = "MaskRCNNConvUpsampleHead norm"
        self.convs = conv_norm_act_stack(
            in_channels, conv_dims, norm=norm, init=caffe2_msra_fill, owner=owner
        )
        channels = conv_dims[-1] if conv_dims else in_channels
        self.deconv = nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        self.predictor = nn.Conv2d(channels, 1 if cls_agnostic_mask else num_classes, 1)
        caffe2_msra_fill(self.deconv)
        # A small predictor init (Detectron2) starts every mask near probability 0.5.
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)
        self.num_classes = num_classes
        self.cls_agnostic_mask = cls_agnostic_mask
        self.loss_weight = loss_weight
        self.target_aligned = target_aligned
        self.binarize_targets = binarize_targets

    def forward(self, x: Tensor) -> Tensor:
        return self.predictor(F.relu(self.deconv(self.convs(x))))

    def losses(
        self,
        mask_logits: Tensor,
        proposals: Sequence[Instances],
        gt_masks: Sequence[BitMasks | PolygonMasks],
    ) -> dict[str, Tensor]:
        """``{"loss_mask": ...}`` for the foreground ``proposals`` (see ``mask_rcnn_loss``)."""
        loss = mask_rcnn_loss(
            mask_logits,
            proposals,
            gt_masks,
            target_aligned=self.target_aligned,
            binarize_targets=self.binarize_targets,
        )
        return {"loss_mask": loss * self.loss_weight}

    def inference(self, mask_logits: Tensor, detections: Sequence[Instances]) -> None:
        """Set ``pred_masks`` on ``detections`` (see ``mask_rcnn_inference``)."""
        mask_rcnn_inference(mask_logits, detections)


def mask_rcnn_targets(
    gt_masks: BitMasks | PolygonMasks,
    gt_idxs: Tensor,
    boxes: Tensor,
    mask_size: int,
    *,
    aligned: bool = True,
) -> Tensor:
    """Ground-truth mask ``gt_idxs[i]`` cropped to ``boxes[i]`` and resampled to ``M x M``.

    Args:
        gt_masks: the image's ground-truth masks (image coordinates).
        gt_idxs: ``[R]`` long, the ground truth each box is matched to.
        boxes: ``[R, 4]`` XYXY pixels (proposal boxes).
        mask_size: ``M``.
        aligned: RoIAlign's half-pixel alignment (see ``MaskRCNNConvUpsampleHead``).

    Returns:
        ``[R, M, M]`` float in ``[0, 1]``, on the boxes' device.

    ``BitMasks`` are sampled with RoIAlign (adaptive sampling) straight from the ``G`` image-sized
    masks, each ROI reading its matched mask's batch slot. That is what
    ``BitMasks.crop_and_resize`` computes, without first copying one full-image mask per ROI.
    """
    if isinstance(gt_masks, BitMasks):
        if len(boxes) == 0:
            return boxes.new_zeros((0, mask_size, mask_size))
        masks = gt_masks.tensor.to(boxes.device)[:, None].to(boxes.dtype)
        rois = torch.cat([gt_idxs.to(boxes.dtype)[:, None], boxes], dim=1)
        crops = roi_align(masks, rois, mask_size, 1.0, sampling_ratio=0, aligned=aligned)
        return crops[:, 0].clamp(0.0, 1.0)
    if isinstance(gt_masks, PolygonMasks):
        if not aligned:
            raise ValueError(
                "mask_rcnn_targets: aligned=False (torchvision's targets) needs BitMasks; "
                "PolygonMasks rasterise exactly inside the box. Use aligned=True or convert the "
                "masks with to_bitmasks(height, width)."
            )
        return gt_masks[gt_idxs].crop_and_resize(boxes, mask_size).to(boxes.device)
    raise TypeError(f"gt_masks must be BitMasks or PolygonMasks, got {type(gt_masks).__name__}.")


def mask_rcnn_loss(
    mask_logits: Tensor,
    proposals: Sequence[Instances],
    gt_masks: Sequence[BitMasks | PolygonMasks],
    *,
    target_aligned: bool = True,
    binarize_targets: bool = True,
) -> Tensor:
    """Mean per-pixel binary cross-entropy of each ROI's mask for its ground-truth class.

    Args:
        mask_logits: ``[R, K, M, M]`` (or ``[R, 1, M, M]`` class-agnostic) for the ROIs of
            ``proposals``, concatenated.
        proposals: per image, foreground ``Instances`` with ``proposal_boxes``, ``gt_classes``
            (in ``[0, K)``) and ``gt_idxs`` (the matched index into the image's ``gt_masks``).
        gt_masks: per image, the ground-truth masks.
        target_aligned, binarize_targets: see ``MaskRCNNConvUpsampleHead``.

    Returns:
        A scalar: the mean over all ``R * M * M`` pixels (0, still connected to the graph, when
        ``R == 0``).
    """
    num_rois, channels, height, _ = mask_logits.shape
    names = ("mask_logits", "M", "gt_masks")
    check_roi_loss_inputs(mask_logits, proposals, gt_masks, loss="mask_rcnn_loss", names=names)
    targets, classes = [], []
    for image_proposals, image_masks in zip(proposals, gt_masks):
        if len(image_proposals) == 0:
            continue
        # Targets are sampled in the boxes' precision (fp32), whatever the logits' dtype (AMP).
        boxes = image_proposals.proposal_boxes.tensor
        targets.append(
            mask_rcnn_targets(
                image_masks, image_proposals.gt_idxs, boxes, height, aligned=target_aligned
            )
        )
        classes.append(image_proposals.gt_classes.to(torch.int64))
    if num_rois == 0 or not targets:
        return mask_logits.sum() * 0
    target = torch.cat(targets)
    if target.shape[0] != num_rois:
        raise ValueError(
            f"mask_rcnn_loss got {num_rois} mask predictions for {target.shape[0]} proposals."
        )
    target = target.to(device=mask_logits.device, dtype=torch.float32)
    if binarize_targets:
        target = (target >= 0.5).to(torch.float32)
    roi_idxs = torch.arange(num_rois, device=mask_logits.device)
    class_idxs = (
        torch.zeros_like(roi_idxs) if channels == 1 else torch.cat(classes).to(roi_idxs.device)
    )
    logits = mask_logits[roi_idxs, class_idxs].float()
    return F.binary_cross_entropy_with_logits(logits, target, reduction="mean")


def mask_rcnn_inference(mask_logits: Tensor, detections: Sequence[Instances]) -> None:
    """Set ``pred_masks``: ``[D_i, M, M]`` probabilities of each detection's predicted class.

    ``detections`` need ``pred_classes``; ``mask_logits`` holds their ROIs' logits, concatenated.
    The masks cover each detection's ``pred_boxes``, not the image.
    """
    if not detections:
        return
    num_rois, channels = mask_logits.shape[:2]
    if num_rois != sum(len(d) for d in detections):
        raise ValueError(
            f"mask_rcnn_inference got {num_rois} mask predictions for "
            f"{sum(len(d) for d in detections)} detections."
        )
    if channels == 1:
        probs = mask_logits[:, 0].sigmoid()
    else:
        classes = torch.cat([d.pred_classes for d in detections]).to(torch.int64)
        probs = mask_logits[torch.arange(num_rois, device=mask_logits.device), classes].sigmoid()
    for image_detections, image_probs in zip(detections, probs.split([len(d) for d in detections])):
        image_detections.pred_masks = image_probs
