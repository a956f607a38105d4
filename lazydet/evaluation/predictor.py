"""``Predictor``: images in, ``Instances`` in image coordinates out.

Build it from a config and weights, or from a lazydet checkpoint alone (its metadata carries the
config, class names, input format and keypoint names)::

    predictor = Predictor.from_checkpoint("output/model_final.pth")
    instances = predictor("photo.jpg")                    # path, PIL image, HWC array, CHW tensor
    batch = predictor(["a.jpg", "b.jpg"])                 # list in, list out, batched

Images are resized as the config's test loader resizes them (``dataloader.test.mapper.
augmentations``) and the model reports detections at the original size. The model runs on the GPU
when there is one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor, nn

from lazydet.utils.comm import select_device

__all__ = ["Predictor"]

logger = logging.getLogger("lazydet.predictor")

ImageLike = str | os.PathLike | Image.Image | np.ndarray | Tensor


def to_image_tensor(image: ImageLike, *, what: str = "image") -> Tensor:
    """``[3, H, W]`` uint8 RGB from a file path, a PIL image, an ``[H, W, 3]``/``[H, W]`` array
    (RGB, uint8 or 0-255 floats) or a ``[3, H, W]`` tensor (RGB, uint8 or 0-255 floats).

    Raises:
        FileNotFoundError, ValueError: naming the input and what was wrong with it.
    """
    if isinstance(image, (str, os.PathLike)):
        from lazydet.data import read_image  # EXIF rotation, clear errors on bad files

        path = Path(image)
        if path.is_dir():
            raise ValueError(f"{what} {str(path)!r} is a directory; give an image file.")
        return read_image(str(path))
    if isinstance(image, Image.Image):
        pil = ImageOps.exif_transpose(image).convert("RGB")
        return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None].repeat(3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"{what} is an array of shape {image.shape}; arrays must be [H, W, 3] RGB or "
                "[H, W] gray (tensors are [3, H, W])."
            )
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    elif isinstance(image, Tensor):
        tensor = image.detach()
        if tensor.dim() == 2:
            tensor = tensor.expand(3, -1, -1)
        if tensor.dim() != 3 or tensor.shape[0] != 3:
            raise ValueError(
                f"{what} is a tensor of shape {tuple(tensor.shape)}; tensors must be [3, H, W] "
                "RGB (arrays are [H, W, 3])."
            )
    else:
        raise ValueError(
            f"{what} is a {type(image).__name__}; give a path, a PIL image, an array or a tensor."
        )
    if tensor.shape[1] == 0 or tensor.shape[2] == 0:
        raise ValueError(f"{what} is empty ({tuple(tensor.shape)}).")
    if tensor.dtype != torch.uint8:
        if tensor.dtype == torch.bool or tensor.is_complex():
            raise ValueError(f"{what} has dtype {tensor.dtype}; use uint8 or 0-255 floats.")
        values = tensor.float()
        if not torch.isfinite(values).all():
            raise ValueError(f"{what} has NaN or infinite pixels.")
        if values.min() < 0 or values.max() > 255:
            raise ValueError(
                f"{what} has values in [{values.min().item():g}, {values.max().item():g}]; pixels "
                "must be 0-255 (multiply 0-1 images by 255)."
            )
        tensor = values.round().to(torch.uint8)
    return tensor.cpu()


class Predictor:
    """Run a detector on images; ``Instances`` in each image's own pixel coordinates.

    Args:
        model: ``model(list[dict(image=[3, H, W] uint8 RGB, height, width)]) ->
            list[dict(instances=Instances)]`` (lazydet's inference signature).
        class_names: names by class id (for pictures and results; optional).
        augmentations: the test-time transform (a torchvision v2 transform on the image), or None
            to feed images at their size.
        device: where the model runs (default: CUDA when available, else CPU).
        batch_size: images per forward pass when given a list.
        keypoint_names, keypoint_skeleton: for drawing keypoints (names, pairs of names).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        class_names: Sequence[str] | None = None,
        augmentations: Callable[[Any], Any] | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 4,
        keypoint_names: Sequence[str] | None = None,
        keypoint_skeleton: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"Predictor: batch_size={batch_size}; it must be at least 1.")
        self.device = select_device(device, key="device")
        self.model = model.to(self.device).eval()
        self.class_names = list(class_names) if class_names is not None else None
        self.augmentations = augmentations
        self.batch_size = batch_size
        self.keypoint_names = list(keypoint_names) if keypoint_names else None
        self.keypoint_skeleton = (
            [tuple(p) for p in keypoint_skeleton] if keypoint_skeleton else None
        )

    @classmethod
    def from_config(
        cls,
        cfg: Any,
        *,
        weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 4,
    ) -> Predictor:
        """Build ``cfg.model``, load ``weights`` (a file, a weights name such as
        ``torchvision:maskrcnn_resnet50_fpn`` or a state dict; default
        ``cfg.train.init_checkpoint``), and take names from the test dataset's metadata.

        The weights must fit the whole model (``WeightsMisfitError`` otherwise). No weights at
        all is refused (``ValueError``) unless ``weights="random"`` (or
        ``train.init_checkpoint=random``) asks for the initial values on purpose."""
        from lazydet.checkpoint.build import RANDOM_WEIGHTS, build_model
        from lazydet.config import instantiate, select, select_resolved
        from lazydet.utils.visualizer import skeleton_from_metadata

        chosen = weights if weights is not None else select(cfg, "train.init_checkpoint")
        if chosen is None or (isinstance(chosen, str) and not chosen):
            raise ValueError(
                "No weights to predict with: set train.init_checkpoint=FILE_OR_NAME (e.g. "
                "torchvision:maskrcnn_resnet50_fpn, docs/weights.md), or "
                f"train.init_checkpoint={RANDOM_WEIGHTS} to predict with random weights on purpose."
            )
        if isinstance(chosen, str) and chosen == RANDOM_WEIGHTS:
            logger.warning("train.init_checkpoint=%s: predicting with random weights.", chosen)
        # Raises WeightsMisfitError when tensors are missing or mismatched.
        model, _ = build_model(cfg, weights=weights)
        augmentation_node = select(cfg, "dataloader.test.mapper.augmentations")
        augmentations = instantiate(augmentation_node) if augmentation_node is not None else None
        class_names = keypoint_names = skeleton = None
        dataset = select_resolved(cfg, "dataset.test")  # coco_json: a ${...} that registers it
        if isinstance(dataset, str):
            from lazydet.data import MetadataCatalog

            if dataset in MetadataCatalog.names():
                metadata = MetadataCatalog.get(dataset)
                class_names = metadata.get("thing_classes")
                keypoint_names = metadata.get("keypoint_names")
                skeleton = skeleton_from_metadata(metadata)
        return cls(
            model=model,
            class_names=class_names,
            augmentations=augmentations,
            device=device,
            batch_size=batch_size,
            keypoint_names=keypoint_names,
            keypoint_skeleton=skeleton,
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 4,
        config: Any = None,
        trusted: bool = False,
    ) -> Predictor:
        """Everything from a lazydet checkpoint: its stored config builds the model, its
        metadata names the classes and keypoints.

        The stored config is read as data (YAML, loaded untrusted: only allow-listed targets
        are built, and no code stored in the file runs). A checkpoint whose config is Python
        text is refused unless ``trusted=True`` (which also lifts the allow-list: use it only
        for checkpoints you trust as you would a config file). ``config`` (the experiment's
        config, as ``conf=`` gives) replaces the stored one; the metadata still names classes.
        """
        from lazydet.checkpoint import config_from_metadata, read_metadata

        metadata = read_metadata(path)
        cfg = config if config is not None else config_from_metadata(metadata, trusted=trusted)
        predictor = cls.from_config(cfg, weights=path, device=device, batch_size=batch_size)
        predictor.class_names = list(metadata["class_names"])
        if metadata.get("keypoint_names"):
            predictor.keypoint_names = list(metadata["keypoint_names"])
            skeleton = metadata.get("keypoint_skeleton")
            predictor.keypoint_skeleton = (
                [tuple(p) for p in skeleton] if skeleton else predictor.keypoint_skeleton
            )
        return predictor

    def _prepare(self, image: Tensor) -> dict:
        height, width = int(image.shape[1]), int(image.shape[2])
        if self.augmentations is not None:
            from torchvision import tv_tensors

            image = self.augmentations(tv_tensors.Image(image)).as_subclass(Tensor)
        return {"image": image, "height": height, "width": width}

    @torch.no_grad()
    def predict(self, images: Sequence[ImageLike]) -> list[Any]:
        """``Instances`` (on CPU, original image coordinates) for each image, in order."""
        results = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            inputs = [
                self._prepare(to_image_tensor(img, what=f"image {start + i}"))
                for i, img in enumerate(chunk)
            ]
            outputs = self.model(inputs)
            results += [out["instances"].to("cpu") for out in outputs]
        return results

    def __call__(self, image: ImageLike | Sequence[ImageLike]) -> Any:
        """One image -> ``Instances``; a list (or a ``[B, 3, H, W]`` tensor) -> a list."""
        if isinstance(image, (list, tuple)):
            return self.predict(list(image))
        if isinstance(image, Tensor) and image.dim() == 4:
            return self.predict(list(image))
        return self.predict([image])[0]
