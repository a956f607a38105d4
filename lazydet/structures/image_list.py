"""``ImageList``: a batch of differently sized images padded into one tensor."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lazydet.structures._common import image_size_pair

__all__ = ["ImageList"]


class ImageList:
    """Images of different sizes padded (bottom and right) into one ``[B, C, H, W]`` tensor.

    ``image_sizes[i]`` is the true ``(height, width)`` of image ``i`` before padding; the image
    occupies ``tensor[i, :, :height, :width]`` and the rest is padding. Padding only at the
    bottom and right keeps pixel coordinates unchanged, so boxes need no shift.
    """

    def __init__(self, tensor: Tensor, image_sizes: Sequence[tuple[int, int]]) -> None:
        if not isinstance(tensor, Tensor) or tensor.dim() != 4:
            shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise ValueError(f"ImageList expects a [B, C, H, W] tensor, got {shape}.")
        sizes = [
            image_size_pair(size, what=f"ImageList image_sizes[{index}]")
            for index, size in enumerate(image_sizes)
        ]
        if len(sizes) != tensor.shape[0]:
            raise ValueError(
                f"ImageList got {len(sizes)} image_sizes for a batch of {tensor.shape[0]} images."
            )
        padded_height, padded_width = tensor.shape[-2:]
        for index, (height, width) in enumerate(sizes):
            if height > padded_height or width > padded_width:
                raise ValueError(
                    f"ImageList image_sizes[{index}] = {(height, width)} exceeds the padded size "
                    f"{(padded_height, padded_width)}."
                )
        self.tensor: Tensor = tensor
        self.image_sizes: list[tuple[int, int]] = sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, index: int) -> Tensor:
        """Image ``index`` without its padding: ``[C, height, width]`` (a view, not a copy)."""
        height, width = self.image_sizes[index]
        return self.tensor[index, :, :height, :width]

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, *args: Any, **kwargs: Any) -> ImageList:
        """Same as ``Tensor.to`` (device and/or dtype); returns a new ``ImageList``."""
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    def __repr__(self) -> str:
        return f"ImageList(shape={tuple(self.tensor.shape)}, image_sizes={self.image_sizes})"

    @staticmethod
    def from_tensors(
        tensors: Sequence[Tensor],
        size_divisibility: int = 0,
        pad_value: float = 0.0,
        *,
        square_size: int = 0,
    ) -> ImageList:
        """Pad ``[C, H_i, W_i]`` images to a common size and stack them.

        The padded height and width are the largest among the images, rounded up to a multiple of
        ``size_divisibility`` when it is > 0 (an FPN whose coarsest level has stride 32 needs
        sizes divisible by 32 so that every level aligns with the one above). ``square_size`` > 0
        pads to a fixed ``square_size x square_size`` canvas instead (ViTDet's fixed 1024 input);
        every image must fit in it. Padding goes to the bottom and right, filled with
        ``pad_value``. All images must share channels, dtype and device.
        """
        if not isinstance(tensors, (list, tuple)):
            raise TypeError(
                f"ImageList.from_tensors expects a list of [C, H, W] tensors, got {type(tensors).__name__}."
            )
        if len(tensors) == 0:
            raise ValueError("ImageList.from_tensors got an empty list; pass at least one image.")
        if size_divisibility < 0 or square_size < 0:
            raise ValueError(
                f"size_divisibility ({size_divisibility}) and square_size ({square_size}) must be >= 0."
            )
        first = tensors[0]
        for index, image in enumerate(tensors):
            if not isinstance(image, Tensor) or image.dim() != 3:
                shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
                raise ValueError(
                    f"ImageList.from_tensors: image {index} must be a [C, H, W] tensor, got {shape}."
                )
            if image.shape[0] != first.shape[0]:
                raise ValueError(
                    f"ImageList.from_tensors: image {index} has {image.shape[0]} channels, "
                    f"image 0 has {first.shape[0]}."
                )
            if image.dtype != first.dtype or image.device != first.device:
                raise ValueError(
                    f"ImageList.from_tensors: image {index} is {image.dtype} on {image.device}, "
                    f"image 0 is {first.dtype} on {first.device}; convert them alike first."
                )
        image_sizes = [(int(image.shape[1]), int(image.shape[2])) for image in tensors]
        max_height = max(height for height, _ in image_sizes)
        max_width = max(width for _, width in image_sizes)
        if square_size > 0:
            if max_height > square_size or max_width > square_size:
                raise ValueError(
                    f"ImageList.from_tensors: an image of size {(max_height, max_width)} does not "
                    f"fit in square_size={square_size}; resize the images first."
                )
            max_height = max_width = square_size
        if size_divisibility > 1:
            max_height = math.ceil(max_height / size_divisibility) * size_divisibility
            max_width = math.ceil(max_width / size_divisibility) * size_divisibility
        batch = first.new_full(
            (len(tensors), first.shape[0], max_height, max_width), fill_value=pad_value
        )
        for slot, image in zip(batch, tensors):
            slot[:, : image.shape[1], : image.shape[2]].copy_(image)
        return ImageList(batch, image_sizes)
