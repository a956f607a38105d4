"""Instance masks: dense bitmaps (``BitMasks``) and COCO polygons (``PolygonMasks``).

Pixel convention (same as boxes): pixel ``(row i, column j)`` covers ``[j, j + 1) x [i, i + 1)``
in continuous XYXY coordinates, so a mask whose true pixels are rows ``a..b`` and columns
``c..d`` has the bounding box ``(c, a, d + 1, b + 1)``.

Both classes produce the training target of a mask head with ``crop_and_resize(boxes, M)``:
the part of each mask inside its box, resampled to ``M x M``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pycocotools.mask as coco_mask
import torch
from torch import Tensor
from torchvision.ops import roi_align

from lazydet.structures._common import IndexLike, index_list, scalar_index
from lazydet.structures.boxes import Boxes

__all__ = ["BitMasks", "PolygonMasks"]

# Boxes thinner than this (pixels) are widened when cropping polygons, so that scaling a
# polygon into the M x M grid never divides by zero; such a box holds no real object anyway.
_MIN_CROP_EXTENT = 0.1


def _box_tensor(boxes: Tensor | Boxes, count: int, *, what: str) -> Tensor:
    """``boxes`` as a ``[count, 4]`` floating tensor (one box per mask)."""
    tensor = boxes.tensor if isinstance(boxes, Boxes) else boxes
    if not isinstance(tensor, Tensor):
        raise TypeError(
            f"{what}: boxes must be a [N, 4] tensor or Boxes, got {type(boxes).__name__}."
        )
    if tensor.dim() != 2 or tensor.shape[1] != 4 or tensor.shape[0] != count:
        raise ValueError(
            f"{what}: boxes must have shape [{count}, 4] (one XYXY box per mask), "
            f"got {tuple(tensor.shape)}."
        )
    return tensor if tensor.is_floating_point() else tensor.float()


def _check_mask_size(mask_size: Any, *, what: str) -> int:
    if (
        isinstance(mask_size, bool)
        or not isinstance(mask_size, (int, np.integer))
        or mask_size <= 0
    ):
        raise ValueError(f"{what}: mask_size must be a positive int, got {mask_size!r}.")
    return int(mask_size)


class BitMasks:
    """``N`` binary masks of one image as a bool tensor ``[N, H, W]``.

    Integer (e.g. uint8 0/1) tensors and numpy arrays are converted with ``!= 0``; floating
    masks are refused because the threshold that binarises them is the caller's choice.
    """

    def __init__(self, tensor: Tensor | np.ndarray) -> None:
        if isinstance(tensor, np.ndarray):
            tensor = torch.from_numpy(tensor)
        if not isinstance(tensor, Tensor):
            raise TypeError(
                f"BitMasks expects a [N, H, W] bool tensor, got {type(tensor).__name__}."
            )
        if tensor.is_floating_point() or tensor.is_complex():
            raise TypeError(
                f"BitMasks expects a bool or integer tensor, got {tensor.dtype}; binarise it first "
                "(e.g. BitMasks(probabilities >= 0.5))."
            )
        if tensor.dim() != 3:
            raise ValueError(f"BitMasks expects shape [N, H, W], got {tuple(tensor.shape)}.")
        self.tensor: Tensor = tensor if tensor.dtype == torch.bool else tensor != 0

    # ----------------------------------------------------------------------------------------
    # Container protocol
    # ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, item: IndexLike) -> BitMasks:
        """Select masks. An ``int`` returns a length-1 ``BitMasks``."""
        position = scalar_index(item)
        if position is not None:
            return BitMasks(self.tensor[position].unsqueeze(0))
        selected = self.tensor[item]
        if selected.dim() != 3:
            raise IndexError(
                f"Indexing BitMasks with {type(item).__name__} gave shape {tuple(selected.shape)}; "
                "use an int, a slice, a bool mask of length N or a 1-D long index."
            )
        return BitMasks(selected)

    def __repr__(self) -> str:
        height, width = self.image_size
        return f"BitMasks(num_instances={len(self)}, height={height}, width={width})"

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the masks."""
        return int(self.tensor.shape[1]), int(self.tensor.shape[2])

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, *args: Any, **kwargs: Any) -> BitMasks:
        """``Tensor.to`` on the mask tensor (a dtype argument is ignored: masks stay bool)."""
        moved = self.tensor.to(*args, **kwargs)
        return BitMasks(moved if moved.dtype == torch.bool else moved != 0)

    @classmethod
    def cat(cls, masks_list: Sequence[BitMasks]) -> BitMasks:
        """Concatenate ``BitMasks`` of one image (all must have the same ``H x W``)."""
        if not isinstance(masks_list, (list, tuple)) or len(masks_list) == 0:
            raise ValueError("BitMasks.cat expects a non-empty list of BitMasks.")
        for index, masks in enumerate(masks_list):
            if not isinstance(masks, BitMasks):
                raise TypeError(f"BitMasks.cat: element {index} is a {type(masks).__name__}.")
            if masks.image_size != masks_list[0].image_size:
                raise ValueError(
                    f"BitMasks.cat: element {index} is {masks.image_size}, element 0 is "
                    f"{masks_list[0].image_size}; masks of one image must share H x W."
                )
        return cls(torch.cat([masks.tensor for masks in masks_list], dim=0))

    # ----------------------------------------------------------------------------------------
    # Geometry
    # ----------------------------------------------------------------------------------------
    def area(self) -> Tensor:
        """Number of true pixels per mask: long ``[N]``."""
        return self.tensor.flatten(1).sum(dim=1)

    def nonempty(self) -> Tensor:
        """Bool ``[N]``: True where the mask has at least one true pixel."""
        return self.tensor.flatten(1).any(dim=1)

    def get_bounding_boxes(self) -> Boxes:
        """Tight XYXY boxes around the true pixels (``x2 = last column + 1``); zeros if empty."""
        count, height, width = self.tensor.shape
        if count == 0:
            return Boxes(torch.zeros(0, 4, device=self.device))
        columns_used = self.tensor.any(dim=1)  # [N, W]
        rows_used = self.tensor.any(dim=2)  # [N, H]
        column_ids = torch.arange(width, device=self.device).expand(count, width)
        row_ids = torch.arange(height, device=self.device).expand(count, height)
        # Unused positions are replaced by values that lose every min/max comparison.
        x1 = torch.where(columns_used, column_ids, width).amin(dim=1)
        x2 = torch.where(columns_used, column_ids, -1).amax(dim=1) + 1
        y1 = torch.where(rows_used, row_ids, height).amin(dim=1)
        y2 = torch.where(rows_used, row_ids, -1).amax(dim=1) + 1
        boxes = torch.stack((x1, y1, x2, y2), dim=1).float()
        return Boxes(torch.where(self.nonempty()[:, None], boxes, 0.0))

    def crop_and_resize(self, boxes: Tensor | Boxes, mask_size: int) -> Tensor:
        """Mask ``i`` inside ``boxes[i]`` resampled to ``[N, M, M]`` float values in ``[0, 1]``.

        ROIAlign (``aligned=True``, adaptive sampling) on the 0/1 mask, so the result is the
        same bilinear sampling that ROIAlign applies to the features a mask head sees: a box
        that exactly covers a filled region gives all ones. Boxes are XYXY pixels of the mask's
        image; the output is on the masks' device.
        """
        mask_size = _check_mask_size(mask_size, what="BitMasks.crop_and_resize")
        box_tensor = _box_tensor(boxes, len(self), what="BitMasks.crop_and_resize")
        if len(self) == 0:
            return torch.zeros(0, mask_size, mask_size, device=self.device)
        box_tensor = box_tensor.to(device=self.device, dtype=torch.float32)
        batch_index = torch.arange(len(self), device=self.device, dtype=torch.float32)
        rois = torch.cat([batch_index[:, None], box_tensor], dim=1)
        # ROI i reads only mask i (its batch index), so each box crops its own mask.
        crops = roi_align(
            self.tensor[:, None].float(),
            rois,
            output_size=(mask_size, mask_size),
            spatial_scale=1.0,
            sampling_ratio=0,
            aligned=True,
        )
        return crops.squeeze(1).clamp_(0.0, 1.0)


