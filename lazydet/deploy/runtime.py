"""Run an exported detector (``.pt2`` or ``.onnx``) the way ``Predictor`` runs the eager one.

``ExportedPredictor.load("model.pt2")`` reads the model and its metadata
(``lazydet.deploy.metadata``); ``predictor("photo.jpg")`` gives ``Instances`` in the image's own
pixels (``pred_boxes``, ``scores``, ``pred_classes``, ``pred_masks`` bool ``[D, H, W]``,
``pred_keypoints`` ``[D, K, 3]``), like ``Predictor``. Steps around the graph, in Python:

1. the test-time resize of the recipe (``torchvision.transforms.v2.Resize`` with the stored
   ``resize``), the same transform ``Predictor`` applies;
2. the graph (``torch.export.load(...).module()`` or an ``onnxruntime.InferenceSession``);
3. ``postprocess``: decode keypoint heatmaps (``heatmaps_to_keypoints``), rescale to the
   original image, clip, drop empty boxes, paste and threshold the masks
   (``lazydet.modeling.postprocessing.detector_postprocess``): the eager model's own code.

Loading the ``.pt2`` graph itself needs only ``import lazydet.ops`` (the operators'
registration); this module also imports lazydet's structures and modeling for step 3.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import lazydet.ops  # noqa: F401  (registers torch.ops.lazydet.*, which the graphs call)
from lazydet.deploy.metadata import EXTRA_FILE, METADATA_KEY, read_sidecar
from lazydet.structures import Boxes, Instances

__all__ = ["ExportedPredictor", "load_exported", "postprocess"]


def load_exported(path: str | os.PathLike) -> tuple[Any, dict[str, Any], str]:
    """``(runner, metadata, format)``: ``runner(image [3, H, W] float) -> list of tensors``.

    Raises:
        FileNotFoundError: no such file. ValueError: not a ``.pt2``/``.onnx`` or no metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported={str(path)!r}: no such file.")
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        extra = {EXTRA_FILE: ""}
        program = torch.export.load(str(path), extra_files=extra)
        text = extra.get(EXTRA_FILE) or None
        metadata = json.loads(text) if text else read_sidecar(path)
        module = program.module()

        def run(image: Tensor) -> list[Tensor]:
            with torch.no_grad():
                return list(module(image))

        kind = "torch_export"
    elif suffix == ".onnx":
        try:
            import onnxruntime
        except ImportError:
            raise ValueError(
                f"exported={str(path)!r} is an ONNX model and onnxruntime is not installed: "
                "pip install 'lazydet[export]'."
            ) from None
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
        metadata = json.loads(props[METADATA_KEY]) if METADATA_KEY in props else read_sidecar(path)
        options = onnxruntime.SessionOptions()
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        input_name = session.get_inputs()[0].name

        def run(image: Tensor) -> list[Tensor]:
            arrays = session.run(None, {input_name: image.numpy().astype(np.float32)})
            return [torch.from_numpy(np.asarray(a)) for a in arrays]

        kind = "onnx"
    else:
        raise ValueError(f"exported={str(path)!r}: give a .pt2 (torch.export) or .onnx model.")
    if metadata is None:
        raise ValueError(
            f"exported={str(path)!r} carries no lazydet metadata and has no sidecar "
            f"{path.with_suffix('.json').name}; export it with python -m lazydet.export."
        )
    return run, metadata, kind


