"""Model inputs -> a normalised, padded batch, and the checks every meta-architecture makes on
its inputs (images, ground truth) before any computation, so bad inputs fail with one message
that names the input, the field and the value instead of deep inside a convolution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from lazydet.structures import Boxes, ImageList, Instances
from lazydet.utils.compile import check_all_true

# ImageNet statistics in 0-255 RGB, the convention of torchvision's pretrained backbones.
IMAGENET_RGB_MEAN = (123.675, 116.28, 103.53)
IMAGENET_RGB_STD = (58.395, 57.12, 57.375)

InputFormat = Literal["RGB", "BGR"]
# Model inputs: one dict per image (``image``, optional ``height``/``width``, ``instances``).
BatchedInputs = Sequence[Mapping[str, Any]]
INPUT_FORMATS = ("RGB", "BGR")


def normalize_and_batch(
    batched_inputs: Sequence[Mapping[str, Any]],
    *,
    pixel_mean: Tensor,
    pixel_std: Tensor,
    size_divisibility: int,
    input_format: InputFormat = "RGB",
    owner: str,
) -> ImageList:
    """Check and normalise each input's ``image`` and pad them into one batch.

    Args:
        batched_inputs: one dict per image with ``image``: ``[C, H, W]`` (uint8 or float, 0-255,
            RGB channel order as the data pipeline produces), ``H, W >= 1``, finite values.
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
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(
                f"{owner} input {index} has an empty image of {image.shape[1]}x{image.shape[2]} "
                "pixels (height x width); drop it from the batch or check the data pipeline's "
                "resize and crop."
            )
        if image.dtype == torch.bool or image.is_complex():
            raise ValueError(
                f"{owner} input {index} has an image of dtype {image.dtype}; pass uint8 or float "
                "pixel values in 0-255."
            )
        image = image.to(pixel_mean.device, torch.float32)
        if input_format == "BGR":
            image = image.flip(0)
        images.append((image - pixel_mean) / pixel_std)
    batch = ImageList.from_tensors(images, size_divisibility)
    # One check (one host sync) for the whole batch; NaN pixels would otherwise give NaN
    # features, no detections and no word of why.
    finite = torch.isfinite(batch.tensor)
    if torch.compiler.is_compiling():  # no data-dependent branch (graph break) when compiled
        check_all_true(finite, f"{owner}: an input has NaN or infinite pixel values.", ValueError)
    elif not finite.all():
        bad = [i for i, image in enumerate(images) if not torch.isfinite(image).all()]
        raise ValueError(
            f"{owner} input(s) {bad} have NaN or infinite pixel values; fix or skip those images "
            "(a float image must hold finite values in 0-255)."
        )
    return batch


def output_size(
    inputs: Mapping[str, Any], image_size: tuple[int, int], *, index: int, owner: str
) -> tuple[int, int]:
    """``(height, width)`` to report an input's detections at: its ``height``/``width`` (the
    original image before resizing) or, absent, the size of its ``image``."""
    size = []
    for key, default in zip(("height", "width"), image_size):
        value = inputs.get(key, default)
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        try:
            valid = not isinstance(value, bool) and float(value).is_integer() and value > 0
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(
                f"{owner} input {index} has {key}={value!r}; it is the size to report detections "
                "at (the original image's) and must be a positive integer."
            )
        size.append(int(value))
    return size[0], size[1]


def check_gt_instances(
    batched_inputs: Sequence[Mapping[str, Any]], *, num_classes: int | None, owner: str
) -> list[Instances]:
    """The training targets of every input, checked: ``instances`` with ``gt_boxes`` (``Boxes``,
    ``[N, 4]`` finite XYXY pixels) and ``gt_classes`` (``[N]`` integers in
    ``[0, num_classes)``; ``num_classes=None`` skips the range check).

    A class id outside the range (``-1``, ``num_classes`` or more) is refused rather than read as
    "ignore" or "background": lazydet has no ignore label in ``gt_classes``.
    """
    targets = []
    for index, inputs in enumerate(batched_inputs):
        instances = inputs.get("instances")
        if not isinstance(instances, Instances):
            raise ValueError(
                f"{owner} in training mode needs 'instances' (Instances with gt_boxes and "
                f"gt_classes) in every input dict; input {index} has "
                f"{type(instances).__name__ if 'instances' in inputs else 'none'}."
            )
        for field in ("gt_boxes", "gt_classes"):
            if not instances.has(field):
                raise ValueError(
                    f"{owner} input {index}: instances lack '{field}'; training needs gt_boxes "
                    "(Boxes, XYXY pixels) and gt_classes (int64 class ids)."
                )
        boxes, classes = instances.gt_boxes, instances.gt_classes
        if not isinstance(boxes, Boxes):
            raise ValueError(
                f"{owner} input {index}: gt_boxes must be a Boxes, got {type(boxes).__name__}."
            )
        finite = torch.isfinite(boxes.tensor).all(dim=1)
        compiling = torch.compiler.is_compiling()
        if compiling:
            # Naming the bad boxes needs their values on the host, a graph break when compiled:
            # the compiled check stays in the graph and says what is wrong without the indices.
            check_all_true(
                finite,
                f"{owner} input {index}: gt_boxes have NaN or infinite coordinates; fix or drop "
                "those annotations.",
                ValueError,
            )
        elif not finite.all():
            bad_boxes = (~finite).nonzero().flatten()
            raise ValueError(
                f"{owner} input {index}: gt_boxes {bad_boxes.tolist()} have NaN or infinite "
                f"coordinates ({boxes.tensor[bad_boxes[0]].tolist()}); fix or drop those "
                "annotations."
            )
        if classes.is_floating_point() or classes.dtype == torch.bool:
            raise ValueError(
                f"{owner} input {index}: gt_classes must hold integer class ids, got dtype "
                f"{classes.dtype}."
            )
        if num_classes is not None and compiling:
            check_all_true(
                (classes >= 0) & (classes < num_classes),
                f"{owner} input {index}: gt_classes outside [0, {num_classes}); the model has "
                f"{num_classes} classes. Map the dataset's category ids to 0..{num_classes - 1}.",
                ValueError,
            )
        elif num_classes is not None and len(classes) > 0:
            bad = ((classes < 0) | (classes >= num_classes)).nonzero().flatten()
            if len(bad) > 0:
                raise ValueError(
                    f"{owner} input {index}: gt_classes {classes[bad].unique().tolist()} (at "
                    f"instances {bad.tolist()[:10]}) are outside [0, {num_classes}); the model has "
                    f"{num_classes} classes. Map the dataset's category ids to 0..{num_classes - 1}"
                    " and drop, rather than label -1, the annotations to ignore."
                )
        targets.append(instances)
    return targets
