"""The bundled shapes data feeds the zoo's models: a few optimisation steps through the loaders.

This is the seam between lazydet.data and lazydet.modeling, exercised the way the trainer will:
compose an experiment with dataset=shapes, instantiate model, loader and optimizer, step.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from lazydet.config import compose, instantiate


@pytest.fixture(scope="module")
def shapes_cache(tmp_path_factory):
    # The shapes dataset is generated on first use into LAZYDET_CACHE (a few seconds): once here.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAZYDET_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.delenv("LAZYDET_CONFIG_PATH", raising=False)
        yield


# Smaller heads and fewer ROIs: this checks the seam, not the recipe (CPU-friendly).
SMALL_ROI_HEADS = [
    "model.proposal_generator.post_nms_topk_train=128",
    "model.roi_heads.batch_size_per_image=64",
    "model.roi_heads.box_head.fc_dims=[128,128]",
]
RCNN_LOSSES = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"}


@pytest.mark.parametrize(
    ("experiment", "small_heads", "expected_losses"),
    [
        ("retinanet_fpn", [], {"loss_cls", "loss_box_reg"}),
        (
            "mask_rcnn_fpn",
            [*SMALL_ROI_HEADS, "model.roi_heads.mask_head.conv_dims=[64,64]"],
            {*RCNN_LOSSES, "loss_mask"},
        ),
        (
            "keypoint_rcnn_fpn",
            [*SMALL_ROI_HEADS, "model.roi_heads.keypoint_head.conv_dims=[64,64]"],
            {*RCNN_LOSSES, "loss_keypoint"},
        ),
    ],
)
def test_train_loader_feeds_the_model_for_a_few_steps(
    shapes_cache, experiment, small_heads, expected_losses
):
    overrides = [
        "dataset=shapes",
        "model.backbone=resnet18",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "optimizer=adamw",
        # AdamW's first steps move every weight by about lr: at 1e-4 a randomly initialised
        # RetinaNet's class logits can jump for a step, which says nothing about the seam.
        "optimizer.lr=5e-5",
        *small_heads,
    ]
    cfg = compose(experiment, overrides)
    torch.manual_seed(0)
    built = instantiate(
        {"model": cfg.model, "dataloader": cfg.dataloader, "optimizer": cfg.optimizer}, root=None
    )
    model, optimizer = built["model"], built["optimizer"]
    model.train()
    batch = next(iter(built["dataloader"]["train"]))
    assert len(batch) == 2 and all("instances" in item for item in batch)
    if experiment == "keypoint_rcnn_fpn":
        assert batch[0]["instances"].gt_keypoints.tensor.shape[1:] == (4, 3)

    normalizer = getattr(model, "foreground_ema", None)
    initial_normalizer = None if normalizer is None else normalizer.clone()

    def total_loss() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if normalizer is not None:
            # RetinaNet divides its losses by a moving average of the foreground count, which
            # moves with every step: compare losses under the same normaliser.
            normalizer.copy_(initial_normalizer)
        losses = model(batch)
        assert set(losses) == expected_losses
        assert all(torch.isfinite(v) for v in losses.values()), losses
        return sum(losses.values()), losses

    # Overfit one batch: the summed loss must fall.
    first, _ = total_loss()
    for _ in range(6):
        loss, _ = total_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        last, _ = total_loss()
    assert last.item() < first.item()
    # And the infinite loader keeps going with the same sampler across steps.
    more = list(itertools.islice(iter(built["dataloader"]["train"]), 2))
    assert len(more) == 2


def test_coco2017_given_the_files_feeds_keypoint_rcnn(shared_data, tmp_path, monkeypatch):
    """dataset=coco2017_keypoints with real COCO files laid out as lazydet expects them."""
    source = shared_data / "coco_person_val2017"
    root = tmp_path / "datasets"
    (root / "coco" / "annotations").mkdir(parents=True)
    (root / "coco" / "annotations" / "person_keypoints_val2017.json").symlink_to(
        source / "test_coco.json"
    )
    (root / "coco" / "val2017").symlink_to(source, target_is_directory=True)
    monkeypatch.setenv("LAZYDET_DATASETS", str(root))
    monkeypatch.delenv("LAZYDET_CONFIG_PATH", raising=False)
    cfg = compose(
        "keypoint_rcnn_fpn",
        [
            "dataset=coco2017_keypoints",
            "dataset.train=keypoints_coco_2017_val",  # the four photos we have
            "dataset.train_short_edge=[192]",
            "dataset.max_size=320",
            "model.backbone=resnet18",
            "dataloader.train.total_batch_size=2",
            "dataloader.train.num_workers=0",
            "model.proposal_generator.post_nms_topk_train=128",
            "model.roi_heads.batch_size_per_image=64",
            "model.roi_heads.box_head.fc_dims=[128,128]",
            "model.roi_heads.keypoint_head.conv_dims=[64,64]",
        ],
    )
    torch.manual_seed(0)
    built = instantiate(
        {"model": cfg.model, "dataloader": cfg.dataloader, "optimizer": cfg.optimizer}
    )
    batch = next(iter(built["dataloader"]["train"]))
    assert all(item["instances"].gt_keypoints.tensor.shape[1:] == (17, 3) for item in batch)
    model = built["model"].train()
    losses = model(batch)
    assert {"loss_keypoint", "loss_cls", "loss_rpn_cls"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    built["optimizer"].step()
