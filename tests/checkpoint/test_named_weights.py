"""Weights by name (``torchvision:...``), misfit errors and from-scratch runs (issue #18, 1-3).

Nothing is downloaded: each test places a file made here (torchvision's model built with
``weights=None``, seeded) under the exact name torchvision's enum gives, in a temporary torch.hub
cache, and runs the real resolution and loading code.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from lazydet.checkpoint import (
    NAMED_WEIGHTS,
    WeightsMisfitError,
    WeightsUnavailableError,
    load_weights,
)
from lazydet.checkpoint.named_weights import named_weights
from lazydet.checkpoint.start import configure_start, load_start_weights
from lazydet.config import compose, instantiate


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty torch.hub cache; downloads are refused (tests never download)."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(previous)


# name -> (exact cached file name, torchvision builder, preset it loads into completely)
DETECTORS = {
    "torchvision:fasterrcnn_resnet50_fpn": (
        "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth",
        torchvision.models.detection.fasterrcnn_resnet50_fpn,
        "torchvision_faster_rcnn_fpn",
    ),
    "torchvision:maskrcnn_resnet50_fpn": (
        "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth",
        torchvision.models.detection.maskrcnn_resnet50_fpn,
        "torchvision_mask_rcnn_fpn",
    ),
    "torchvision:keypointrcnn_resnet50_fpn": (
        "keypointrcnn_resnet50_fpn_coco-fc266e95.pth",
        torchvision.models.detection.keypointrcnn_resnet50_fpn,
        "torchvision_keypoint_rcnn_fpn",
    ),
    "torchvision:retinanet_resnet50_fpn": (
        "retinanet_resnet50_fpn_coco-eeacb38b.pth",
        torchvision.models.detection.retinanet_resnet50_fpn,
        "torchvision_retinanet_fpn",
    ),
}
IMAGENET = {
    "torchvision:resnet18": ("resnet18-f37072fd.pth", torchvision.models.resnet18, "resnet18"),
    "torchvision:resnet50": ("resnet50-0676ba61.pth", torchvision.models.resnet50, "resnet50"),
    "torchvision:resnet101": ("resnet101-63fe2227.pth", torchvision.models.resnet101, "resnet101"),
}


def _place(cache: Path, file_name: str, builder) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    kwargs = {"weights": None}
    if builder.__module__.startswith("torchvision.models.detection"):
        kwargs["weights_backbone"] = None
    state = builder(**kwargs).state_dict()
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(state, cache / file_name)
    return state


def test_every_name_has_a_test_file_name():
    tested = {**DETECTORS, **IMAGENET}
    torchvision_names = {n for n in NAMED_WEIGHTS if n.startswith("torchvision:")}
    assert torchvision_names == set(tested)
    for name, (file_name, _, _) in tested.items():
        assert named_weights(name).cache_file.name == file_name


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_name_loads_completely_into_its_preset(name, hub_cache):
    file_name, builder, preset = DETECTORS[name]
    state = _place(hub_cache, file_name, builder)
    cfg = compose(preset, [f"train.init_checkpoint={name}"])
    model = instantiate(cfg.model)
    report = load_start_weights(model, cfg)
    assert report.part == "" and report.misfit == [] and report.unexpected == []
    assert str(hub_cache / file_name) in report.source
    # A tensor that is only renamed, not converted: the stem conv.
    stem = model.backbone.bottom_up.conv1.weight
    torch.testing.assert_close(stem, state["backbone.body.conv1.weight"])


@pytest.mark.parametrize("name", ["torchvision:resnet50"])
def test_imagenet_resnet50_fills_the_recipe_backbone_and_freezes_stem_and_res2(name, hub_cache):
    file_name, builder, _ = IMAGENET[name]
    state = _place(hub_cache, file_name, builder)
    cfg = compose("mask_rcnn_fpn", ["dataset=shapes"])  # the recipe's own default name
    assert cfg.train.init_checkpoint == name
    assert configure_start(cfg) == []
    model = instantiate(cfg.model)
    report = load_start_weights(model, cfg)
    assert report.part == "backbone.bottom_up." and report.misfit == []
    assert report.unexpected == ["fc.weight", "fc.bias"]
    bottom_up = model.backbone.bottom_up
    torch.testing.assert_close(bottom_up.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    assert not bottom_up.conv1.weight.requires_grad
    assert not any(p.requires_grad for p in bottom_up.layer1.parameters())
    assert all(p.requires_grad for p in bottom_up.layer2.parameters())
    assert isinstance(bottom_up.bn1, FrozenBatchNorm2d)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torchvision:resnet18", "torchvision:resnet101"])
def test_imagenet_resnets_fill_their_backbone_option(name, hub_cache):
    file_name, builder, option = IMAGENET[name]
    _place(hub_cache, file_name, builder)
    cfg = compose("faster_rcnn_fpn", [f"model.backbone={option}", f"train.init_checkpoint={name}"])
    report = load_start_weights(instantiate(cfg.model), cfg)
    assert report.part == "backbone.bottom_up." and report.misfit == []


def test_from_scratch_trains_every_backbone_layer():
    cfg = compose("mask_rcnn_fpn", ["dataset=shapes", "train.init_checkpoint=null"])
    assert configure_start(cfg) == ["model.backbone.bottom_up"]
    model = instantiate(cfg.model)
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())


def test_a_vit_backbone_on_a_resnet_recipe_starts_from_scratch_and_says_so(caplog):
    """conf=mask_rcnn_fpn names the ImageNet ResNet-50; model.backbone=vit_b has no ResNet and
    no ImageNet file lazydet converts: the run trains from scratch, with one log line."""
    cfg = compose("mask_rcnn_fpn", ["dataset=shapes", "model.backbone=vit_b"])
    assert cfg.train.init_checkpoint == "torchvision:resnet50"
    with caplog.at_level("WARNING", logger="lazydet.checkpoint.start"):
        configure_start(cfg)
    assert cfg.train.init_checkpoint is None
    assert "has no ResNet: training it from scratch" in caplog.text


def test_from_scratch_through_train_build():
    """The call site: the run path's build (lazydet.engine.run.build) applies the same rule."""
    from lazydet.engine.run import build

    cfg = compose("mask_rcnn_fpn", ["dataset=shapes", "train.init_checkpoint=null"])
    for key in ("dataloader", "schedule", "optimizer", "evaluator"):
        cfg.pop(key, None)
    built = build(cfg)
    assert built["init_checkpoint"] is None
    assert all(p.requires_grad for p in built["model"].backbone.parameters())


