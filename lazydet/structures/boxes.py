"""Axis-aligned boxes and their pairwise overlaps.

Convention used throughout lazydet: boxes are ``XYXY`` in absolute pixel coordinates,
``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2`` for a valid box. Coordinates are
continuous: pixel ``(i, j)`` (row ``i``, column ``j``) covers ``[j, j + 1) x [i, i + 1)``, so a box
that covers exactly that one pixel is ``(j, i, j + 1, i + 1)`` and has area 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lazydet.structures._common import IndexLike, image_size_pair, scalar_index
from lazydet.utils.compile import check_all_true

__all__ = ["Boxes", "pairwise_ioa", "pairwise_iou"]


def _as_box_tensor(tensor: Any) -> Tensor:
    """Turn ``tensor`` into a ``[N, 4]`` floating tensor or raise one clear error."""
    if isinstance(tensor, (np.ndarray, list, tuple)):
        tensor = torch.as_tensor(np.asarray(tensor, dtype=np.float32))
    if not isinstance(tensor, Tensor):
        raise TypeError(
            f"Boxes expects a torch.Tensor of shape [N, 4] (XYXY pixels), got {type(tensor).__name__}."
        )
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(
            f"Boxes expects real box coordinates, got a tensor of dtype {tensor.dtype}."
        )
    if not tensor.is_floating_point():
        # Integer coordinates are common in annotations; box math (scaling, IoU) needs floats.
        tensor = tensor.to(torch.float32)
    # The shape test first: for an [N, 4] tensor it settles the question without asking
    # whether N is 0 (under torch.compile N may be data-dependent, and asking breaks the graph).
    if not (tensor.dim() == 2 and tensor.shape[-1] == 4) and tensor.numel() == 0:
        # An empty tensor of any shape (e.g. torch.zeros(0)) means "no boxes".
        tensor = tensor.reshape(0, 4)
    if tensor.dim() != 2 or tensor.shape[-1] != 4:
        raise ValueError(
            f"Boxes expects a tensor of shape [N, 4] (x1, y1, x2, y2), got shape {tuple(tensor.shape)}."
        )
    return tensor


class Boxes:
    """A list of ``N`` boxes stored as one ``[N, 4]`` floating tensor, XYXY absolute pixels.

    ``Boxes(tensor)`` keeps floating tensors as they are (same dtype, same device, no copy) and
    converts integer tensors, numpy arrays and nested lists to ``float32``. An empty tensor of
    any shape becomes ``[0, 4]``, and every method works on zero boxes.
    """

    def __init__(self, tensor: Tensor) -> None:
        self.tensor: Tensor = _as_box_tensor(tensor)

    # ----------------------------------------------------------------------------------------
    # Container protocol
    # ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, item: IndexLike) -> Boxes:
        """Select boxes. An ``int`` returns a length-1 ``Boxes`` (never a bare ``[4]`` row)."""
        position = scalar_index(item)
        if position is not None:
            # Keep the result 2-D so that callers can treat any selection as a Boxes list.
            return Boxes(self.tensor[position].view(1, 4))
        selected = self.tensor[item]
        if selected.dim() != 2:
            raise IndexError(
                f"Indexing Boxes with {type(item).__name__} gave shape {tuple(selected.shape)}; "
                "use an int, a slice, a bool mask of length N or a 1-D long index."
            )
        return Boxes(selected)

    def __repr__(self) -> str:
        return f"Boxes(num_boxes={len(self)}, device={self.device}, tensor={self.tensor!r})"

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, *args: Any, **kwargs: Any) -> Boxes:
        """Same as ``Tensor.to`` (device and/or dtype); returns a new ``Boxes``."""
        return Boxes(self.tensor.to(*args, **kwargs))

    def clone(self) -> Boxes:
        return Boxes(self.tensor.clone())

    @classmethod
    def cat(cls, boxes_list: Sequence[Boxes]) -> Boxes:
        """Concatenate several ``Boxes`` into one (an empty list gives zero boxes)."""
        if not isinstance(boxes_list, (list, tuple)):
            raise TypeError(f"Boxes.cat expects a list of Boxes, got {type(boxes_list).__name__}.")
        for index, boxes in enumerate(boxes_list):
            if not isinstance(boxes, Boxes):
                raise TypeError(
                    f"Boxes.cat: element {index} is a {type(boxes).__name__}, not Boxes."
                )
        if len(boxes_list) == 0:
            return cls(torch.empty(0, 4))
        return cls(torch.cat([boxes.tensor for boxes in boxes_list], dim=0))

    # ----------------------------------------------------------------------------------------
    # Geometry
    # ----------------------------------------------------------------------------------------
    def area(self) -> Tensor:
        """Areas ``[N]``: ``(x2 - x1) * (y2 - y1)`` (negative for inverted boxes, as in torchvision)."""
        box = self.tensor
        return (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])

    def centers(self) -> Tensor:
        """Box centres ``[N, 2]`` as ``(x, y)``."""
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def clip(self, image_size: tuple[int, int]) -> Boxes:
        """Clamp x to ``[0, width]`` and y to ``[0, height]``; updates this Boxes, returns ``self``.

        ``image_size`` is ``(height, width)``. ``self.tensor`` is replaced by a new tensor rather
        than written into, so boxes that are part of an autograd graph stay differentiable. Coordinates must be finite: clamping a NaN or an
        infinity would hide a diverged regression behind a plausible-looking box.
        """
        height, width = image_size_pair(image_size, what="Boxes.clip image_size")
        check_all_true(
            torch.isfinite(self.tensor),
            "Boxes.clip: box coordinates contain NaN or infinity; check the box regression "
            "(e.g. clamp the predicted log-scale deltas) before clipping.",
            ValueError,
        )
        x1 = self.tensor[:, 0].clamp(min=0, max=width)
        y1 = self.tensor[:, 1].clamp(min=0, max=height)
        x2 = self.tensor[:, 2].clamp(min=0, max=width)
        y2 = self.tensor[:, 3].clamp(min=0, max=height)
        self.tensor = torch.stack((x1, y1, x2, y2), dim=-1)
        return self

    def nonempty(self, threshold: float = 0.0) -> Tensor:
        """Bool ``[N]``: True where both width and height are strictly greater than ``threshold``."""
        widths = self.tensor[:, 2] - self.tensor[:, 0]
        heights = self.tensor[:, 3] - self.tensor[:, 1]
        return (widths > threshold) & (heights > threshold)

    def scale(self, scale_x: float, scale_y: float) -> Boxes:
        """Multiply x by ``scale_x`` and y by ``scale_y``; updates this Boxes, returns ``self``.

        Like ``clip``, replaces ``self.tensor`` instead of writing into it (autograd-safe).
        """
        factors = self.tensor.new_tensor([scale_x, scale_y, scale_x, scale_y])
        self.tensor = self.tensor * factors
        return self


def _check_boxes(boxes: Any, name: str) -> Tensor:
    if not isinstance(boxes, Boxes):
        raise TypeError(
            f"{name} must be a Boxes, got {type(boxes).__name__}; wrap it as Boxes(tensor)."
        )
    return boxes.tensor


def _pairwise_intersection(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection areas ``[N, M]`` of two XYXY tensors ``[N, 4]`` and ``[M, 4]``."""
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    width_height = (bottom_right - top_left).clamp(min=0)
    return width_height[..., 0] * width_height[..., 1]


