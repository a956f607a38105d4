"""Generalized R-CNN: backbone -> proposals -> ROI heads. Faster, Mask and Keypoint R-CNN are this
one class with different ``roi_heads`` (box only, + mask head, + keypoint head)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lazydet.modeling.backbone.base import Backbone
from lazydet.modeling.meta_arch.preprocessing import (
    IMAGENET_RGB_MEAN,
    IMAGENET_RGB_STD,
    ImageDetector,
    InputFormat,
)
from lazydet.modeling.postprocessing import detector_postprocess
from lazydet.structures import ImageList, Instances


def build_from_backbone(
    part: nn.Module | Callable[..., nn.Module] | None, what: str, backbone: Backbone
) -> nn.Module | None:
    """``part`` as is when it is a module (or None), else ``part(input_shape=backbone.output_shape())``.

    This is how a config that is written before the backbone exists sizes the heads from it:
    ``roi_heads=L(StandardROIHeads)(num_classes=80, _partial_=True)`` instantiates to a
    ``functools.partial`` that receives the shapes here.
    """
    if part is None or isinstance(part, nn.Module):
        return part
    if not callable(part):
        raise TypeError(
            f"GeneralizedRCNN {what} must be an nn.Module or a callable taking input_shape (a "
            f"class or functools.partial, e.g. L(...)(..., _partial_=True)), got "
            f"{type(part).__name__}."
        )
    module = part(input_shape=backbone.output_shape())
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"GeneralizedRCNN {what} factory returned {type(module).__name__}, not a module."
        )
    return module


class GeneralizedRCNN(ImageDetector):
    """Two-stage detector: a backbone, a proposal generator and ROI heads.

    Inputs are ``list[dict]``, one per image:

    * ``image``: ``[3, H, W]`` tensor, 0-255 values (uint8 or float), RGB channel order;
    * ``instances`` (training): ``Instances`` with ``gt_boxes`` (``Boxes``, XYXY pixels of
      ``image``), ``gt_classes`` (int64 in ``[0, num_classes)``) and, for the branches the ROI
      heads have, ``gt_masks`` (``BitMasks``/``PolygonMasks``) and ``gt_keypoints``
      (``Keypoints``);
    * ``height``, ``width`` (optional): the size to report detections at, i.e. the original image
      before the data pipeline resized it (default: the size of ``image``);
    * ``proposals`` (only when ``proposal_generator`` is None): precomputed
      ``Instances(proposal_boxes, objectness_logits)`` in ``image`` coordinates.

    Training returns ``dict[str, Tensor]`` of losses (the proposal generator's and the ROI
    heads'). Inference returns per image ``{"instances": Instances(pred_boxes, scores,
    pred_classes[, pred_masks][, pred_keypoints])}`` in the coordinates of the ``height x width``
    image: ``pred_masks`` are ``[D, height, width]`` bool (pasted and thresholded at
    ``mask_threshold``), or float probabilities when ``mask_threshold`` is None;
    ``pred_keypoints`` are ``[D, K, 3]`` ``(x, y, score)``.

    Args:
        backbone: image batch -> named feature maps, described by ``output_shape()``.
        proposal_generator: e.g. ``RPN``; a module, or a factory called as
            ``proposal_generator(input_shape=backbone.output_shape())``; None to read
            ``proposals`` from the inputs.
        roi_heads: e.g. ``StandardROIHeads``; a module, or a factory called as
            ``roi_heads(input_shape=backbone.output_shape())``.
        pixel_mean, pixel_std: per-channel normalisation, in ``input_format`` channel order.
        input_format: the channel order the backbone's weights expect. Inputs are always RGB;
            ``"BGR"`` flips them before normalising (Detectron2's Caffe2-converted weights).
        mask_threshold: probability at which pasted masks are binarised (None: keep floats).
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        proposal_generator: nn.Module | Callable[..., nn.Module] | None,
        roi_heads: nn.Module | Callable[..., nn.Module],
        pixel_mean: Sequence[float] = IMAGENET_RGB_MEAN,
        pixel_std: Sequence[float] = IMAGENET_RGB_STD,
        input_format: InputFormat = "RGB",
        mask_threshold: float | None = 0.5,
    ) -> None:
        super().__init__(
            backbone=backbone, pixel_mean=pixel_mean, pixel_std=pixel_std, input_format=input_format
        )
        if roi_heads is None:
            raise ValueError("GeneralizedRCNN needs roi_heads (e.g. StandardROIHeads).")
        self.proposal_generator = build_from_backbone(
            proposal_generator, "proposal_generator", backbone
        )
        self.roi_heads = build_from_backbone(roi_heads, "roi_heads", backbone)
        self.mask_threshold = mask_threshold

    def forward(
        self, batched_inputs: Sequence[Mapping[str, Any]]
    ) -> dict[str, Tensor] | list[dict[str, Instances]]:
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        if any("instances" not in inputs for inputs in batched_inputs):
            raise ValueError(
                "GeneralizedRCNN in training mode needs 'instances' (gt_boxes, gt_classes, ...) "
                "in every input dict."
            )
        gt_instances = [inputs["instances"].to(self.device) for inputs in batched_inputs]
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self._proposals(batched_inputs, images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        overlap = set(proposal_losses) & set(detector_losses)
        if overlap:
            raise ValueError(
                f"proposal generator and ROI heads both return losses {sorted(overlap)}."
            )
        return {**proposal_losses, **detector_losses}

    @torch.no_grad()
    def inference(
        self, batched_inputs: Sequence[Mapping[str, Any]], *, do_postprocess: bool = True
    ) -> list[dict[str, Instances]]:
        """Detections per image: at the inputs' ``height``/``width`` when ``do_postprocess``,
        else in the coordinates of the (resized) input image with box-relative masks."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        proposals, _ = self._proposals(batched_inputs, images, features, None)
        detections, _ = self.roi_heads(images, features, proposals, None)
        if not do_postprocess:
            return [{"instances": d} for d in detections]
        outputs = []
        for result, inputs, image_size in zip(detections, batched_inputs, images.image_sizes):
            height = int(inputs.get("height", image_size[0]))
            width = int(inputs.get("width", image_size[1]))
            outputs.append(
                {
                    "instances": detector_postprocess(
                        result, height, width, mask_threshold=self.mask_threshold
                    )
                }
            )
        return outputs

    def _proposals(
        self,
        batched_inputs: Sequence[Mapping[str, Any]],
        images: ImageList,
        features: Mapping[str, Tensor],
        gt_instances: Sequence[Instances] | None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        if self.proposal_generator is not None:
            return self.proposal_generator(images, features, gt_instances)
        if any("proposals" not in inputs for inputs in batched_inputs):
            raise ValueError(
                "GeneralizedRCNN without a proposal_generator needs precomputed 'proposals' "
                "(Instances with proposal_boxes) in every input dict."
            )
        return [inputs["proposals"].to(self.device) for inputs in batched_inputs], {}
