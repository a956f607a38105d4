"""Model inputs -> a normalised, padded batch: the step every meta-architecture starts with.

``ImageDetector`` is the base the meta-architectures share: the backbone, the pixel statistics
(non-persistent buffers, so checkpoints do not carry them) and ``preprocess_image``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lazydet.structures import ImageList

# ImageNet statistics in 0-255 RGB, the convention of torchvision's pretrained backbones.
IMAGENET_RGB_MEAN = (123.675, 116.28, 103.53)
IMAGENET_RGB_STD = (58.395, 57.12, 57.375)

InputFormat = Literal["RGB", "BGR"]


def normalize_and_batch(
    batched_inputs: Sequence[Mapping[str, Any]],
    *,
    pixel_mean: Tensor,
    pixel_std: Tensor,
    size_divisibility: int,
    input_format: InputFormat = "RGB",
    owner: str,
) -> ImageList:
    """Normalise each input's ``image`` and pad them into one batch.

    Args:
        batched_inputs: one dict per image with ``image``: ``[C, H, W]`` (uint8 or float, 0-255,
            RGB channel order as the data pipeline produces).
        pixel_mean, pixel_std: ``[C, 1, 1]`` tensors on the model's device, in 0-255 scale and in
            the channel order the weights expect (``input_format``).
        size_divisibility: pad height and width to multiples of this (the backbone's).
        input_format: ``"BGR"`` flips the RGB input first, for weights trained on BGR images
            (Detectron2's Caffe2-converted models).
        owner: the model's name for error messages.

    Returns:
        ``ImageList`` of ``[B, C, H', W']`` float32 with the true sizes.
    """
    if isinstance(batched_inputs, Mapping) or len(batched_inputs) == 0:
        raise ValueError(
            f"{owner} takes a non-empty list of dicts, one per image, each with an 'image' "
            "tensor [3, H, W]."
        )
    images = []
    for index, inputs in enumerate(batched_inputs):
        image = inputs.get("image") if isinstance(inputs, Mapping) else None
        if not isinstance(image, Tensor) or image.dim() != 3:
            raise ValueError(
                f"{owner} input {index} needs an 'image' tensor [C, H, W], got "
                f"{getattr(image, 'shape', type(image).__name__)}."
            )
        if image.shape[0] != pixel_mean.shape[0]:
            raise ValueError(
                f"{owner} input {index} has {image.shape[0]} channels but pixel_mean has "
                f"{pixel_mean.shape[0]} values."
            )
        image = image.to(pixel_mean.device, torch.float32)
        if input_format == "BGR":
            image = image.flip(0)
        images.append((image - pixel_mean) / pixel_std)
    return ImageList.from_tensors(images, size_divisibility)


class ImageDetector(nn.Module):
    """Base of lazydet's meta-architectures: backbone, pixel statistics, input batching.

    Args:
        backbone: a module with ``output_shape()`` and ``size_divisibility``.
        pixel_mean, pixel_std: per-channel normalisation (0-255 scale) in ``input_format`` order.
        input_format: the channel order the backbone's weights expect; inputs are always RGB and
            ``"BGR"`` flips them first (Detectron2's Caffe2-converted weights).
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
        if input_format not in ("RGB", "BGR"):
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
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: Sequence[Mapping[str, Any]]) -> ImageList:
        """Normalise the images and pad them into one batch (size divisible as the backbone needs)."""
        return normalize_and_batch(
            batched_inputs,
            pixel_mean=self.pixel_mean,
            pixel_std=self.pixel_std,
            size_divisibility=self.backbone.size_divisibility,
            input_format=self.input_format,
            owner=type(self).__name__,
        )
