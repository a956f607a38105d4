"""Model inputs -> a normalised, padded batch: the step every meta-architecture starts with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

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
