"""Pictures of detections and of ground truth: boxes, class names, scores, translucent masks and
keypoints joined by the skeleton, legible from 100-pixel to 4000-pixel images.

Masks and boxes are drawn by ``torchvision.utils.draw_*``; keypoints (outlined skeleton lines in
the instance's colour) and labels by Pillow, labels with a
scalable font (``ImageFont.load_default(size=...)``) on a filled tag, so they read on any
background. Small images are upscaled first (nearest neighbour, so pixels stay honest) and line
widths and font sizes follow the image size.
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

__all__ = ["COCO_PERSON_SKELETON", "draw_instances", "skeleton_from_metadata"]

MIN_SIDE = 512  # images with a shorter short side are upscaled so labels stay readable

# COCO's person skeleton by keypoint names (person_keypoints_*.json, 1-based indices there).
COCO_PERSON_SKELETON = [
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
    ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
    ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_eye", "right_eye"),
    ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
    ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
]  # fmt: skip


def class_color(index: int) -> tuple[int, int, int]:
    """A saturated colour per class id, far from its neighbours' (golden-ratio hues)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def skeleton_from_metadata(metadata: Any) -> list[tuple[str, str]] | None:
    """The pairs of keypoint names to join: the metadata's ``keypoint_skeleton``, else the
    ``skeleton`` of its COCO json's categories, else COCO's person skeleton when the names are
    COCO's; ``None`` without keypoints."""
    get = metadata.get if hasattr(metadata, "get") else (lambda key, default=None: default)
    names = get("keypoint_names")
    if not names:
        return None
    skeleton = get("keypoint_skeleton")
    if skeleton:
        return [tuple(pair) for pair in skeleton]
    json_file = get("json_file")
    if json_file:
        try:
            with open(json_file) as f:
                categories = json.load(f).get("categories", [])
            for cat in categories:
                if cat.get("skeleton") and cat.get("keypoints"):
                    kp = cat["keypoints"]
                    return [(kp[a - 1], kp[b - 1]) for a, b in cat["skeleton"]]
        except (OSError, ValueError, IndexError, TypeError, AttributeError):
            pass  # no drawable skeleton in the file: fall through
    if set(names) >= {n for pair in COCO_PERSON_SKELETON for n in pair}:
        return list(COCO_PERSON_SKELETON)
    return None