def test_offline_gives_one_message_with_file_url_and_folder(hub_cache):
    model = instantiate(compose("mask_rcnn_fpn", ["dataset=shapes"]).model)
    with pytest.raises(WeightsUnavailableError) as caught:
        load_weights(model, "torchvision:resnet50")
    message = str(caught.value)
    assert "\n" not in message
    assert "resnet50-0676ba61.pth" in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message
    assert f"{hub_cache}/" in message and "no network in tests" in message
    assert not hub_cache.exists() or not any(hub_cache.iterdir())


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="Did you mean torchvision:resnet50") as caught:
        named_weights("torchvision:resnet5")
    assert "torchvision:maskrcnn_resnet50_fpn" in str(caught.value)
    with pytest.raises(ValueError, match="not offered"):
        named_weights("torchvision:maskrcnn_resnet50_fpn_v2")


def test_imagenet_resnet50_into_resnet101_is_a_misfit_naming_its_backbone(hub_cache):
    _place(hub_cache, *IMAGENET["torchvision:resnet50"][:2])
    cfg = compose("faster_rcnn_fpn", ["dataset=shapes", "model.backbone=resnet101"])
    model = instantiate(cfg.model)
    before = model.backbone.bottom_up.conv1.weight.clone()
    with pytest.raises(WeightsMisfitError) as caught:
        load_start_weights(model, cfg)
    message = str(caught.value)
    assert "the ResNet at backbone.bottom_up" in message
    assert "backbone.bottom_up.layer3.6" in message  # the first block ResNet-50 lacks
    assert "an ImageNet ResNet-50" in message and "train.init_checkpoint_skip=" in message
    torch.testing.assert_close(model.backbone.bottom_up.conv1.weight, before)  # unchanged


