"""Keypoint R-CNN head: pooled ROI features -> one heatmap per keypoint, its loss and inference.

A heatmap covers its ROI's box: an ``S x S`` grid stretched over the box (``S`` is four times the
pooler resolution, 56 for the usual 14). Keypoints are trained as an ``S * S``-way classification
(the bin holding the keypoint is the target) and read back at the heatmap's maximum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lazydet.layers import caffe2_msra_fill, check_positive_sizes, conv_norm_act_stack
from lazydet.modeling.roi_heads.loss_inputs import check_roi_loss_inputs
from lazydet.structures import Instances, Keypoints

KeypointScoreType = Literal["logit", "probability"]


class KRCNNConvDeconvUpsampleHead(nn.Module):
    """``len(conv_dims)`` 3x3 convs + ReLU, a 4x4 stride-2 deconv to ``num_keypoints`` channels,
    then a 2x bilinear upsampling (``align_corners=False``).

    The architecture and initialisation of Detectron2's ``KRCNNConvDeconvUpsampleHead`` and of
    torchvision's ``KeypointRCNNHeads`` + ``KeypointRCNNPredictor``.

    Args:
        in_channels: channels of the pooled features (given by ``StandardROIHeads``).
        num_keypoints: keypoints per instance ``K`` (17 for COCO persons).
        conv_dims: output channels of the 3x3 convs.
        loss_weight: multiplier of ``loss_keypoint``.
        score_type: the third value of each predicted keypoint: ``"logit"``, the bicubically
            upsampled heatmap logit at the maximum (torchvision's ``keypoints_scores``), or
            ``"probability"``, that maximum's softmax probability over the ``S x S`` heatmap
            (Detectron2's keypoint score).

    ``forward(x: Tensor[R, in_channels, P, P]) -> Tensor[R, K, 4P, 4P]`` heatmap logits.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_keypoints: int,
        conv_dims: Sequence[int] = (512,) * 8,
        loss_weight: float = 1.0,
        score_type: KeypointScoreType = "logit",
    ) -> None:
        super().__init__()
        check_positive_sizes(
            "KRCNNConvDeconvUpsampleHead",
            in_channels=in_channels,
            num_keypoints=num_keypoints,
            conv_dims=conv_dims,
        )
        if score_type not in ("logit", "probability"):
            raise ValueError(f"score_type must be 'logit' or 'probability', got {score_type!r}.")
        # He init (fan_out) and zero biases for the convs and the deconv, as Detectron2.
        self.convs = conv_norm_act_stack(in_channels, conv_dims, 3, init=caffe2_msra_fill)
        channels = conv_dims[-1] if conv_dims else in_channels
        # kernel 4, stride 2, padding 1 doubles the size exactly: out = 2 * in.
        self.score_lowres = nn.ConvTranspose2d(
            channels, num_keypoints, kernel_size=4, stride=2, padding=1
        )
        caffe2_msra_fill(self.score_lowres)
        self.num_keypoints = num_keypoints
        self.loss_weight = loss_weight
        self.score_type = score_type

    def forward(self, x: Tensor) -> Tensor:
        x = self.score_lowres(self.convs(x))
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)

    def losses(
        self,
        heatmap_logits: Tensor,
        proposals: Sequence[Instances],
        gt_keypoints: Sequence[Keypoints],
    ) -> dict[str, Tensor]:
        """``{"loss_keypoint": ...}`` for the foreground ``proposals`` (see ``keypoint_rcnn_loss``)."""
        loss = keypoint_rcnn_loss(heatmap_logits, proposals, gt_keypoints)
        return {"loss_keypoint": loss * self.loss_weight}

    def inference(self, heatmap_logits: Tensor, detections: Sequence[Instances]) -> None:
        """Set ``pred_keypoints`` on ``detections`` (see ``keypoint_rcnn_inference``)."""
        keypoint_rcnn_inference(heatmap_logits, detections, score_type=self.score_type)


def keypoint_rcnn_loss(
    heatmap_logits: Tensor,
    proposals: Sequence[Instances],
    gt_keypoints: Sequence[Keypoints],
) -> Tensor:
    """Cross-entropy over the ``S * S`` heatmap bins, averaged over the valid keypoints.

    A keypoint is valid when it is labelled (visibility > 0) and falls inside its proposal
    (``Keypoints.to_heatmap``). Averaging over the valid keypoints of the whole batch is
    Detectron2's default ("normalize by visible keypoints") and what torchvision computes.

    Args:
        heatmap_logits: ``[R, K, S, S]`` for the ROIs of ``proposals``, concatenated.
        proposals: per image, foreground ``Instances`` with ``proposal_boxes`` and ``gt_idxs``
            (the matched index into the image's ``gt_keypoints``).
        gt_keypoints: per image, the ground-truth keypoints.

    Returns:
        A scalar (0, still connected to the graph, when no keypoint is valid).
    """
    num_rois, num_keypoints, height, width = heatmap_logits.shape
    names = ("heatmap_logits", "S", "gt_keypoints")
    check_roi_loss_inputs(
        heatmap_logits, proposals, gt_keypoints, loss="keypoint_rcnn_loss", names=names
    )
    targets, valids = [], []
    for image_proposals, image_keypoints in zip(proposals, gt_keypoints):
        if len(image_proposals) == 0:
            continue
        matched = image_keypoints[image_proposals.gt_idxs.to(image_keypoints.device)]
        if matched.tensor.shape[1] != num_keypoints:
            raise ValueError(
                f"gt_keypoints have {matched.tensor.shape[1]} keypoints per instance but the "
                f"head predicts {num_keypoints}; set the keypoint head's num_keypoints to match."
            )
        heatmap, valid = matched.to_heatmap(image_proposals.proposal_boxes.tensor, height)
        targets.append(heatmap.flatten())
        valids.append(valid.flatten())
    if not targets:
        return heatmap_logits.sum() * 0
    target = torch.cat(targets).to(heatmap_logits.device)
    valid = torch.cat(valids).to(heatmap_logits.device).nonzero().squeeze(1)
    if target.numel() != num_rois * num_keypoints:
        raise ValueError(
            f"keypoint_rcnn_loss got {num_rois} heatmap predictions for "
            f"{target.numel() // max(num_keypoints, 1)} proposals."
        )
    if valid.numel() == 0:
        return heatmap_logits.sum() * 0
    logits = heatmap_logits.reshape(num_rois * num_keypoints, height * width)
    return F.cross_entropy(logits[valid], target[valid], reduction="sum") / valid.numel()


