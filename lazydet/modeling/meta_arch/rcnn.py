"""Generalized R-CNN: backbone -> proposals -> ROI heads. Faster, Mask and Keypoint R-CNN are this
one class with different ``roi_heads`` (box only, + mask head, + keypoint head)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from lazydet.layers import ModuleOrFactory, build_module
from lazydet.modeling.backbone.base import Backbone
from lazydet.modeling.meta_arch.base import ImageDetector
from lazydet.modeling.meta_arch.preprocessing import (
    IMAGENET_RGB_MEAN,
    IMAGENET_RGB_STD,
    BatchedInputs,
    InputFormat,
)
from lazydet.modeling.postprocessing import MaskPaste, detector_postprocess
from lazydet.structures import ImageList, Instances


class GeneralizedRCNN(ImageDetector):
    """Two-stage detector: a backbone, a proposal generator and ROI heads.

    Inputs (checked as in every lazydet detector, ``ImageDetector``) are ``list[dict]``, one per
    image:

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
        mask_paste: how box-relative masks are pasted into the image: ``"torchvision"``
            (``paste_masks_in_image``) or ``"detectron2"`` (``paste_masks_grid_sample``).
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        proposal_generator: ModuleOrFactory | None,
        roi_heads: ModuleOrFactory,
        pixel_mean: Sequence[float] = IMAGENET_RGB_MEAN,
        pixel_std: Sequence[float] = IMAGENET_RGB_STD,
        input_format: InputFormat = "RGB",
        mask_threshold: float | None = 0.5,
        mask_paste: MaskPaste = "torchvision",
    ) -> None:
        super().__init__(
            backbone=backbone, pixel_mean=pixel_mean, pixel_std=pixel_std, input_format=input_format
        )
        if roi_heads is None:
            raise ValueError("GeneralizedRCNN needs roi_heads (e.g. StandardROIHeads).")
        # Factories (L(...)(..., _partial_=True) in a config) are sized from the backbone here.
        self.proposal_generator = build_module(
            proposal_generator,
            owner="GeneralizedRCNN",
            what="proposal_generator",
            input_shape=backbone.output_shape(),
        )
        self.roi_heads = build_module(
            roi_heads,
            owner="GeneralizedRCNN",
            what="roi_heads",
            input_shape=backbone.output_shape(),
        )
        if mask_paste not in ("torchvision", "detectron2"):
            raise ValueError(
                f"GeneralizedRCNN mask_paste must be 'torchvision' or 'detectron2', got "
                f"{mask_paste!r}."
            )
        self.mask_threshold = mask_threshold
        self.mask_paste = mask_paste

    @property
    def num_classes(self) -> int | None:
        return getattr(self.roi_heads, "num_classes", None)

    def compute_losses(
        self, batched_inputs: BatchedInputs, images: ImageList, gt_instances: list[Instances]
    ) -> dict[str, Tensor]:
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self._proposals(batched_inputs, images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        overlap = set(proposal_losses) & set(detector_losses)
        if overlap:
            raise ValueError(
                f"proposal generator and ROI heads both return losses {sorted(overlap)}."
            )
        return {**proposal_losses, **detector_losses}

    def detect(self, batched_inputs: BatchedInputs, images: ImageList) -> list[Instances]:
        features = self.backbone(images.tensor)
        proposals, _ = self._proposals(batched_inputs, images, features, None)
        detections, _ = self.roi_heads(images, features, proposals, None)
        return detections

    def rescale_detections(self, result: Instances, height: int, width: int) -> Instances:
        return detector_postprocess(
            result,
            height,
            width,
            mask_threshold=self.mask_threshold,
            mask_paste=self.mask_paste,
        )

    def _proposals(
        self,
        batched_inputs: BatchedInputs,
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
