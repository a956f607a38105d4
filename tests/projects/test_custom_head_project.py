"""projects/custom_head: a mask head defined only in the project, wired in by config, trained on
shapes, evaluated with COCOEvaluator / inference_on_dataset and predicted with the Predictor,
with no line of lazydet changed."""

from __future__ import annotations

import json

import pytest
import torch

from lazydet.checkpoint import CheckpointError
from lazydet.config import compose, instantiate, validate
from lazydet.data import MetadataCatalog
from lazydet.evaluation import COCOEvaluator, Predictor, coco_evaluate, inference_on_dataset
from lazydet.modeling.roi_heads import mask_rcnn_loss
from lazydet.structures import BitMasks, Boxes, Instances
from lazydet.train import run


def test_light_mask_head_contract(project):
    project("custom_head")
    from custom_head import LightMaskHead

    torch.manual_seed(0)
    head = LightMaskHead(in_channels=16, num_classes=3, hidden_dim=8)
    logits = head(torch.randn(5, 16, 14, 14))
    assert logits.shape == (5, 3, 28, 28)
    assert head(torch.zeros(0, 16, 14, 14)).shape == (0, 3, 28, 28)  # an image without ROIs
    # The loss is lazydet's mask loss on the head's logits (a hand-made image with 2 instances).
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 35:60, 20:50] = True
    proposals = Instances(
        (64, 64),
        proposal_boxes=Boxes(
            torch.tensor([[8.0, 8, 32, 32], [30, 30, 60, 62]] * 2 + [[9.0, 9, 31, 31]])
        ),
        gt_classes=torch.tensor([0, 2, 0, 2, 0]),
        gt_idxs=torch.tensor([0, 1, 0, 1, 0]),
    )
    losses = head.losses(logits, [proposals], [BitMasks(masks)])
    torch.testing.assert_close(
        losses["loss_mask"], mask_rcnn_loss(logits, [proposals], [BitMasks(masks)])
    )
    losses["loss_mask"].backward()
    assert head.reduce.weight.grad.abs().sum() > 0
    # Lighter than lazydet's head at the quickstart's sizes (64 channels in, conv_dims [64, 64]).
    from lazydet.modeling.roi_heads import MaskRCNNConvUpsampleHead

    light = sum(
        p.numel() for p in LightMaskHead(in_channels=64, num_classes=3, hidden_dim=32).parameters()
    )
    standard = sum(
        p.numel()
        for p in MaskRCNNConvUpsampleHead(
            in_channels=64, num_classes=3, conv_dims=[64, 64]
        ).parameters()
    )
    assert light * 10 < standard
    with pytest.raises(ValueError, match="hidden_dim=0"):
        LightMaskHead(in_channels=16, num_classes=3, hidden_dim=0)


def test_custom_head_trains_evaluates_and_predicts(project, tiny_overrides, tiny_shapes, tmp_path):
    project("custom_head")
    from custom_head import LightMaskHead

    cfg = compose("light_mask_rcnn_shapes", [*tiny_overrides, "train.eval_period=0"])
    validate(cfg)
    assert cfg.model.roi_heads.mask_head._target_ == "custom_head.LightMaskHead"

    report = run(cfg, tmp_path / "run")  # what python -m lazydet.train does in its job
    assert report["iteration"] == "2/2"
    # The config's evaluator ran at the end of training: its numbers are in the report.
    assert "segm/AP" in report and "bbox/AP" in report
    final = tmp_path / "run" / "model_final.pth"
    assert final.is_file()

    # Evaluate the trained weights with lazydet.evaluation; the AP is pycocotools' on the json.
    # Rebuilt from the saved config. Untrusted, the project's own class is outside the
    # allow-list and refused (the config is read as data); this run's own file is trusted.
    with pytest.raises(CheckpointError, match="custom_head.LightMaskHead.*trusted=True"):
        Predictor.from_checkpoint(final, device="cpu")
    predictor = Predictor.from_checkpoint(final, device="cpu", trusted=True)
    model = predictor.model
    assert isinstance(model.roi_heads.mask_head, LightMaskHead)
    _, test = tiny_shapes
    evaluator = COCOEvaluator(dataset_name=test, output_dir=tmp_path / "eval")
    loader = instantiate(cfg.dataloader.test)
    # An untrained model scores low, so lower the score bar to get detections to score.
    model.roi_heads.box_predictor.test_score_thresh = 0.0
    results = inference_on_dataset(model, loader, evaluator)
    assert set(results) == {"bbox", "segm"}
    written = json.loads((tmp_path / "eval" / "coco_instances_results.json").read_text())
    assert written and all(len(r["bbox"]) == 4 for r in written)
    gt = MetadataCatalog.get(test).json_file
    for task in ("bbox", "segm"):
        stats = coco_evaluate(gt, written, task, verbose=False).stats
        assert results[task]["AR100"] == pytest.approx(100 * stats[8], abs=1e-9)

    # The Predictor on a test image gives what the model gives on the loader's input.
    record = MetadataCatalog.get(test)
    batch = next(iter(loader))
    instances = predictor(batch[0]["image"])
    expected = model(batch)[0]["instances"].to("cpu")
    torch.testing.assert_close(instances.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert instances.pred_masks.shape[1:] == batch[0]["image"].shape[1:]
    assert predictor.class_names == list(record.thing_classes)