def pairwise_iou(boxes1: Boxes, boxes2: Boxes) -> Tensor:
    """Intersection over union of every pair: ``[N, M]`` for ``N`` and ``M`` boxes.

    Same values as ``torchvision.ops.box_iou`` for boxes with positive area. Where the union is
    zero (two degenerate boxes) the IoU is 0 rather than NaN, so that matchers never see NaN.
    """
    tensor1 = _check_boxes(boxes1, "pairwise_iou boxes1")
    tensor2 = _check_boxes(boxes2, "pairwise_iou boxes2")
    intersection = _pairwise_intersection(tensor1, tensor2)
    union = boxes1.area()[:, None] + boxes2.area()[None, :] - intersection
    return torch.where(
        union > 0, intersection / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0
    ).to(intersection.dtype)


def pairwise_ioa(boxes1: Boxes, boxes2: Boxes) -> Tensor:
    """Intersection over the area of ``boxes2`` for every pair: ``[N, M]``.

    ``ioa[i, j] = |boxes1[i] ∩ boxes2[j]| / |boxes2[j]|`` (how much of box ``j`` is covered by box
    ``i``; COCO uses this against crowd regions). 0 where ``boxes2[j]`` has no area.
    """
    tensor1 = _check_boxes(boxes1, "pairwise_ioa boxes1")
    tensor2 = _check_boxes(boxes2, "pairwise_ioa boxes2")
    intersection = _pairwise_intersection(tensor1, tensor2)
    area2 = boxes2.area()[None, :].expand_as(intersection)
    return torch.where(
        area2 > 0, intersection / area2.clamp(min=torch.finfo(area2.dtype).tiny), 0.0
    ).to(intersection.dtype)
