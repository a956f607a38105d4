"""The exportable part of a detector: one image in, detections as plain tensors out.

``DetectionGraph`` wraps a lazydet detector (any ``DetectorBase``: Faster / Mask / Keypoint
R-CNN, RetinaNet) so that ``torch.export`` and the ONNX exporter see a function of tensors only:

- in: ``image`` ``[3, H, W]`` float32 RGB, raw 0-255 pixels, at the size the model runs at (after
  the recipe's test resize); the graph flips to BGR when the model's ``input_format`` is BGR,
  normalises and pads to the backbone's ``size_divisibility`` as the model does.
- out, in the coordinates of that image: ``boxes`` ``[D, 4]`` XYXY, ``scores`` ``[D]``,
  ``labels`` ``[D]`` int64 (contiguous class ids), then ``mask_probs`` ``[D, M, M]``
  (box-relative mask probabilities, Mask R-CNN) and ``keypoint_heatmaps`` ``[D, K, S, S]``
  (the keypoint head's logits, Keypoint R-CNN).

What stays outside (``lazydet.deploy.runtime.postprocess``): rescaling to the original image,
clipping, pasting box-relative masks into the image (``paste_masks_in_image`` loops over
detections in Python with data-dependent sizes) and decoding keypoint heatmaps
(``heatmaps_to_keypoints`` resizes each heatmap to its box's data-dependent size): the two graph
breaks of Mask and Keypoint R-CNN under ``torch.compile`` too (docs/ops.md).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from lazydet.structures import ImageList

__all__ = ["DetectionGraph", "output_names"]


def output_names(*, has_masks: bool, has_keypoints: bool) -> list[str]:
    """The graph's outputs, in order."""
    names = ["boxes", "scores", "labels"]
    if has_masks:
        names.append("mask_probs")
    if has_keypoints:
        names.append("keypoint_heatmaps")
    return names


class DetectionGraph(nn.Module):
    """``forward(image) -> (boxes, scores, labels[, mask_probs][, keypoints])`` (module doc).

    Args:
        model: a lazydet detector in eval mode.
    """

    def __init__(self, *, model: nn.Module) -> None:
        super().__init__()
        self.model = _heatmaps_as_output(model.eval())

    @property
    def has_masks(self) -> bool:
        heads = getattr(self.model, "roi_heads", None)
        return getattr(heads, "mask_head", None) is not None

    @property
    def has_keypoints(self) -> bool:
        heads = getattr(self.model, "roi_heads", None)
        return getattr(heads, "keypoint_head", None) is not None

    @property
    def size_divisibility(self) -> int:
        """The backbone's: the graph's height and width are multiples of it."""
        return max(int(self.model.backbone.size_divisibility), 1)

    @property
    def min_size(self) -> int:
        """The least height and width the graph takes: one pixel above the coarsest feature
        stride (64 for P6, 128 for RetinaNet's P7). At the stride itself the coarsest map has
        one cell, and the traced graph has specialised that away."""
        strides = [spec.stride for spec in self.model.backbone.output_shape().values()]
        return int(max(strides)) + 1

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        # The model's preprocess_image, written so that torch.export can keep the size
        # symbolic and serialise the graph: ImageList.from_tensors's math.ceil cannot be
        # serialised in a .pt2, and its copy into a padded canvas makes the solver guard
        # H <= 32 * ceil(H / 32), which it cannot prove. F.pad by the remainder (bottom and
        # right, 0 after normalisation: the model's padding) needs neither.
        model = self.model
        height, width = image.shape[1], image.shape[2]
        step = self.size_divisibility
        pad_bottom = (-height) % step  # the solver knows a remainder is >= 0
        pad_right = (-width) % step
        pixels = image.to(torch.float32)
        if getattr(model, "input_format", "RGB") == "BGR":
            pixels = pixels.flip(0)
        normalized = (pixels - model.pixel_mean) / model.pixel_std
        padded = nn.functional.pad(normalized[None], (0, pad_right, 0, pad_bottom))
        images = ImageList(padded, [(height, width)])
        # height/width (the size to report at) are unused without postprocessing.
        inputs = [{"image": image, "height": 1, "width": 1}]
        result = model.detect(inputs, images)[0]
        outputs = [result.pred_boxes.tensor, result.scores, result.pred_classes]
        if result.has("pred_masks"):
            masks = result.pred_masks
            outputs.append(masks[:, 0] if masks.dim() == 4 else masks)
        if result.has("pred_keypoint_heatmaps"):
            outputs.append(result.pred_keypoint_heatmaps)
        return tuple(outputs)


def _heatmaps_as_output(model: nn.Module) -> nn.Module:
    """``model`` whose keypoint head, if any, leaves its heatmap logits on the detections
    (``pred_keypoint_heatmaps``) instead of decoding them; ``model`` itself is unchanged (shallow
    copies of the model, its ROI heads and the keypoint head share every parameter)."""
    heads = getattr(model, "roi_heads", None)
    head = getattr(heads, "keypoint_head", None)
    if head is None:
        return model
    keypoint_head = copy.copy(head)

    def keep_heatmaps(heatmap_logits: Tensor, detections) -> None:
        (image_detections,) = detections  # the graph takes one image
        image_detections.pred_keypoint_heatmaps = heatmap_logits

    keypoint_head.inference = keep_heatmaps
    new_heads = copy.copy(heads)
    new_heads._modules = {**heads._modules, "keypoint_head": keypoint_head}
    new_model = copy.copy(model)
    new_model._modules = {**model._modules, "roi_heads": new_heads}
    return new_model