def _as_uint8_image(image: Tensor | np.ndarray | Image.Image) -> Tensor:
    """``[3, H, W]`` uint8 RGB from a CHW tensor, an HWC array or a PIL image."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"draw_instances: image must be [3, H, W] RGB, got {tuple(image.shape)}.")
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    if image.dtype != torch.uint8:
        image = image.float().clamp(0, 255).round().to(torch.uint8)
    return image.cpu()


def _field(instances: Any, *names: str) -> Any:
    for name in names:
        if instances.has(name):
            value = instances.get(name)
            return (
                value.tensor
                if hasattr(value, "tensor") and not isinstance(value, Tensor)
                else value
            )
    return None


def draw_instances(
    image: Tensor | np.ndarray | Image.Image,
    instances: Any,
    *,
    class_names: Sequence[str] | None = None,
    keypoint_names: Sequence[str] | None = None,
    skeleton: Sequence[tuple[str, str]] | None = None,
    score_threshold: float = 0.0,
    keypoint_threshold: float = 0.05,
    mask_alpha: float = 0.45,
) -> Image.Image:
    """Draw predictions (``pred_*``, ``scores``) or ground truth (``gt_*``) on ``image``.

    Args:
        image: the original image, ``[3, H, W]`` uint8 RGB tensor, HWC array or PIL image.
        instances: ``Instances`` in this image's coordinates: ``pred_boxes``/``gt_boxes`` (XYXY
            absolute pixels), ``pred_classes``/``gt_classes``, optional ``scores``,
            ``pred_masks``/``gt_masks`` (``[N, H, W]`` bool or ``BitMasks``), and
            ``pred_keypoints``/``gt_keypoints`` (``[N, K, 3]``: x, y, score or visibility).
        class_names: names by class id (default: the id).
        keypoint_names, skeleton: the names in keypoint order and the pairs to join.
        score_threshold: hide predictions scoring below it.
        keypoint_threshold: hide keypoints whose score (or visibility) is at or below it.
        mask_alpha: mask opacity.

    Returns:
        A PIL image (upscaled when the image is small; see ``MIN_SIDE``).
    """
    canvas = _as_uint8_image(image)
    height, width = canvas.shape[1:]
    scores = _field(instances, "scores")
    keep = torch.ones(len(instances), dtype=torch.bool)
    if scores is not None:
        keep = scores.detach().cpu() >= score_threshold
    if len(instances):
        index = keep.nonzero().flatten()
        if scores is not None:  # the best-scoring drawn last, on top of the others
            index = index[scores.detach().cpu()[index].argsort(stable=True)]
        instances = instances[index]
        scores = scores.detach().cpu()[index] if scores is not None else None
    boxes = _field(instances, "pred_boxes", "gt_boxes")
    classes = _field(instances, "pred_classes", "gt_classes")
    masks = _field(instances, "pred_masks", "gt_masks")
    keypoints = _field(instances, "pred_keypoints", "gt_keypoints")
    n = len(instances)
    classes = classes.cpu().long() if classes is not None else torch.zeros(n, dtype=torch.long)
    # One colour per instance (neighbours far apart in hue), so touching objects of one class
    # stay apart; the label names the class.
    colors = [class_color(i) for i in range(n)]

    scale = max(1, int(np.ceil(MIN_SIDE / max(1, min(height, width)))))
    if scale > 1:  # nearest neighbour: a small image gets bigger, not blurrier
        canvas = canvas.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    size = min(canvas.shape[1:])
    line = max(2, round(size / 300))

    if masks is not None and n:
        masks = masks.detach().cpu().bool()
        if scale > 1:
            masks = masks.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
        canvas = draw_segmentation_masks(canvas, masks, alpha=mask_alpha, colors=colors)
    if boxes is not None and n:
        xyxy = boxes.detach().cpu().float() * scale
        canvas = draw_bounding_boxes(canvas, xyxy, colors=colors, width=line)
    picture = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    if keypoints is not None and n:
        kp = keypoints.detach().cpu().float().clone()
        kp[:, :, :2] *= scale
        _draw_keypoints(picture, kp, colors, keypoint_names, skeleton, keypoint_threshold, line)
    if boxes is not None and n:
        _draw_labels(
            picture,
            boxes.detach().cpu().float() * scale,
            classes,
            scores,
            colors,
            class_names,
            size,
        )
    return picture


def _draw_keypoints(picture, kp, colors, keypoint_names, skeleton, threshold, line) -> None:
    """Skeleton lines in the instance's colour with a dark edge, then the points on top."""
    draw = ImageDraw.Draw(picture)
    pairs = []
    if skeleton and keypoint_names:
        index = {name: i for i, name in enumerate(keypoint_names)}
        pairs = [(index[a], index[b]) for a, b in skeleton if a in index and b in index]
    radius = max(2, round(line * 1.6))
    for i in range(kp.shape[0]):
        points, visible = kp[i, :, :2].tolist(), (kp[i, :, 2] > threshold).tolist()
        for a, b in pairs:
            if visible[a] and visible[b]:
                draw.line([tuple(points[a]), tuple(points[b])], fill=(20, 20, 20), width=line + 2)
                draw.line([tuple(points[a]), tuple(points[b])], fill=colors[i], width=line)
        for (x, y), shown in zip(points, visible):
            if shown:
                draw.ellipse(
                    [x - radius, y - radius, x + radius, y + radius],
                    fill=colors[i],
                    outline=(255, 255, 255),
                    width=max(1, line // 2),
                )


def _draw_labels(picture, boxes, classes, scores, colors, class_names, size) -> None:
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(11, round(size / 40)))
    pad = max(1, round(font.size / 6))
    for i, (box, cls) in enumerate(zip(boxes.tolist(), classes.tolist())):
        name = class_names[cls] if class_names and 0 <= cls < len(class_names) else str(cls)
        text = name if scores is None else f"{name} {float(scores[i]):.0%}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        x = min(max(0.0, box[0]), picture.width - tw - 2 * pad)
        # Above the box when there is room, else inside its top edge.
        y = box[1] - th - 2 * pad if box[1] - th - 2 * pad >= 0 else box[1]
        draw.rectangle([x, y, x + tw + 2 * pad, y + th + 2 * pad], fill=colors[i])
        luminance = 0.299 * colors[i][0] + 0.587 * colors[i][1] + 0.114 * colors[i][2]
        draw.text(
            (x + pad - left, y + pad - top),
            text,
            fill=(0, 0, 0) if luminance > 140 else (255, 255, 255),
            font=font,
        )


def instances_from_record(record: Mapping, image_size: tuple[int, int]) -> Any:
    """Ground-truth ``Instances`` (``gt_boxes``, ``gt_classes``, ``gt_masks``, ``gt_keypoints``)
    of one dataset record (``docs/data.md``: XYXY boxes, contiguous classes, polygons or RLE,
    keypoints ``[K, 3]`` with the loader's +0.5), for drawing a dataset as it was loaded."""
    from pycocotools import mask as mask_utils

    from lazydet.structures import Boxes, Instances

    height, width = image_size
    anns = list(record.get("annotations", []))
    boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
    fields: dict[str, Any] = {
        "gt_boxes": Boxes(boxes),
        "gt_classes": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
    }
    if anns and all(a.get("segmentation") for a in anns):
        masks = []
        for a in anns:
            seg = a["segmentation"]
            if isinstance(seg, list):  # polygons (float arrays from the loader, or lists)
                polygons = [np.asarray(p, dtype=np.float64).tolist() for p in seg]
                rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
            elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(seg, height, width)
            else:  # compressed RLE; pycocotools decodes bytes
                counts = seg["counts"]
                rle = {
                    "size": seg["size"],
                    "counts": counts.encode() if isinstance(counts, str) else counts,
                }
            masks.append(torch.from_numpy(mask_utils.decode(rle).astype(bool)))
        fields["gt_masks"] = torch.stack(masks)
    if anns and all(a.get("keypoints") is not None for a in anns):
        fields["gt_keypoints"] = torch.stack(
            [torch.as_tensor(np.asarray(a["keypoints"]), dtype=torch.float32) for a in anns]
        )
    return Instances((height, width), **fields)
