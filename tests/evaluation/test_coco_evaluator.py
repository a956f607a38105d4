"""COCOEvaluator and inference_on_dataset: Instances -> COCO results -> the same AP as
``coco_evaluate`` on those results, in one process and gathered from 2 gloo processes."""

from __future__ import annotations

import json
import logging
import os
import uuid

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools import mask as mask_utils
from synthetic_coco import synthetic_coco
from torch import nn

from lazydet.data import MetadataCatalog, register_coco
from lazydet.evaluation import (
    COCOEvaluator,
    DatasetEvaluator,
    coco_evaluate,
    inference_on_dataset,
    instances_to_coco_json,
)
from lazydet.structures import Boxes, Instances

NUM_IMAGES = 10
SIGMAS = [0.05 + 0.004 * i for i in range(17)]


def _dataset(tmp_path):
    gt, detections = synthetic_coco(NUM_IMAGES, num_categories=4, detections_per_image=25, seed=1)
    # Every category carries the person keypoints, so keypoint AP covers all detections.
    for cat in gt["categories"]:
        cat["keypoints"] = gt["categories"][0]["keypoints"]
    for ann in gt["annotations"]:
        ann.setdefault("keypoints", [0] * 51)
        ann.setdefault("num_keypoints", 0)
    for det in detections:
        det.setdefault("keypoints", [1.0, 1.0, 1.0] * 17)
    json_file = tmp_path / "gt.json"
    json_file.write_text(json.dumps(gt))
    return gt, detections, json_file


def _register(json_file, name):
    if name not in MetadataCatalog.names():
        register_coco(name, json_file, json_file.parent, {"keypoint_oks_sigmas": SIGMAS})
    return name


class ReplayModel(nn.Module):
    """A stand-in detector: answers each image with the given COCO detections as Instances, in
    lazydet's conventions (XYXY boxes, contiguous classes, bool masks, keypoints + 0.5)."""

    def __init__(self, detections, images, dataset_to_contiguous):
        super().__init__()
        self.by_image = {}
        sizes = {img["id"]: (img["height"], img["width"]) for img in images}
        for image_id, (h, w) in sizes.items():
            dets = [d for d in detections if d["image_id"] == image_id]
            boxes = torch.tensor([d["bbox"] for d in dets], dtype=torch.float64).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            rles = [
                dict(d["segmentation"], counts=d["segmentation"]["counts"].encode()) for d in dets
            ]
            masks = mask_utils.decode(rles) if rles else np.zeros((h, w, 0), np.uint8)
            kp = torch.tensor([d["keypoints"] for d in dets], dtype=torch.float64).reshape(
                -1, 17, 3
            )
            kp[:, :, :2] += 0.5
            self.by_image[image_id] = Instances(
                (h, w),
                pred_boxes=Boxes(boxes),
                scores=torch.tensor([d["score"] for d in dets], dtype=torch.float64),
                pred_classes=torch.tensor(
                    [dataset_to_contiguous[d["category_id"]] for d in dets], dtype=torch.int64
                ),
                pred_masks=torch.from_numpy(masks).permute(2, 0, 1).bool(),
                pred_keypoints=kp,
            )
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, inputs):
        assert not self.training
        return [{"instances": self.by_image[x["image_id"]]} for x in inputs]


def _batches(images, rank=0, world_size=1, batch_size=3):
    # The contiguous shard InferenceSampler gives this rank.
    base, extra = divmod(len(images), world_size)
    start = rank * base + min(rank, extra)
    shard = images[start : start + base + (1 if rank < extra else 0)]
    items = [{"image_id": i["id"], "height": i["height"], "width": i["width"]} for i in shard]
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


def _evaluate(gt, detections, json_file, name, rank=0, world_size=1, output_dir=None):
    _register(json_file, name)
    mapping = {c["id"]: i for i, c in enumerate(gt["categories"])}
    model = ReplayModel(detections, gt["images"], mapping).train()
    evaluator = COCOEvaluator(dataset_name=name, output_dir=output_dir, engine="pycocotools")
    assert isinstance(evaluator, DatasetEvaluator)
    results = inference_on_dataset(model, _batches(gt["images"], rank, world_size), evaluator)
    assert model.training  # mode restored
    return results


def test_evaluator_scores_what_it_writes(tmp_path, caplog):
    gt, detections, json_file = _dataset(tmp_path)
    name = f"eval_test_{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.INFO, logger="lazydet.evaluation"):
        results = _evaluate(gt, detections, json_file, name, output_dir=tmp_path / "out")
    assert "images/s" in caplog.text
    assert set(results) == {"bbox", "segm", "keypoints"}
    written = json.loads((tmp_path / "out" / "coco_instances_results.json").read_text())
    assert len(written) == len(detections)
    # The conversion round-trips: same masks, boxes and keypoints (float rounding only).
    for a, b in zip(written, detections):
        assert a["segmentation"] == b["segmentation"] and a["category_id"] == b["category_id"]
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=1e-9)
        np.testing.assert_allclose(a["keypoints"], b["keypoints"], atol=1e-9)
    for task in ("bbox", "segm"):
        stats = coco_evaluate(gt, written, task, verbose=False).stats
        assert results[task]["AP"] == pytest.approx(100 * stats[0], abs=1e-10)
        assert results[task]["AR100"] == pytest.approx(100 * stats[8], abs=1e-10)
        original = coco_evaluate(gt, detections, task, verbose=False).stats
        np.testing.assert_allclose(stats, original, atol=1e-9)
    stats = coco_evaluate(gt, written, "keypoints", kpt_oks_sigmas=SIGMAS, verbose=False).stats
    assert results["keypoints"]["AP"] == pytest.approx(100 * stats[0], abs=1e-10)
    assert results["bbox"]["AP"] > 0


def test_keypoints_lose_the_loaders_half_pixel():
    instances = Instances(
        (10, 10),
        pred_boxes=Boxes(torch.tensor([[1.0, 2.0, 5.0, 7.0]])),
        scores=torch.tensor([0.5]),
        pred_classes=torch.tensor([0]),
        pred_keypoints=torch.tensor([[[3.5, 4.5, 0.9]]]),
    )
    (result,) = instances_to_coco_json(instances, 7, contiguous_to_dataset_id={0: 3})
    assert result["bbox"] == [1.0, 2.0, 4.0, 5.0] and result["category_id"] == 3
    assert result["keypoints"][:2] == [3.0, 4.0]
    with pytest.raises(ValueError, match="predicted class 0"):
        instances_to_coco_json(instances, 7, contiguous_to_dataset_id={1: 3})
    assert instances_to_coco_json(instances[:0], 7) == []


def _ddp_worker(rank, world_size, port, tmp_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        gt, detections, json_file = _dataset(tmp_path)
        results = _evaluate(gt, detections, json_file, "ddp_eval", rank, world_size)
        if rank == 0:
            (tmp_path / "ddp.json").write_text(json.dumps(results))
        else:
            assert results == {}
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_give_the_one_process_numbers(tmp_path):
    gt, detections, json_file = _dataset(tmp_path)
    single = _evaluate(gt, detections, json_file, f"single_{uuid.uuid4().hex[:8]}")
    port = 29500 + (os.getpid() % 2000)
    mp.spawn(_ddp_worker, args=(2, port, tmp_path), nprocs=2, join=True)
    gathered = json.loads((tmp_path / "ddp.json").read_text())
    for task in single:
        for key, value in single[task].items():
            other = gathered[task][key]
            assert other == value or (np.isnan(other) and np.isnan(value)), (task, key)