def _as_polygon(polygon: Any, *, instance: int, index: int) -> np.ndarray:
    """One polygon as a flat float64 array ``[x0, y0, x1, y1, ...]`` with at least 3 points."""
    if isinstance(polygon, Tensor):
        polygon = polygon.detach().cpu().numpy()
    try:
        array = np.asarray(polygon, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"PolygonMasks: polygon {index} of instance {instance} is not numeric "
            f"({type(polygon).__name__})."
        ) from None
    if array.ndim != 1 or array.size % 2 != 0 or array.size < 6:
        raise ValueError(
            f"PolygonMasks: polygon {index} of instance {instance} must be a flat list "
            f"[x0, y0, x1, y1, ...] of at least 3 points, got shape {array.shape}."
        )
    if not np.isfinite(array).all():
        raise ValueError(f"PolygonMasks: polygon {index} of instance {instance} has NaN or inf.")
    return array


def _rasterize(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Union of ``polygons`` as a ``[height, width]`` bool array (pycocotools' rasteriser)."""
    if not polygons or height == 0 or width == 0:
        return np.zeros((height, width), dtype=bool)
    rles = coco_mask.frPyObjects([polygon.tolist() for polygon in polygons], height, width)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


def _shoelace_area(polygon: np.ndarray) -> float:
    xs, ys = polygon[0::2], polygon[1::2]
    return 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))


