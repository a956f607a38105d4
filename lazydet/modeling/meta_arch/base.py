"""``ImageDetector``: what every meta-architecture shares, so any detector is called the same way.

* ``forward(batched_inputs)``: in training, the losses ``dict[str, Tensor]``; in eval mode,
  ``inference(batched_inputs)``.
* ``inference(batched_inputs, *, do_postprocess=True) -> list[dict]``: per image
  ``{"instances": Instances}``, at the inputs' ``height``/``width`` (the original image) when
  ``do_postprocess``, else in the coordinates of the (resized, unpadded) input image.

Both start with the same checks of the inputs (``preprocessing``) and inference ends with the
same rescaling (``lazydet.modeling.postprocessing.detector_postprocess``). A subclass writes only
``compute_losses`` and ``detect``.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lazydet.modeling.meta_arch.preprocessing import (
    IMAGENET_RGB_MEAN,
    IMAGENET_RGB_STD,
    INPUT_FORMATS,
    BatchedInputs,
    InputFormat,
    check_gt_instances,
    normalize_and_batch,
    output_size,
)
from lazydet.modeling.postprocessing import detector_postprocess
from lazydet.structures import ImageList, Instances

__all__ = ["ImageDetector"]


class ImageDetector(nn.Module, metaclass=ABCMeta):
    """Base of lazydet's meta-architectures: backbone, pixel statistics, input checks and
    batching, output rescaling.

    Model inputs are ``list[dict]``, one per image: ``image`` a ``[C, H, W]`` tensor (uint8 or
    float, 0-255, **RGB**, ``H, W >= 1``); in training ``instances`` with ``gt_boxes`` (``Boxes``,
    XYXY pixels of ``image``) and ``gt_classes`` (int64 in ``[0, num_classes)``); optionally
    ``height``/``width``, the size to report detections at.

    Args:
        backbone: a module with ``output_shape()`` and ``size_divisibility``.
        pixel_mean, pixel_std: per-channel normalisation (0-255 scale) in ``input_format`` order.
        input_format: the one channel-order setting of lazydet: the order the backbone's weights
            expect. Inputs are always RGB (the data pipeline's and the predictor's output) and
            ``"BGR"`` flips them first; the weight loader reads it too (a Detectron2 BGR
            checkpoint loaded into an ``"RGB"`` model has its stem convolution flipped instead).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        pixel_mean: Sequence[float] = IMAGENET_RGB_MEAN,
        pixel_std: Sequence[float] = IMAGENET_RGB_STD,
        input_format: InputFormat = "RGB",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(backbone, nn.Module) or not hasattr(backbone, "output_shape"):
            raise TypeError(
                f"{name} backbone must be a Backbone module with output_shape(), got "
                f"{type(backbone).__name__}."
            )
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"{name} input_format must be 'RGB' or 'BGR', got {input_format!r}.")
        if len(pixel_mean) != len(pixel_std) or any(s <= 0 for s in pixel_std):
            raise ValueError(
                f"{name} pixel_mean ({len(pixel_mean)} values) and pixel_std ({len(pixel_std)}) "
                "need one value per image channel, and pixel_std must be positive."
            )
        self.backbone = backbone
        self.input_format = input_format
        mean = torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1)
        # Not persistent: they are configuration, and checkpoints do not carry them.
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(
        self, batched_inputs: BatchedInputs
    ) -> dict[str, Tensor] | list[dict[str, Instances]]:
        """Training: ``dict[str, Tensor]`` of losses. Eval: ``inference(batched_inputs)``."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        # A subclass's num_classes (foreground classes) bounds gt_classes; None skips the check.
        gt_instances = check_gt_instances(
            batched_inputs,
            num_classes=getattr(self, "num_classes", None),
            owner=type(self).__name__,
        )
        gt_instances = [instances.to(self.device) for instances in gt_instances]
        return self.compute_losses(batched_inputs, images, gt_instances)

    @torch.no_grad()
    def inference(
        self, batched_inputs: BatchedInputs, *, do_postprocess: bool = True
    ) -> list[dict[str, Instances]]:
        """Per image ``{"instances": Instances(pred_boxes, scores, pred_classes, ...)}``: at the
        inputs' ``height``/``width`` when ``do_postprocess``, else in the coordinates of the
        (resized, unpadded) input image (box-relative masks, if any)."""
        images = self.preprocess_image(batched_inputs)
        sizes = [
            output_size(inputs, image_size, index=index, owner=type(self).__name__)
            for index, (inputs, image_size) in enumerate(zip(batched_inputs, images.image_sizes))
        ]
        detections = self.detect(batched_inputs, images)
        if not do_postprocess:
            return [{"instances": result} for result in detections]
        return [
            {"instances": self.rescale_detections(result, height, width)}
            for result, (height, width) in zip(detections, sizes)
        ]

    def preprocess_image(self, batched_inputs: BatchedInputs) -> ImageList:
        """Check and normalise the images and pad them into one batch (size divisible as the
        backbone needs)."""
        return normalize_and_batch(
            batched_inputs,
            pixel_mean=self.pixel_mean,
            pixel_std=self.pixel_std,
            size_divisibility=self.backbone.size_divisibility,
            input_format=self.input_format,
            owner=type(self).__name__,
        )

    def rescale_detections(self, result: Instances, height: int, width: int) -> Instances:
        """One image's detections from the input image to a ``height x width`` image."""
        return detector_postprocess(result, height, width)

    @abstractmethod
    def compute_losses(
        self, batched_inputs: BatchedInputs, images: ImageList, gt_instances: list[Instances]
    ) -> dict[str, Tensor]:
        """The training losses of a checked, batched input (``gt_instances`` on the device)."""

    @abstractmethod
    def detect(self, batched_inputs: BatchedInputs, images: ImageList) -> list[Instances]:
        """Per image, detections in the coordinates of the (resized, unpadded) input image."""
