"""``COCOEvaluator``: a model's ``Instances`` -> COCO results -> ``coco_evaluate`` (bbox, segm,
keypoints), gathered across processes.

Conversions (lazydet -> COCO results json):

- ``pred_boxes`` XYXY absolute pixels -> ``bbox`` ``[x, y, w, h]``.
- ``pred_classes`` (contiguous ids 0..C-1) -> the dataset's ``category_id`` through the metadata's
  ``thing_contiguous_id_to_dataset_id``.
- ``pred_masks`` ``[D, H, W]`` bool (image size) -> compressed RLE, ``counts`` as text.
- ``pred_keypoints`` ``[D, K, 3]`` ``(x, y, score)`` continuous coordinates -> COCO pixel indices:
  the loader added 0.5 to labelled keypoints (``docs/data.md``), so 0.5 is subtracted here. OKS
  sigmas come from the metadata's ``keypoint_oks_sigmas``.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from lazydet.evaluation.coco_eval import coco_evaluate, write_results_json
from lazydet.evaluation.coco_input import read_json
from lazydet.utils import comm

logger = logging.getLogger("lazydet.evaluation")

__all__ = ["COCOEvaluator", "instances_to_coco_json"]

TASKS = ("bbox", "segm", "keypoints")


def instances_to_coco_json(
    instances: Any, image_id: Any, *, contiguous_to_dataset_id: dict[int, int] | None = None
) -> list[dict]:
    """COCO result dicts for one image's ``Instances`` (see the module doc for conversions).

    Args:
        instances: ``Instances`` with ``pred_boxes`` (``Boxes``, XYXY absolute pixels), ``scores``
            ``[D]``, ``pred_classes`` ``[D]``, and optionally ``pred_masks`` ``[D, H, W]`` and
            ``pred_keypoints`` ``[D, K, 3]``.
        image_id: the COCO image id.
        contiguous_to_dataset_id: class id -> COCO category id (default: the class id itself).
    """
    num = len(instances)
    if num == 0:
        return []
    instances = instances.to("cpu")
    if not (
        torch.isfinite(instances.pred_boxes.tensor).all() and torch.isfinite(instances.scores).all()
    ):
        raise ValueError(
            f"The model returned a NaN or infinite box or score on image_id {image_id!r}; COCO "
            "results cannot hold it (check the model's numerics: learning rate, AMP)."
        )
    boxes = instances.pred_boxes.tensor.double().numpy().copy()
    boxes[:, 2:] -= boxes[:, :2]  # XYXY -> XYWH
    scores = instances.scores.double().tolist()
    classes = instances.pred_classes.tolist()
    if contiguous_to_dataset_id is not None:
        try:
            classes = [contiguous_to_dataset_id[c] for c in classes]
        except KeyError as e:
            raise ValueError(
                f"The model predicted class {e.args[0]}, which the dataset's metadata does not map "
                f"to a category id (it maps {sorted(contiguous_to_dataset_id)}): the model has "
                "more classes than the dataset."
            ) from None
    rles = None
    if instances.has("pred_masks"):
        masks = instances.pred_masks
        masks = masks.tensor if hasattr(masks, "tensor") else masks
        # pycocotools wants Fortran-ordered uint8 [H, W, D].
        array = np.asfortranarray(masks.to(torch.uint8).permute(1, 2, 0).numpy())
        rles = mask_utils.encode(array)
    keypoints = None
    if instances.has("pred_keypoints"):
        kp = instances.pred_keypoints
        kp = (kp.tensor if hasattr(kp, "tensor") else kp).double().clone()
        kp[:, :, :2] -= 0.5  # continuous coordinates -> COCO pixel indices
        keypoints = kp.flatten(1).tolist()
    results = []
    for i in range(num):
        result = {
            "image_id": image_id,
            "category_id": classes[i],
            "bbox": boxes[i].tolist(),
            "score": scores[i],
        }
        if rles is not None:
            result["segmentation"] = {
                "size": [int(v) for v in rles[i]["size"]],
                "counts": rles[i]["counts"].decode("ascii"),
            }
        if keypoints is not None:
            result["keypoints"] = keypoints[i]
        results.append(result)
    return results


class COCOEvaluator:
    """COCO AP of a model's predictions on a registered COCO-format dataset.

    Args:
        dataset_name: a name in ``DatasetCatalog`` / ``MetadataCatalog`` (its metadata gives the
            ground truth ``json_file``, the class-id mapping and ``keypoint_oks_sigmas``).
        tasks: which of "bbox", "segm", "keypoints" to score; default: what the outputs carry
            (bbox always, segm with ``pred_masks``, keypoints with ``pred_keypoints``).
        output_dir: when set, rank 0 writes ``coco_instances_results.json`` there.
        engine: ``coco_evaluate``'s engine ("auto", "vectorized", "hotcoco", "pycocotools": same
            numbers).
        restrict_to_processed: score only the images that were processed (pycocotools'
            ``imgIds``), so evaluating the first N images of a split is meaningful.
    """

    def __init__(
        self,
        *,
        dataset_name: str,
        tasks: Sequence[str] | None = None,
        output_dir: str | os.PathLike | None = None,
        engine: str = "auto",
        restrict_to_processed: bool = True,
    ) -> None:
        from lazydet.data import MetadataCatalog

        if tasks is not None:
            bad = [t for t in tasks if t not in TASKS]
            if bad:
                raise ValueError(f"COCOEvaluator: tasks {bad} are not among {TASKS}.")
        self.dataset_name = dataset_name
        self.metadata = MetadataCatalog.get(dataset_name)
        self.tasks = tuple(tasks) if tasks is not None else None
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.engine = engine
        self.restrict_to_processed = restrict_to_processed
        self._mapping: dict[int, int] | None = None
        self.reset()

    def reset(self) -> None:
        self._predictions: list[dict] = []
        self._image_ids: list[Any] = []
        self._seen_tasks: set[str] = set()

    def _class_mapping(self) -> dict[int, int] | None:
        if self._mapping is None:
            mapping = self.metadata.get("thing_contiguous_id_to_dataset_id")
            if mapping is None:
                from lazydet.data import DatasetCatalog

                DatasetCatalog.get(self.dataset_name)  # loading the json fills the mapping in
                mapping = self.metadata.get("thing_contiguous_id_to_dataset_id")
            self._mapping = {int(k): int(v) for k, v in (mapping or {}).items()} or None
        return self._mapping

    def process(self, inputs: Sequence[dict], outputs: Sequence[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            if "image_id" not in inp:
                raise ValueError(
                    f"COCOEvaluator: an input has no 'image_id' (keys: {sorted(inp)}); use the "
                    "dataset's test loader (DatasetMapper keeps image_id)."
                )
            instances = out["instances"]
            self._image_ids.append(inp["image_id"])
            self._seen_tasks.add("bbox")
            if instances.has("pred_masks"):
                self._seen_tasks.add("segm")
            if instances.has("pred_keypoints"):
                self._seen_tasks.add("keypoints")
            self._predictions += instances_to_coco_json(
                instances, inp["image_id"], contiguous_to_dataset_id=self._class_mapping()
            )

    def evaluate(self) -> dict[str, dict[str, float]]:
        gathered = comm.gather_object((self._predictions, self._image_ids, self._seen_tasks))
        if not comm.is_main_process():
            return {}
        predictions = list(itertools.chain.from_iterable(g[0] for g in gathered))
        image_ids = list(itertools.chain.from_iterable(g[1] for g in gathered))
        seen = set().union(*(g[2] for g in gathered))
        if not image_ids:
            logger.warning("COCOEvaluator(%s): no image was processed.", self.dataset_name)
            return {}
        json_file = self.metadata.get("json_file")
        if json_file is None:
            raise ValueError(
                f"COCOEvaluator: dataset {self.dataset_name!r} has no 'json_file' in its metadata; "
                "register it with lazydet.data.register_coco (or set metadata json_file)."
            )
        if self.output_dir is not None:
            write_results_json(predictions, self.output_dir / "coco_instances_results.json")
        gt = read_json(json_file, "Ground truth")  # orjson: the parse is most of the reading
        tasks = self.tasks or tuple(t for t in TASKS if t in seen)
        results: dict[str, dict[str, float]] = {}
        for task in tasks:
            kwargs: dict[str, Any] = {}
            gt_task = gt
            task_predictions = predictions
            if task == "keypoints":
                sigmas = self.metadata.get("keypoint_oks_sigmas")
                kwargs["kpt_oks_sigmas"] = sigmas
                # Keypoint AP is defined on the categories with keypoints (COCO: person).
                keypoint_cats = {c["id"] for c in gt["categories"] if c.get("keypoints")}
                gt_task = {
                    **gt,
                    "categories": [c for c in gt["categories"] if c["id"] in keypoint_cats],
                    "annotations": [
                        a for a in gt["annotations"] if a["category_id"] in keypoint_cats
                    ],
                }
                task_predictions = [
                    p for p in predictions if p["category_id"] in keypoint_cats and "keypoints" in p
                ]
            result = coco_evaluate(
                gt_task,
                task_predictions,
                task,
                engine=self.engine,
                img_ids=image_ids if self.restrict_to_processed else None,
                verbose=False,
                **kwargs,
            )
            logger.info("Evaluation of %s on %s:\n%s", task, self.dataset_name, result.summary)
            results[task] = result.metrics()
        return results
