"""``python -m lazydet.evaluate``: a checkpoint's AP on the test split equals ``coco_evaluate``
on the detections it wrote."""

from __future__ import annotations

import json

import pytest
import torch

from lazydet.checkpoint import save_checkpoint
from lazydet.config import ConfigError, compose, instantiate
from lazydet.data import MetadataCatalog
from lazydet.data.datasets.shapes import register_shapes
from lazydet.evaluate import run
from lazydet.evaluation import coco_evaluate


def test_evaluate_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYDET_CACHE", str(tmp_path / "cache"))
    name = register_shapes("shapes_eval_cli", num_images=3, seed=5)
    experiment = ["conf=mask_rcnn_fpn", "dataset=shapes", f"dataset.test={name}"]
    torch.manual_seed(0)
    cfg = compose("mask_rcnn_fpn", experiment[1:])
    checkpoint = tmp_path / "model.pth"
    save_checkpoint(checkpoint, {"model": instantiate(cfg.model).state_dict()})
    out = tmp_path / "eval"
    results = run([*experiment, f"train.init_checkpoint={checkpoint}", f"output={out}"])
    assert set(results) == {"bbox", "segm"}
    written = json.loads((out / "coco_instances_results.json").read_text())
    assert len(written) > 0  # a random head scores every class near 1/4: many detections
    gt = MetadataCatalog.get(name).json_file
    for task in ("bbox", "segm"):
        stats = coco_evaluate(gt, written, task, verbose=False).stats
        assert results[task]["AR100"] == pytest.approx(100 * stats[8], abs=1e-10)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bbox"]["AR100"] == pytest.approx(results["bbox"]["AR100"])
    with pytest.raises(ConfigError, match="train.init_checkpoint"):
        run(experiment)