def postprocess(
    outputs: Sequence[Tensor],
    metadata: dict[str, Any],
    *,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
) -> Instances:
    """The graph's outputs (coordinates of the resized image, ``input_size``) -> ``Instances``
    at ``original_size``."""
    from lazydet.modeling.postprocessing import detector_postprocess

    names = metadata["outputs"]
    if len(outputs) != len(names):
        raise ValueError(
            f"the exported graph gave {len(outputs)} outputs; its metadata names {names}."
        )
    found = dict(zip(names, outputs))
    fields = {
        "pred_boxes": Boxes(found["boxes"].float()),
        "scores": found["scores"].float(),
        "pred_classes": found["labels"].long(),
    }
    if "mask_probs" in found:
        fields["pred_masks"] = found["mask_probs"].float()
    if "keypoint_heatmaps" in found:
        from lazydet.modeling.roi_heads.keypoint_head import heatmaps_to_keypoints

        fields["pred_keypoints"] = heatmaps_to_keypoints(
            found["keypoint_heatmaps"].float(),
            fields["pred_boxes"].tensor,
            score_type=metadata.get("keypoint_score_type", "logit"),
        )
    instances = Instances(input_size, **fields)
    return detector_postprocess(
        instances,
        original_size[0],
        original_size[1],
        mask_threshold=metadata.get("mask_threshold", 0.5),
        mask_paste=metadata.get("mask_paste", "torchvision"),
    )


class ExportedPredictor:
    """``Predictor``'s interface over an exported model (module doc).

    Args:
        path: the ``.pt2`` or ``.onnx`` file written by ``python -m lazydet.export``.
        batch_size: images per call of ``predict`` (the graph itself takes one image).
    """

    def __init__(self, *, path: str | os.PathLike, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"ExportedPredictor: batch_size={batch_size}; it must be at least 1.")
        self.path = Path(path)
        self.run_graph, self.metadata, self.format = load_exported(path)
        self.batch_size = batch_size
        self.class_names = self.metadata.get("class_names")
        self.keypoint_names = self.metadata.get("keypoint_names")
        skeleton = self.metadata.get("keypoint_skeleton")
        self.keypoint_skeleton = [tuple(p) for p in skeleton] if skeleton else None
        self.device = torch.device("cpu")
        resize = self.metadata.get("resize")
        self.augmentations = None
        if resize:
            from torchvision.transforms import v2

            # The recipe's test resize (v2.Resize: shortest edge, long edge capped), rebuilt.
            self.augmentations = v2.Resize(
                resize["size"], max_size=resize["max_size"], antialias=True
            )

    def _check_size(self, height: int, width: int, what: str) -> None:
        """The graph's size guards, as one clear error before it runs."""
        if not self.metadata["dynamic"]:
            if [height, width] != self.metadata["export_size"]:
                raise ValueError(
                    f"{what}: {self.path.name} was exported at the fixed size "
                    f"{self.metadata['export_size']} and this image becomes {height}x{width}; "
                    "re-export with dynamic=true."
                )
            return
        low, high = self.metadata["min_size"], self.metadata["max_size"]
        if not (low <= height <= high and low <= width <= high):
            raise ValueError(
                f"{what}: after resizing it is {height}x{width}, outside the "
                f"{low}-{high} pixels {self.path.name} was exported for; re-export with "
                "min_size=/max_size= covering it."
            )

    def predict_one(self, image: Tensor, *, what: str = "image") -> Instances:
        """``image`` ``[3, H, W]`` uint8 RGB -> ``Instances`` at ``H x W``."""
        original = (int(image.shape[1]), int(image.shape[2]))
        if self.augmentations is not None:
            from torchvision import tv_tensors

            image = self.augmentations(tv_tensors.Image(image)).as_subclass(Tensor)
        resized = (int(image.shape[1]), int(image.shape[2]))
        image = image.float()  # RGB: a BGR model flips inside the graph
        self._check_size(resized[0], resized[1], what)
        outputs = self.run_graph(image)
        return postprocess(outputs, self.metadata, input_size=resized, original_size=original)

    def predict(self, images: Sequence[Any]) -> list[Instances]:
        from lazydet.evaluation.predictor import to_image_tensor

        return [
            self.predict_one(to_image_tensor(img, what=f"image {i}"), what=f"image {i}")
            for i, img in enumerate(images)
        ]

    def __call__(self, image: Any) -> Any:
        """One image -> ``Instances``; a list (or a ``[B, 3, H, W]`` tensor) -> a list."""
        if isinstance(image, (list, tuple)) or (isinstance(image, Tensor) and image.dim() == 4):
            return self.predict(list(image))
        return self.predict([image])[0]