@pytest.mark.slow
def test_faster_rcnn_file_in_mask_rcnn_preset_misfits_unless_skipped(hub_cache, tmp_path):
    file_name, builder, _ = DETECTORS["torchvision:fasterrcnn_resnet50_fpn"]
    _place(hub_cache, file_name, builder)
    name = "torchvision:fasterrcnn_resnet50_fpn"
    cfg = compose("torchvision_mask_rcnn_fpn", [f"train.init_checkpoint={name}"])
    with pytest.raises(WeightsMisfitError, match="conf=torchvision_faster_rcnn_fpn"):
        load_start_weights(instantiate(cfg.model), cfg)
    skipped = compose(
        "torchvision_mask_rcnn_fpn",
        [f"train.init_checkpoint={name}", "train.init_checkpoint_skip=[roi_heads.mask_head]"],
    )
    report = load_start_weights(instantiate(skipped.model), skipped)
    assert report.misfit == [] and report.skipped
    assert all(n.startswith("roi_heads.mask_head.") for n in report.skipped)
    # For predicting, the skip list of a training config does not apply.
    with pytest.raises(WeightsMisfitError):
        load_start_weights(instantiate(skipped.model), skipped, training=False)
    lenient = compose(
        "torchvision_mask_rcnn_fpn",
        [f"train.init_checkpoint={name}", "train.init_checkpoint_strict=false"],
    )
    report = load_start_weights(instantiate(lenient.model), lenient)
    assert report.misfit and all(n.startswith("roi_heads.mask_head.") for n in report.misfit)


@pytest.mark.slow
def test_predict_and_evaluate_exit_1_on_a_misfit_with_nothing_written(hub_cache, tmp_path, capsys):
    from PIL import Image

    from lazydet import evaluate, predict

    _place(hub_cache, *DETECTORS["torchvision:fasterrcnn_resnet50_fpn"][:2])
    image = tmp_path / "in.png"
    Image.new("RGB", (64, 48)).save(image)
    args = [
        "conf=torchvision_mask_rcnn_fpn",
        "train.init_checkpoint=torchvision:fasterrcnn_resnet50_fpn",
    ]
    with pytest.raises(SystemExit) as caught:
        predict.main([*args, f"input={image}", f"output={tmp_path / 'pred'}"])
    assert caught.value.code == 1
    assert "does not fit" in capsys.readouterr().err
    assert not (tmp_path / "pred").exists()
    with pytest.raises(SystemExit) as caught:
        evaluate.main([*args, f"output={tmp_path / 'eval'}"])
    assert caught.value.code == 1
    assert "does not fit" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()


def test_predict_refuses_no_weights_unless_asked(tmp_path, capsys):
    from PIL import Image

    from lazydet import predict

    image = tmp_path / "in.png"
    Image.new("RGB", (64, 48)).save(image)
    with pytest.raises(SystemExit) as caught:
        predict.main(["conf=quickstart", f"input={image}", f"output={tmp_path / 'pred'}"])
    assert caught.value.code == 1
    assert "train.init_checkpoint=random" in capsys.readouterr().err
    assert not (tmp_path / "pred").exists()
    with pytest.raises(SystemExit) as caught:
        predict.main(
            [
                "conf=quickstart",
                "train.init_checkpoint=random",
                f"input={image}",
                f"output={tmp_path / 'pred'}",
            ]
        )
    assert caught.value.code == 0
    assert (tmp_path / "pred").is_dir()
