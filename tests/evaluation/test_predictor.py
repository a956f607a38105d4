"""The Predictor gives torchvision's detections for torchvision's model (weights=None, seeded)
loaded into the ``torchvision_mask_rcnn_fpn`` preset, from every input kind and from a lazydet
checkpoint alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import freeze_batchnorms
from PIL import Image
from torch import nn
from torchvision.models import detection

from lazydet.checkpoint import build_metadata, load_weights, save_checkpoint
from lazydet.config import compose
from lazydet.evaluation.predictor import Predictor, to_image_tensor

SIZE = (128, 192)  # at the shapes test resize (short edge 128, long <= 256): resize is identity
CLASSES = ["circle", "square", "triangle"]


def _torchvision_model(image: torch.Tensor) -> nn.Module:
    """Mask R-CNN with random weights that detects plenty (calibrated norms, biased logits),
    normalising 0-255 images with its statistics x 255 (as lazydet does)."""
    torch.manual_seed(0)
    tv = detection.maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=len(CLASSES) + 1,
        min_size=min(SIZE),
        max_size=max(SIZE),
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=150,
        box_detections_per_img=40,
    )
    tv.transform.image_mean = [v * 255 for v in tv.transform.image_mean]
    tv.transform.image_std = [v * 255 for v in tv.transform.image_std]
    with torch.no_grad():
        for norm in (m for m in tv.backbone.modules() if isinstance(m, nn.BatchNorm2d)):
            norm.reset_running_stats()
            norm.momentum = None
            nn.init.uniform_(norm.weight, 0.5, 1.5)
            nn.init.normal_(norm.bias, 0.0, 0.1)
        tv.backbone.train()
        tv.backbone(tv.transform.normalize(image)[None])
        nn.init.normal_(tv.rpn.head.cls_logits.bias, 0.0, 1.0)
        box = tv.roi_heads.box_predictor
        nn.init.normal_(box.cls_score.weight, 0.0, 0.05)
        nn.init.normal_(box.cls_score.bias, 0.0, 1.0)
        box.cls_score.bias[0] -= 2.0
        nn.init.normal_(box.bbox_pred.weight, 0.0, 0.01)
    freeze_batchnorms(tv)
    return tv.eval()


@pytest.fixture(scope="module")
def setup():
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, SIZE[0] // 16, SIZE[1] // 16, generator=generator)
    image = (nn.functional.interpolate(coarse, size=SIZE, mode="bilinear")[0] * 255).round()
    image = image.to(torch.uint8)
    tv = _torchvision_model(image.float())
    cfg = compose(
        "torchvision_mask_rcnn_fpn",
        [
            "dataset=shapes",
            "model.roi_heads.num_classes=3",
            "model.proposal_generator.pre_nms_topk_test=300",
            "model.proposal_generator.post_nms_topk_test=150",
            "+model.roi_heads.box_predictor.test_topk_per_image=40",
        ],
    )
    with torch.no_grad():
        expected = tv([image.float()])[0]
    return image, tv, cfg, expected


def _check(instances, expected):
    assert len(instances) == len(expected["boxes"]) >= 5
    tol = {"rtol": 1e-4, "atol": 1e-3}
    torch.testing.assert_close(instances.pred_boxes.tensor, expected["boxes"], **tol)
    torch.testing.assert_close(instances.scores, expected["scores"], **tol)
    torch.testing.assert_close(instances.pred_classes + 1, expected["labels"])
    # Masks: torchvision's probabilities thresholded at 0.5; pixels at ~0.5 may fall either way.
    differing = (instances.pred_masks != (expected["masks"][:, 0] >= 0.5)).float().mean()
    assert differing < 1e-3


@pytest.fixture(scope="module")
def predictor(setup):
    _, tv, cfg, _ = setup
    predictor = Predictor.from_config(cfg, weights=tv.state_dict(), device="cpu", batch_size=2)
    report = load_weights(predictor.model, tv.state_dict())
    assert report.naming == "torchvision"
    return predictor


def test_predictor_gives_torchvision_detections(setup, predictor, tmp_path):
    image, _, _, expected = setup
    assert predictor.class_names == CLASSES  # from the shapes metadata
    array = image.permute(1, 2, 0).numpy()
    path = tmp_path / "image.png"
    Image.fromarray(array).save(path)
    for same in (array, Image.fromarray(array), path, image.float()):
        assert torch.equal(to_image_tensor(same), image)
    outputs = predictor([image, path])  # one batch of two
    for instances in outputs:
        assert instances.image_size == SIZE
        _check(instances, expected)


def test_predictor_from_a_lazydet_checkpoint_alone(setup, predictor, tmp_path):
    image, _, cfg, expected = setup
    checkpoint = tmp_path / "model.pth"
    metadata = build_metadata(class_names=["a", "b", "c"], config=cfg)
    save_checkpoint(checkpoint, {"model": predictor.model.state_dict(), "metadata": metadata})
    from_file = Predictor.from_checkpoint(checkpoint, device="cpu")
    assert from_file.class_names == ["a", "b", "c"]  # the checkpoint's, not the dataset's
    _check(from_file(image), expected)


def test_predictor_reports_at_the_original_size(setup, predictor):
    image = setup[0]
    big = nn.functional.interpolate(image[None].float(), scale_factor=2.0, mode="bilinear")[0]
    instances = predictor(big.round().to(torch.uint8))
    assert instances.image_size == (2 * SIZE[0], 2 * SIZE[1])
    assert instances.pred_masks.shape[-2:] == (2 * SIZE[0], 2 * SIZE[1])
    assert len(instances) > 0


def test_bad_images_get_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        to_image_tensor(tmp_path)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        to_image_tensor(np.zeros((3, 10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        to_image_tensor(torch.zeros(10, 10, 3))
    with pytest.raises(ValueError, match="NaN"):
        to_image_tensor(torch.full((3, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="multiply 0-1 images by 255"):
        to_image_tensor(torch.full((3, 4, 4), -1.0))
    with pytest.raises(ValueError, match="give a path"):
        to_image_tensor(42)
    truncated = tmp_path / "bad.jpg"
    truncated.write_bytes(b"\xff\xd8\xff\xe0")
    with pytest.raises((ValueError, OSError), match="bad.jpg"):
        to_image_tensor(truncated)
    assert to_image_tensor(np.full((4, 5), 7, np.uint8)).shape == (3, 4, 5)


def test_predict_command_writes_pictures_and_results(setup, predictor, tmp_path):
    from lazydet.predict import UsageError, run

    image, _, cfg, expected = setup
    checkpoint = tmp_path / "model.pth"
    metadata = build_metadata(class_names=CLASSES, config=cfg)
    save_checkpoint(checkpoint, {"model": predictor.model.state_dict(), "metadata": metadata})
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(inputs / "a.png")
    (inputs / "broken.jpg").write_bytes(b"not an image")  # reported, and the others still done
    out = tmp_path / "out"
    code = run(
        [
            *(f"checkpoint={checkpoint}", f"input={inputs}", f"output={out}"),
            *(f"results={out}/r.json", "score_threshold=0.0", "device=cpu"),
        ]
    )
    assert code == 1
    picture = Image.open(out / "a.png")
    assert min(picture.size) >= 256  # small images are upscaled for legible labels
    results = json.loads((out / "r.json").read_text())
    assert len(results) == len(expected["boxes"])
    assert {r["image_id"] for r in results} == {1} and results[0]["file_name"].endswith("a.png")
    torch.testing.assert_close(
        torch.tensor([r["score"] for r in results], dtype=torch.float32),
        expected["scores"],
        rtol=1e-4,
        atol=1e-3,
    )
    with pytest.raises(UsageError, match="output=DIR"):
        run([f"checkpoint={checkpoint}", f"input={inputs}"])
    with pytest.raises(UsageError, match="does not exist"):
        run([f"checkpoint={checkpoint}", f"input={tmp_path}/nope", f"output={out}"])