class PolygonMasks:
    """``N`` instance masks as COCO polygons: ``polygons[i]`` is the list of polygons of
    instance ``i``, each a flat float array ``[x0, y0, x1, y1, ...]`` in absolute pixels.

    Polygons live on the CPU as float64 numpy arrays; ``to(device)`` returns ``self`` and the
    tensors produced by ``crop_and_resize`` go to the boxes' device.
    """

    def __init__(self, polygons: Sequence[Sequence[Any]]) -> None:
        if not isinstance(polygons, (list, tuple)):
            raise TypeError(
                "PolygonMasks expects a list (one entry per instance) of lists of polygons, "
                f"got {type(polygons).__name__}."
            )
        checked: list[list[np.ndarray]] = []
        for instance, instance_polygons in enumerate(polygons):
            if not isinstance(instance_polygons, (list, tuple)):
                raise TypeError(
                    f"PolygonMasks: instance {instance} must be a list of polygons, got "
                    f"{type(instance_polygons).__name__} (wrap a single polygon as [polygon])."
                )
            checked.append(
                [
                    _as_polygon(polygon, instance=instance, index=index)
                    for index, polygon in enumerate(instance_polygons)
                ]
            )
        self.polygons: list[list[np.ndarray]] = checked

    # ----------------------------------------------------------------------------------------
    # Container protocol
    # ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.polygons)

    def __getitem__(self, item: IndexLike) -> PolygonMasks:
        """Select instances (int -> length 1, slice, bool mask, 1-D integer index)."""
        return PolygonMasks(index_list(self.polygons, item, what="PolygonMasks"))

    def __repr__(self) -> str:
        return f"PolygonMasks(num_instances={len(self)})"

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, *args: Any, **kwargs: Any) -> PolygonMasks:
        """Polygons stay on the CPU (numpy); returns ``self`` so ``Instances.to`` works."""
        return self

    @classmethod
    def cat(cls, masks_list: Sequence[PolygonMasks]) -> PolygonMasks:
        """Concatenate several ``PolygonMasks`` (instances in list order)."""
        if not isinstance(masks_list, (list, tuple)):
            raise TypeError(f"PolygonMasks.cat expects a list, got {type(masks_list).__name__}.")
        for index, masks in enumerate(masks_list):
            if not isinstance(masks, PolygonMasks):
                raise TypeError(f"PolygonMasks.cat: element {index} is a {type(masks).__name__}.")
        return cls([polygons for masks in masks_list for polygons in masks.polygons])

    # ----------------------------------------------------------------------------------------
    # Geometry
    # ----------------------------------------------------------------------------------------
    def area(self) -> Tensor:
        """Polygon area per instance (shoelace formula, summed over its polygons): float ``[N]``.

        Exact geometric area; it equals pycocotools' rasterised pixel count for polygons whose
        edges lie on pixel boundaries. Overlapping polygons of one instance count twice.
        """
        return torch.tensor(
            [sum(_shoelace_area(polygon) for polygon in polygons) for polygons in self.polygons],
            dtype=torch.float32,
        )

    def get_bounding_boxes(self) -> Boxes:
        """XYXY boxes spanning the min/max polygon coordinates; zeros for an instance without
        polygons."""
        boxes = torch.zeros(len(self), 4, dtype=torch.float32)
        for instance, polygons in enumerate(self.polygons):
            if not polygons:
                continue
            coordinates = np.concatenate(polygons)
            xs, ys = coordinates[0::2], coordinates[1::2]
            boxes[instance] = torch.tensor([xs.min(), ys.min(), xs.max(), ys.max()])
        return Boxes(boxes)

    def to_bitmasks(self, height: int, width: int) -> BitMasks:
        """Rasterise every instance into a ``[N, height, width]`` ``BitMasks`` (pycocotools)."""
        if height < 0 or width < 0:
            raise ValueError(f"PolygonMasks.to_bitmasks: size must be >= 0, got {(height, width)}.")
        rasters = [_rasterize(polygons, int(height), int(width)) for polygons in self.polygons]
        if not rasters:
            return BitMasks(torch.zeros(0, height, width, dtype=torch.bool))
        return BitMasks(torch.from_numpy(np.stack(rasters)))

    def crop_and_resize(self, boxes: Tensor | Boxes, mask_size: int) -> Tensor:
        """Instance ``i`` inside ``boxes[i]`` rasterised on an ``M x M`` grid: ``[N, M, M]`` float.

        The polygons are shifted to the box's top-left corner and scaled by ``M / box_width`` and
        ``M / box_height`` before rasterising, so the target is computed at mask resolution
        without ever drawing the full image (values are 0 or 1). Output on the boxes' device.
        """
        mask_size = _check_mask_size(mask_size, what="PolygonMasks.crop_and_resize")
        box_tensor = _box_tensor(boxes, len(self), what="PolygonMasks.crop_and_resize")
        box_array = box_tensor.detach().to("cpu", torch.float64).numpy()
        crops = np.zeros((len(self), mask_size, mask_size), dtype=np.float32)
        for instance, (polygons, box) in enumerate(zip(self.polygons, box_array)):
            x1, y1, x2, y2 = box
            scale_x = mask_size / max(x2 - x1, _MIN_CROP_EXTENT)
            scale_y = mask_size / max(y2 - y1, _MIN_CROP_EXTENT)
            in_box = []
            for polygon in polygons:
                moved = polygon.copy()
                moved[0::2] = (moved[0::2] - x1) * scale_x
                moved[1::2] = (moved[1::2] - y1) * scale_y
                in_box.append(moved)
            crops[instance] = _rasterize(in_box, mask_size, mask_size)
        return torch.from_numpy(crops).to(box_tensor.device)
