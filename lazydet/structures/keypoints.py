"""``Keypoints``: per-instance keypoints in COCO style ``(x, y, visibility)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lazydet.structures._common import IndexLike, scalar_index
from lazydet.structures.boxes import Boxes

__all__ = ["Keypoints"]


class Keypoints:
    """``N`` instances with ``K`` keypoints each: a float tensor ``[N, K, 3]``.

    The last axis is ``(x, y, v)``: ``x, y`` in continuous absolute pixel coordinates (pixel
    ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``, the box convention), and the COCO visibility
    ``v`` (0 = not labelled, 1 = labelled but occluded, 2 = visible). Only ``v > 0`` points are
    used as training targets.
    """

    def __init__(self, tensor: Tensor | np.ndarray) -> None:
        if isinstance(tensor, (np.ndarray, list, tuple)):
            tensor = torch.as_tensor(np.asarray(tensor, dtype=np.float32))
        if not isinstance(tensor, Tensor):
            raise TypeError(f"Keypoints expects a [N, K, 3] tensor, got {type(tensor).__name__}.")
        if tensor.dtype == torch.bool or tensor.is_complex():
            raise TypeError(f"Keypoints expects real coordinates, got dtype {tensor.dtype}.")
        if not tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
        if tensor.dim() != 3 or tensor.shape[2] != 3:
            raise ValueError(
                f"Keypoints expects shape [N, K, 3] (x, y, visibility), got {tuple(tensor.shape)}."
            )
        self.tensor: Tensor = tensor

    # ----------------------------------------------------------------------------------------
    # Container protocol
    # ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, item: IndexLike) -> Keypoints:
        """Select instances. An ``int`` returns a length-1 ``Keypoints``."""
        position = scalar_index(item)
        if position is not None:
            return Keypoints(self.tensor[position].unsqueeze(0))
        selected = self.tensor[item]
        if selected.dim() != 3:
            raise IndexError(
                f"Indexing Keypoints with {type(item).__name__} gave shape "
                f"{tuple(selected.shape)}; use an int, a slice, a bool mask or a 1-D long index."
            )
        return Keypoints(selected)

    def __repr__(self) -> str:
        return f"Keypoints(num_instances={len(self)}, num_keypoints={self.tensor.shape[1]})"

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, *args: Any, **kwargs: Any) -> Keypoints:
        """Same as ``Tensor.to``; returns a new ``Keypoints``."""
        return Keypoints(self.tensor.to(*args, **kwargs))

    @classmethod
    def cat(cls, keypoints_list: Sequence[Keypoints]) -> Keypoints:
        """Concatenate ``Keypoints`` with the same number of keypoints ``K``."""
        if not isinstance(keypoints_list, (list, tuple)) or len(keypoints_list) == 0:
            raise ValueError("Keypoints.cat expects a non-empty list of Keypoints.")
        for index, keypoints in enumerate(keypoints_list):
            if not isinstance(keypoints, Keypoints):
                raise TypeError(f"Keypoints.cat: element {index} is a {type(keypoints).__name__}.")
        counts = {keypoints.tensor.shape[1] for keypoints in keypoints_list}
        if len(counts) > 1:
            raise ValueError(f"Keypoints.cat: lists disagree on keypoints per instance: {counts}.")
        return cls(torch.cat([keypoints.tensor for keypoints in keypoints_list], dim=0))

    # ----------------------------------------------------------------------------------------
    # Targets and transforms
    # ----------------------------------------------------------------------------------------
    def to_heatmap(self, boxes: Tensor | Boxes, heatmap_size: int) -> tuple[Tensor, Tensor]:
        """Discretise each keypoint into the ``S x S`` heatmap of its instance's box.

        Args:
            boxes: ``[N, 4]`` XYXY pixels, one box per instance (the proposal it is matched to).
            heatmap_size: ``S``.

        Returns:
            ``(heatmaps, valid)``: ``heatmaps`` long ``[N, K]`` holds the flat bin index
            ``row * S + column`` (0 where invalid), ``valid`` bool ``[N, K]``.

        A point maps to column ``floor((x - x1) * S / (x2 - x1))`` (row likewise). The box is
        taken as the half-open ``[x1, x2)``, widened to include its right and bottom edges: a
        point exactly on ``x = x2`` goes to the last column ``S - 1`` instead of falling outside.
        A point is invalid when it falls outside the box, when its visibility is 0, or when the
        box has no width or height.
        """
        if isinstance(heatmap_size, bool) or not isinstance(heatmap_size, int) or heatmap_size <= 0:
            raise ValueError(
                f"Keypoints.to_heatmap: heatmap_size must be a positive int, got {heatmap_size!r}."
            )
        box_tensor = boxes.tensor if isinstance(boxes, Boxes) else boxes
        if not isinstance(box_tensor, Tensor) or box_tensor.shape != (len(self), 4):
            shape = (
                tuple(box_tensor.shape) if isinstance(box_tensor, Tensor) else type(boxes).__name__
            )
            raise ValueError(
                f"Keypoints.to_heatmap: boxes must have shape [{len(self)}, 4], got {shape}."
            )
        box_tensor = box_tensor.to(device=self.device, dtype=self.tensor.dtype)
        x1, y1, x2, y2 = (box_tensor[:, i : i + 1] for i in range(4))  # each [N, 1]
        xs, ys, visibility = self.tensor.unbind(dim=2)  # each [N, K]
        box_has_area = (x2 > x1) & (y2 > y1)
        # Dividing by a clamped extent keeps degenerate boxes finite; they are invalid anyway.
        columns = ((xs - x1) * (heatmap_size / (x2 - x1).clamp(min=1e-6))).floor()
        rows = ((ys - y1) * (heatmap_size / (y2 - y1).clamp(min=1e-6))).floor()
        columns = torch.where(xs == x2, heatmap_size - 1, columns)
        rows = torch.where(ys == y2, heatmap_size - 1, rows)
        # Compare in floating point (NaN and far-away points fail these tests) before casting.
        inside = (columns >= 0) & (columns < heatmap_size) & (rows >= 0) & (rows < heatmap_size)
        valid = inside & (visibility > 0) & box_has_area
        flat_index = rows * heatmap_size + columns
        heatmaps = torch.where(valid, flat_index, 0).long()
        return heatmaps, valid

    def flip(self, width: float, flip_indices: Sequence[int] | Tensor) -> Keypoints:
        """Mirror for a horizontal image flip; replaces ``self.tensor`` and returns ``self``.

        ``x -> width - x``: with continuous pixel coordinates the image spans ``[0, width]``, so
        mirroring about its centre is ``width - x`` (a point at the left edge 0 lands on the right
        edge ``width``). Then the keypoints are renamed, ``new[:, k] = old[:, flip_indices[k]]``,
        because after a flip the left wrist is where the right wrist was. ``flip_indices`` must
        be a permutation of ``0..K-1``. The old tensor is not modified (views stay valid).
        """
        count = self.tensor.shape[1]
        order = torch.as_tensor(flip_indices, dtype=torch.long).flatten()
        if order.numel() != count or not torch.equal(order.sort().values, torch.arange(count)):
            raise ValueError(
                f"Keypoints.flip: flip_indices must be a permutation of 0..{count - 1}, "
                f"got {order.tolist()}."
            )
        flipped = self.tensor[:, order.to(self.device)].clone()
        flipped[..., 0] = width - flipped[..., 0]
        self.tensor = flipped
        return self
