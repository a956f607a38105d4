"""Detections from the network's input resolution back to the original image.

A model sees an image resized (and padded) for the network; its detections are reported at the
size the input dict names (``height``/``width``, the image as it was loaded).
``detector_postprocess`` rescales boxes and keypoints and pastes the box-relative masks into full
image masks, the way torchvision does (``paste_masks_in_image``) or Detectron2 does
(``paste_masks_grid_sample``): the same probabilities give different masks at the borders.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lazydet.structures import Instances
from lazydet.utils.compile import check_all_true

MaskPaste = Literal["torchvision", "detectron2"]


def _check_paste_inputs(name: str, masks: Tensor, boxes: Tensor) -> None:
    if masks.dim() != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"{name}: masks must be [N, M, M], got {tuple(masks.shape)}.")
    if boxes.shape != (masks.shape[0], 4):
        raise ValueError(
            f"{name}: boxes must be [{masks.shape[0]}, 4] (one per mask), got {tuple(boxes.shape)}."
        )
    finite = torch.isfinite(boxes)
    if torch.compiler.is_compiling():  # no data-dependent branch (graph break) when compiled
        check_all_true(finite, f"{name}: boxes have NaN or infinite coordinates.", ValueError)
    elif not finite.all():
        bad = (~torch.isfinite(boxes)).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(
            f"{name}: boxes {bad[:10]} have NaN or infinite coordinates; a mask cannot be "
            "pasted into no place. Drop those detections first."
        )


def _empty_pasted(masks: Tensor, height: int, width: int, threshold: float | None) -> Tensor:
    """The zero ``[N, height, width]`` canvas: bool when thresholding, else ``masks``' dtype."""
    dtype = masks.dtype if threshold is None else torch.bool
    return torch.zeros((masks.shape[0], height, width), dtype=dtype, device=masks.device)


def paste_masks_in_image(
    masks: Tensor,
    boxes: Tensor,
    image_size: tuple[int, int],
    *,
    padding: int = 1,
    threshold: float | None = None,
) -> Tensor:
    """Paste ``M x M`` box-relative masks into ``height x width`` images, as torchvision does.

    Each mask is first padded with ``padding`` zero pixels on every side and its box grown by the
    same relative amount (``(M + 2 * padding) / M``, around the box centre), so the bilinear
    resize fades to 0 at the box border instead of stretching the edge values outwards. The grown
    box is truncated to integer pixels (towards zero) and the mask resized (bilinear,
    ``align_corners=False``) to ``(y2 - y1 + 1) x (x2 - x1 + 1)`` pixels and written at
    ``[y1, y2] x [x1, x2]`` (inclusive), clipped to the image. This reproduces
    ``torchvision.models.detection.roi_heads.paste_masks_in_image`` value for value (it is the
    reference in the tests); Detectron2 instead samples the mask at every pixel centre with
    ``grid_sample`` (``paste_masks_grid_sample``).

    Args:
        masks: ``[N, M, M]`` float values (probabilities) over each box.
        boxes: ``[N, 4]`` XYXY pixels of the output image.
        image_size: ``(height, width)`` of the output.
        padding: zero pixels added around each mask before resizing.
        threshold: when given, each resized mask is thresholded (``>= threshold``) inside its
            box and the result is bool: the same as thresholding the float result, without an
            image-sized float mask per detection (4x the memory, and a pass over all of it).

    Returns:
        ``[N, height, width]`` in ``masks``' dtype (0 outside the boxes), or bool with
        ``threshold``.
    """
    _check_paste_inputs("paste_masks_in_image", masks, boxes)
    if padding < 0:
        raise ValueError(f"paste_masks_in_image: padding must be >= 0, got {padding}.")
    height, width = (int(s) for s in image_size)
    mask_size = masks.shape[-1]
    pasted = _empty_pasted(masks, height, width, threshold)
    if masks.shape[0] == 0:
        return pasted
    padded = F.pad(masks, (padding,) * 4)
    scale = (mask_size + 2 * padding) / mask_size
    # The same arithmetic (and order) as torchvision, so the truncated pixel boxes agree.
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5
    centre_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    centre_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    half_w = half_w * scale
    half_h = half_h * scale
    grown = torch.stack(
        (centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h), dim=1
    )
    # One host sync for all boxes (the sizes of the resized masks must be Python ints).
    pixel_boxes = grown.to(torch.int64).tolist()
    for index, (x1, y1, x2, y2) in enumerate(pixel_boxes):
        box_w = max(x2 - x1 + 1, 1)
        box_h = max(y2 - y1 + 1, 1)
        left, right = max(x1, 0), min(x2 + 1, width)
        top, bottom = max(y1, 0), min(y2 + 1, height)
        if right <= left or bottom <= top:
            continue  # the box lies outside the image
        resized = F.interpolate(
            padded[index][None, None], size=(box_h, box_w), mode="bilinear", align_corners=False
        )[0, 0]
        window = resized[top - y1 : bottom - y1, left - x1 : right - x1]
        pasted[index, top:bottom, left:right] = window if threshold is None else window >= threshold
    return pasted