def heatmaps_to_keypoints(
    heatmap_logits: Tensor,
    boxes: Tensor,
    *,
    score_type: KeypointScoreType = "logit",
) -> Tensor:
    """Keypoint locations and scores from heatmaps, torchvision's (and Detectron2's) method.

    For each ROI, the ``S x S`` heatmaps are resized bicubically (``align_corners=False``) to
    ``ceil(box_height) x ceil(box_width)`` (box sides clamped to at least 1 pixel), so the
    maximum is found at about one-pixel resolution rather than ``box / S``. The maximum's bin
    ``(i, j)`` maps back to the pixel centre ``x = x1 + (j + 0.5) * box_width / ceil(box_width)``
    (``y`` likewise): the ``+ 0.5`` is the discrete-to-continuous convention (Heckbert 1990) that
    matches ``Keypoints.to_heatmap``'s ``floor``.

    Args:
        heatmap_logits: ``[R, K, S, S]``.
        boxes: ``[R, 4]`` XYXY pixels, the boxes the heatmaps cover.
        score_type: see ``KRCNNConvDeconvUpsampleHead``.

    Returns:
        ``[R, K, 3]`` float32: ``(x, y, score)`` in the boxes' image coordinates.
    """
    num_rois, num_keypoints = heatmap_logits.shape[:2]
    heatmap_logits = heatmap_logits.detach()
    boxes = boxes.detach().to(torch.float32)
    result = torch.zeros((num_rois, num_keypoints, 3), dtype=torch.float32, device=boxes.device)
    if num_rois == 0:
        return result
    x1, y1 = boxes[:, 0], boxes[:, 1]
    widths = (boxes[:, 2] - boxes[:, 0]).clamp(min=1)
    heights = (boxes[:, 3] - boxes[:, 1]).clamp(min=1)
    # One host sync for all the ROIs' output sizes, not one per ROI.
    sizes = torch.stack((heights.ceil(), widths.ceil()), dim=1).tolist()
    keypoint_idxs = torch.arange(num_keypoints, device=heatmap_logits.device)
    for roi, (out_height, out_width) in enumerate(sizes):
        out_height, out_width = math.ceil(out_height), math.ceil(out_width)
        roi_map = F.interpolate(
            heatmap_logits[roi][:, None].float(),
            size=(out_height, out_width),
            mode="bicubic",
            align_corners=False,
        )[:, 0]
        flat_argmax = roi_map.reshape(num_keypoints, -1).argmax(dim=1)
        x_int = flat_argmax % out_width
        y_int = torch.div(flat_argmax - x_int, out_width, rounding_mode="floor")
        # Same operation order as torchvision, so the coordinates agree bit for bit.
        x = (x_int.float() + 0.5) * (widths[roi] / out_width)
        y = (y_int.float() + 0.5) * (heights[roi] / out_height)
        result[roi, :, 0] = x + x1[roi]
        result[roi, :, 1] = y + y1[roi]
        peak = roi_map[keypoint_idxs, y_int, x_int]
        if score_type == "probability":
            # Softmax probability of the peak, normalised over the S x S bins that were
            # classified in training (not over the upsampled map, whose bin count varies).
            pooled = heatmap_logits[roi].reshape(num_keypoints, -1).float()
            peak = 1.0 / (pooled - peak[:, None]).exp().sum(dim=1)
        result[roi, :, 2] = peak
    return result


def keypoint_rcnn_inference(
    heatmap_logits: Tensor,
    detections: Sequence[Instances],
    *,
    score_type: KeypointScoreType = "logit",
) -> None:
    """Set ``pred_keypoints`` ``[D_i, K, 3]`` = ``(x, y, score)`` on each image's detections.

    ``heatmap_logits`` ``[sum D_i, K, S, S]`` were computed on the detections' ``pred_boxes``;
    the keypoints are in the same coordinates as those boxes.
    """
    counts = [len(d) for d in detections]
    if heatmap_logits.shape[0] != sum(counts):
        raise ValueError(
            f"keypoint_rcnn_inference got {heatmap_logits.shape[0]} heatmaps for {sum(counts)} "
            "detections."
        )
    for image_detections, image_logits in zip(detections, heatmap_logits.split(counts)):
        image_detections.pred_keypoints = heatmaps_to_keypoints(
            image_logits, image_detections.pred_boxes.tensor, score_type=score_type
        )