def paste_masks_grid_sample(
    masks: Tensor, boxes: Tensor, image_size: tuple[int, int], *, threshold: float | None = None
) -> Tensor:
    """Paste ``M x M`` box-relative masks into ``height x width`` images, as Detectron2 does.

    The mask is stretched over the box exactly (no padding, no truncation of the box to whole
    pixels) and sampled bilinearly at every pixel centre ``(x + 0.5, y + 0.5)``: mask coordinate
    ``u = (x + 0.5 - x1) / (x2 - x1) * M - 0.5`` (``grid_sample`` with ``align_corners=False``),
    blending with zeros beyond the mask's outer cells. Only pixels within one pixel of the box
    are written (``[floor(x1) - 1, ceil(x2) + 1)``, clipped to the image), as Detectron2's CPU
    path does per mask; its GPU path samples the whole image, which adds values below 0.5 farther
    out on boxes wider than ``3 M`` pixels and so gives the same masks at any threshold >= 0.5.
    Against ``paste_masks_in_image`` (torchvision's) the masks differ at the borders: by up to a
    pixel, which matters on small boxes.

    Args:
        masks: ``[N, M, M]`` float values (probabilities) over each box.
        boxes: ``[N, 4]`` XYXY pixels of the output image (finite; empty boxes paste nothing).
        image_size: ``(height, width)`` of the output.
        threshold: as in ``paste_masks_in_image``: bool masks, thresholded box by box.

    Returns:
        ``[N, height, width]`` in ``masks``' dtype (0 outside the boxes' windows), or bool with
        ``threshold``.
    """
    _check_paste_inputs("paste_masks_grid_sample", masks, boxes)
    height, width = (int(s) for s in image_size)
    pasted = _empty_pasted(masks, height, width, threshold)
    if masks.shape[0] == 0:
        return pasted
    boxes = boxes.to(torch.float32)
    for index, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        if not (x2 > x1 and y2 > y1):
            continue  # an empty box covers no pixel centre
        left, top = max(math.floor(x1) - 1, 0), max(math.floor(y1) - 1, 0)
        right, bottom = min(math.ceil(x2) + 1, width), min(math.ceil(y2) + 1, height)
        if right <= left or bottom <= top:
            continue  # the box lies outside the image
        box = boxes[index]
        # Pixel centres in grid_sample's [-1, 1] box coordinates, in float32 as Detectron2.
        grid_x = torch.arange(left, right, dtype=torch.float32, device=masks.device) + 0.5 - box[0]
        grid_x = grid_x / (box[2] - box[0]) * 2 - 1
        grid_y = torch.arange(top, bottom, dtype=torch.float32, device=masks.device) + 0.5 - box[1]
        grid_y = grid_y / (box[3] - box[1]) * 2 - 1
        grid = torch.stack(torch.meshgrid(grid_x, grid_y, indexing="xy"), dim=-1)
        sampled = F.grid_sample(
            masks[index][None, None].float(), grid[None], mode="bilinear", align_corners=False
        )
        window = sampled[0, 0].to(masks.dtype)
        pasted[index, top:bottom, left:right] = window if threshold is None else window >= threshold
    return pasted


def detector_postprocess(
    results: Instances,
    output_height: int,
    output_width: int,
    *,
    mask_threshold: float | None = 0.5,
    mask_paste: MaskPaste = "torchvision",
) -> Instances:
    """Detections of the network's input image rescaled to an ``output_height x output_width``
    image (Detectron2's ``detector_postprocess``).

    Boxes are scaled by ``output / input`` per axis, clipped to the output image, and detections
    whose box became empty are dropped. ``pred_keypoints`` x and y are scaled likewise (their
    score is kept). Box-relative ``pred_masks`` ``[D, M, M]`` are pasted into the output image
    (on the rescaled boxes, ``paste_masks_in_image`` for ``mask_paste="torchvision"``,
    ``paste_masks_grid_sample`` for ``"detectron2"``) and thresholded: ``[D, H, W]`` bool with
    ``mask_threshold`` (a pixel is in the mask when its probability is ``>= mask_threshold``, the
    format COCO evaluation and drawing take), or float probabilities when it is None.

    Args:
        results: ``Instances`` with ``pred_boxes`` in the coordinates of ``results.image_size``.
        output_height, output_width: the size to report detections at.
        mask_threshold: see above.
        mask_paste: ``"torchvision"`` or ``"detectron2"``: whose paste to reproduce.

    Returns:
        A new ``Instances`` of image size ``(output_height, output_width)``; ``results`` is not
        modified.
    """
    if output_height <= 0 or output_width <= 0:
        raise ValueError(
            f"detector_postprocess: output size must be positive, got "
            f"({output_height}, {output_width})."
        )
    if mask_paste not in ("torchvision", "detectron2"):
        raise ValueError(
            f"detector_postprocess: mask_paste must be 'torchvision' or 'detectron2', got "
            f"{mask_paste!r}."
        )
    input_height, input_width = results.image_size
    scale_x = output_width / input_width
    scale_y = output_height / input_height
    output_size = (int(output_height), int(output_width))
    fields = dict(results.get_fields())
    boxes = fields["pred_boxes"].clone()
    boxes.scale(scale_x, scale_y)
    boxes.clip(output_size)
    fields["pred_boxes"] = boxes
    if "pred_keypoints" in fields:
        keypoints = fields["pred_keypoints"].clone()
        keypoints[:, :, 0] *= scale_x
        keypoints[:, :, 1] *= scale_y
        fields["pred_keypoints"] = keypoints
    rescaled = Instances(output_size, **fields)
    rescaled = rescaled[boxes.nonempty()]
    if rescaled.has("pred_masks"):
        paste = paste_masks_in_image if mask_paste == "torchvision" else paste_masks_grid_sample
        rescaled.pred_masks = paste(
            rescaled.pred_masks,
            rescaled.pred_boxes.tensor,
            output_size,
            threshold=mask_threshold,
        )
    return rescaled
