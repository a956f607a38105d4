"""Reading checkpoint files safely and loading weights users already have (lazydet, torchvision,
Detectron2) into lazydet models.

References: torchvision's own ResNet (same features after loading its ImageNet state dict),
hand-written Detectron2 names (every tensor of a Detectron2-named ``.pkl`` lands where Detectron2's
naming says), round trips through files, and pickles that would run code if unpickled normally.
"""

from __future__ import annotations

import functools
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import detection

from lazydet.checkpoint import (
    LoadReport,
    UnsafeCheckpointError,
    load_weights,
    read_checkpoint,
)
from lazydet.config import compose, instantiate
from lazydet.modeling.anchor_generator import DefaultAnchorGenerator
from lazydet.modeling.backbone import FPN, LastLevelMaxPool, LastLevelP6P7, ResNet, ViT
from lazydet.modeling.meta_arch.rcnn import GeneralizedRCNN
from lazydet.modeling.meta_arch.retinanet import RetinaNet
from lazydet.modeling.proposal import RPN
from lazydet.modeling.roi_heads import (
    FastRCNNConvFCHead,
    KRCNNConvDeconvUpsampleHead,
    MaskRCNNConvUpsampleHead,
    StandardROIHeads,
)

# ---------------------------------------------------------------------------------------------
# Small models


def _resnet_fpn(depth: int = 18, **fpn_kwargs) -> FPN:
    return FPN(bottom_up=ResNet(depth=depth), out_channels=32, **fpn_kwargs)


def _retinanet(*, depth: int = 18, num_classes: int = 3) -> RetinaNet:
    return RetinaNet(
        backbone=_resnet_fpn(depth),
        top_block=LastLevelP6P7(in_channels=32, out_channels=32, in_feature="p5"),
        head_in_features=["p3", "p4", "p5", "p6", "p7"],
        anchor_generator=DefaultAnchorGenerator(sizes=[[32], [64], [128], [256], [512]]),
        num_classes=num_classes,
    )


def _rcnn(*, depth: int = 50, masks: bool = True, keypoints: bool = True) -> GeneralizedRCNN:
    """Mask + Keypoint R-CNN with small heads (names, not sizes, matter here)."""
    return GeneralizedRCNN(
        backbone=_resnet_fpn(depth, top_block=LastLevelMaxPool()),
        proposal_generator=functools.partial(
            RPN,
            in_features=["p2", "p3", "p4", "p5", "p6"],
            anchor_generator=DefaultAnchorGenerator(sizes=[[32], [64], [128], [256], [512]]),
        ),
        roi_heads=functools.partial(
            StandardROIHeads,
            num_classes=4,
            box_head=functools.partial(FastRCNNConvFCHead, fc_dims=(64, 64)),
            mask_head=functools.partial(MaskRCNNConvUpsampleHead, conv_dims=(16,) * 4)
            if masks
            else None,
            keypoint_head=functools.partial(
                KRCNNConvDeconvUpsampleHead, num_keypoints=5, conv_dims=(16,) * 8
            )
            if keypoints
            else None,
        ),
    )


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return model


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        torch.testing.assert_close(sa[name], sb[name], rtol=0, atol=0, msg=name)


# ---------------------------------------------------------------------------------------------
# File formats


def test_reads_torch_zip_legacy_and_lazydet_checkpoints(tmp_path: Path) -> None:
    state = {"a.weight": torch.randn(3, 4), "a.bias": torch.arange(3.0)}
    torch.save(state, tmp_path / "plain.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.save({"model": state, "lazydet_version": "0.1.0", "iteration": 7}, tmp_path / "ld.pth")

    for name, expected_format in [("plain", "torch"), ("legacy", "torch"), ("ld", "lazydet")]:
        checkpoint = read_checkpoint(tmp_path / f"{name}.pth")
        assert checkpoint.format == expected_format
        assert checkpoint.state_dict.keys() == state.keys()
        for key in state:
            assert torch.equal(checkpoint.state_dict[key], state[key])
    assert read_checkpoint(tmp_path / "ld.pth").meta == {"lazydet_version": "0.1.0", "iteration": 7}


@pytest.mark.parametrize("protocol", [2, 4, 5])  # 5: Python 3.14's default
def test_reads_detectron2_pickle_of_numpy_arrays(tmp_path: Path, protocol: int) -> None:
    arrays = {
        "backbone.bottom_up.stem.conv1.weight": np.random.rand(64, 3, 7, 7).astype(np.float32),
        "roi_heads.box_predictor.cls_score.bias": np.arange(81, dtype=np.float64),
        "backbone.bottom_up.res2.0.conv1.norm.running_var": np.ones(64, dtype=np.float16),
    }
    path = tmp_path / "model_final.pkl"
    content = {"model": arrays, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}
    path.write_bytes(pickle.dumps(content, protocol=protocol))

    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "detectron2"
    assert checkpoint.meta["__author__"] == "Detectron2 Model Zoo"
    for key, array in arrays.items():
        tensor = checkpoint.state_dict[key]
        assert tensor.dtype == torch.from_numpy(array).dtype
        np.testing.assert_array_equal(tensor.numpy(), array)


class _RunsCode:
    """Unpickling this calls ``Path.touch(marker)``: code execution a weights file must not do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_that_runs_code_is_refused_naming_the_global(tmp_path: Path) -> None:
    marker = tmp_path / "was_executed"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.zeros(2)}, "x": _RunsCode(marker)}))

    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pkl.*pathlib.*touch"):
        read_checkpoint(path)
    assert not marker.exists()

    # The same check protects load_weights, whose error names the file.
    with pytest.raises(UnsafeCheckpointError, match="evil.pkl"):
        load_weights(nn.Linear(2, 2), path)
    assert not marker.exists()


def test_torch_file_with_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "with_object.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "args": _RunsCode(tmp_path / "m")}, path)
    with pytest.raises(UnsafeCheckpointError, match="with_object.pth.*weights_only"):
        read_checkpoint(path)
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------------------------------------
# load_weights


def test_lazydet_checkpoint_round_trip(tmp_path: Path) -> None:
    source = _randomize(_retinanet(), seed=1)
    path = tmp_path / "model_final.pth"
    torch.save({"model": source.state_dict(), "lazydet_version": "0.1.0"}, path)
    target = _retinanet()

    report = load_weights(target, path, strict=True)

    assert isinstance(report, LoadReport) and report.complete
    assert report.naming == "lazydet" and report.source == str(path)
    _assert_same_state(source, target)


def test_ddp_prefix_is_stripped() -> None:
    source = _randomize(_retinanet(), seed=2)
    target = _retinanet()
    report = load_weights(target, {f"module.{k}": v for k, v in source.state_dict().items()})
    assert report.complete
    _assert_same_state(source, target)


@pytest.mark.parametrize(
    "wrappers", [["_orig_mod."], ["module.", "_orig_mod."], ["_orig_mod.", "module."]]
)
def test_compile_and_ddp_prefixes_are_stripped_in_any_order(wrappers: list[str]) -> None:
    source = _randomize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), seed=5)
    state = source.state_dict()
    for prefix in reversed(wrappers):  # the outermost wrapper's prefix comes first
        state = {f"{prefix}{k}": v for k, v in state.items()}
    target = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert load_weights(target, state, strict=True).complete
    _assert_same_state(source, target)


def test_state_dict_of_a_torch_compiled_model_loads(tmp_path: Path) -> None:
    source = _randomize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), seed=6)
    compiled = torch.compile(source)  # wrapping only: nothing compiles until it is called
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    torch.save(compiled.state_dict(), tmp_path / "compiled.pth")
    target = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert load_weights(target, tmp_path / "compiled.pth", strict=True).complete
    _assert_same_state(source, target)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_float_tensors_are_not_cast_into_float_parameters(dtype: torch.dtype) -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    before = model[0].weight.detach().clone()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state["0.weight"] = torch.ones(2, 3, dtype=dtype)

    report = load_weights(model, state)

    assert report.mismatched_dtype == [("0.weight", dtype, torch.float32)]
    assert not report.complete and "0.weight" not in report.loaded
    assert torch.equal(model[0].weight, before)  # left as it was, not cast
    assert f"0.weight: checkpoint {dtype} vs model torch.float32" in str(report)
    with pytest.raises(ValueError, match="strict=True"):
        load_weights(model, state, strict=True)


def test_only_non_float_tensors_says_so() -> None:
    model = nn.Linear(3, 2)
    state = {k: torch.ones_like(v, dtype=torch.int64) for k, v in model.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"0 of 2 parameters.*2 matched in name and shape.*integer"
    ):
        load_weights(model, state)


def test_lower_precision_floats_and_integer_buffers_still_load() -> None:
    source = _randomize(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), seed=7)
    source[1].num_batches_tracked.fill_(12)  # an int64 buffer into an int64 buffer
    half = {k: v.half() if v.is_floating_point() else v for k, v in source.state_dict().items()}
    target = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    report = load_weights(target, half, strict=True)
    assert report.complete and not report.mismatched_dtype
    assert int(target[1].num_batches_tracked) == 12
    torch.testing.assert_close(target[0].weight, source[0].weight.half().float())


def test_nan_and_inf_weights_warn_naming_the_tensors() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state["0.bias"][0] = float("nan")
    state["1.weight"][1, 1] = float("-inf")

    with pytest.warns(
        RuntimeWarning, match=r"<state dict>: 2 loaded tensors hold NaN or inf.*0\.bias, 1\.weight"
    ):
        report = load_weights(model, state)

    assert report.nonfinite == ["0.bias", "1.weight"]
    assert report.complete  # loaded as asked, but flagged
    assert "holding NaN or inf" in str(report)


def test_finite_weights_do_not_warn(recwarn) -> None:
    model = nn.Linear(3, 2)
    report = load_weights(model, {k: v.detach().clone() for k, v in model.state_dict().items()})
    assert report.nonfinite == [] and not [w for w in recwarn if "NaN" in str(w.message)]


def test_torchvision_imagenet_resnet_gives_torchvision_features() -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for module in reference.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    model = ResNet(depth=18).eval()

    report = load_weights(model, reference.state_dict())

    assert report.naming == "lazydet"  # torchvision's ImageNet names are lazydet's ResNet names
    assert not report.missing and not report.mismatched
    assert report.unexpected == ["fc.weight", "fc.bias"]
    extractor = torchvision.models._utils.IntermediateLayerGetter(
        reference, {"layer1": "res2", "layer2": "res3", "layer3": "res4", "layer4": "res5"}
    )
    image = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        expected, got = extractor(image), model(image)
    for name in ("res2", "res3", "res4", "res5"):
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-4)


def test_torchvision_imagenet_resnet_into_a_detector() -> None:
    reference = torchvision.models.resnet18(weights=None)
    detector = _retinanet()
    report = load_weights(detector, reference.state_dict())
    assert report.naming == "torchvision"
    resnet_state = detector.backbone.bottom_up.state_dict()
    for name, value in reference.state_dict().items():
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue
        assert torch.equal(resnet_state[name], value), name
        assert report.renamed[f"backbone.bottom_up.{name}"] == name
    parts = ("backbone.lateral", "backbone.output", "backbone.top_block.", "head.", "top_block.")
    assert all(name.startswith(parts) for name in report.missing)
    assert report.kept == ["foreground_ema"]  # RetinaNet's loss-normaliser EMA: not in the file


def test_wrong_architecture_says_nothing_matched(tmp_path: Path) -> None:
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    vit = ViT(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2)
    num_tensors = len(vit.state_dict())
    with pytest.raises(ValueError, match=rf"resnet18_imagenet\.pth: 0 of {num_tensors} parameters"):
        load_weights(vit, path)


def test_shape_mismatch_is_reported_and_skipped_unless_strict() -> None:
    source = _randomize(_retinanet(num_classes=3), seed=3)
    target = _retinanet(num_classes=5)
    before = target.head.cls_score.weight.clone()

    report = load_weights(target, source.state_dict())

    assert [(name, a, b) for name, a, b in report.mismatched] == [
        ("head.cls_score.weight", (9, 32, 3, 3), (15, 32, 3, 3)),
        ("head.cls_score.bias", (9,), (15,)),
    ]
    assert torch.equal(target.head.cls_score.weight, before)
    assert torch.equal(target.head.bbox_pred.weight, source.head.bbox_pred.weight)
    text = str(report)
    assert "Shape mismatch" in text and "head.cls_score.weight: checkpoint [9, 32, 3, 3]" in text
    with pytest.raises(ValueError, match="strict=True"):
        load_weights(_retinanet(num_classes=5), source.state_dict(), strict=True)


def test_report_lists_missing_and_unexpected_readably() -> None:
    source = _randomize(_retinanet(), seed=4)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("head.bbox_pred")}
    state["extra.thing.weight"] = torch.zeros(1)
    report = load_weights(_retinanet(), state)
    assert report.missing == ["head.bbox_pred.weight", "head.bbox_pred.bias"]
    assert report.unexpected == ["extra.thing.weight"]
    text = str(report)
    assert text.splitlines()[0] == (
        f"Loaded {len(state) - 1} of {len(state) + 1} model tensors from <state dict> "
        "(lazydet names)."
    )
    assert "  head.bbox_pred.{bias, weight}" in text
    assert "  extra.thing.weight" in text


# ---------------------------------------------------------------------------------------------
# Detectron2 names

# Detectron2's names for lazydet's, written from Detectron2's module tree (ResNet stem / res{k} /
# shortcut with .norm, fpn_lateral{k} / fpn_output{k}, rpn_head.conv, box_head.fc{i},
# mask_head.mask_fcn{i}, keypoint_head.conv_fcn{i}); the reference the loader must follow.
_D2_RULES = [
    (r"backbone\.bottom_up\.conv1\.weight", lambda m: "backbone.bottom_up.stem.conv1.weight"),
    (r"backbone\.bottom_up\.bn1\.(\w+)", lambda m: f"backbone.bottom_up.stem.conv1.norm.{m[1]}"),
    (
        r"backbone\.bottom_up\.layer(\d)\.(\d+)\.conv(\d)\.weight",
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight",
    ),
    (
        r"backbone\.bottom_up\.layer(\d)\.(\d+)\.bn(\d)\.(\w+)",
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}",
    ),
    (
        r"backbone\.bottom_up\.layer(\d)\.(\d+)\.downsample\.0\.weight",
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.shortcut.weight",
    ),
    (
        r"backbone\.bottom_up\.layer(\d)\.(\d+)\.downsample\.1\.(\w+)",
        lambda m: f"backbone.bottom_up.res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}",
    ),
    (r"backbone\.top_block\.(.+)", lambda m: f"backbone.top_block.{m[1]}"),
    (r"proposal_generator\.head\.convs\.0\.(\w+)", lambda m: f"proposal_generator.rpn_head.conv.{m[1]}"),
    (r"proposal_generator\.head\.(\w+)\.(\w+)", lambda m: f"proposal_generator.rpn_head.{m[1]}.{m[2]}"),
    # box head layers: [Flatten, fc1, relu, fc2, relu]
    (r"roi_heads\.box_head\.layers\.(\d)\.(\w+)", lambda m: f"roi_heads.box_head.fc{(int(m[1]) + 1) // 2}.{m[2]}"),
    (r"roi_heads\.box_predictor\.(.+)", lambda m: f"roi_heads.box_predictor.{m[1]}"),
    (r"roi_heads\.mask_head\.convs\.(\d)\.(\w+)", lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) // 2 + 1}.{m[2]}"),
    (r"roi_heads\.mask_head\.(deconv|predictor)\.(\w+)", lambda m: f"roi_heads.mask_head.{m[1]}.{m[2]}"),
    (r"roi_heads\.keypoint_head\.convs\.(\d+)\.(\w+)", lambda m: f"roi_heads.keypoint_head.conv_fcn{int(m[1]) // 2 + 1}.{m[2]}"),
    (r"roi_heads\.keypoint_head\.score_lowres\.(\w+)", lambda m: f"roi_heads.keypoint_head.score_lowres.{m[1]}"),
    (r"head\.(.+)", lambda m: f"head.{m[1]}"),
]  # fmt: skip


def _detectron2_name(name: str, fpn_levels: dict[int, int]) -> str | None:
    """The Detectron2 name of a lazydet tensor; None for state Detectron2 does not save."""
    if name == "foreground_ema":  # Detectron2 keeps RetinaNet's loss normaliser as a float
        return None
    fpn = re.fullmatch(r"backbone\.(lateral|output)_convs\.(\d)\.0\.(\w+)", name)
    if fpn:
        return f"backbone.fpn_{fpn[1]}{fpn_levels[int(fpn[2])]}.{fpn[3]}"
    for pattern, rule in _D2_RULES:
        match = re.fullmatch(pattern, name)
        if match:
            return rule(match)
    raise AssertionError(f"no Detectron2 name for {name}")


def _write_detectron2_pkl(model: nn.Module, path: Path, fpn_levels: dict[int, int]) -> dict:
    """A model-zoo-style .pkl of random float32 arrays under Detectron2 names; returns them."""
    rng = np.random.default_rng(0)
    arrays = {
        _detectron2_name(name, fpn_levels): rng.standard_normal(tuple(t.shape)).astype(np.float32)
        for name, t in model.state_dict().items()
        if _detectron2_name(name, fpn_levels) is not None
    }
    for name, array in arrays.items():
        if name.endswith("running_var"):
            np.abs(array, out=array)  # a valid variance, so forward passes stay finite
    content = {"model": arrays, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}
    path.write_bytes(pickle.dumps(content, protocol=2))
    return arrays


def test_detectron2_mask_keypoint_rcnn_pkl_lands_everywhere(tmp_path: Path) -> None:
    model = _rcnn()
    levels = {0: 2, 1: 3, 2: 4, 3: 5}
    arrays = _write_detectron2_pkl(model, tmp_path / "model_final_a6e10b.pkl", levels)

    report = load_weights(model, tmp_path / "model_final_a6e10b.pkl", strict=True)

    assert report.naming == "detectron2" and report.complete
    state = model.state_dict()
    for name, tensor in state.items():
        expected = torch.from_numpy(arrays[_detectron2_name(name, levels)])
        if name == "backbone.bottom_up.conv1.weight":
            expected = expected.flip(1)  # BGR-trained stem, made to read RGB
        assert torch.equal(tensor, expected), name
    # Spot checks of the naming, written out in full.
    assert report.renamed["backbone.bottom_up.layer3.0.downsample.1.running_var"] == (
        "backbone.bottom_up.res4.0.shortcut.norm.running_var"
    )
    assert report.renamed["backbone.lateral_convs.3.0.weight"] == "backbone.fpn_lateral5.weight"
    assert report.renamed["roi_heads.box_head.layers.3.bias"] == "roi_heads.box_head.fc2.bias"
    assert (
        report.renamed["roi_heads.mask_head.convs.6.weight"]
        == "roi_heads.mask_head.mask_fcn4.weight"
    )
    assert report.renamed["roi_heads.keypoint_head.convs.14.weight"] == (
        "roi_heads.keypoint_head.conv_fcn8.weight"
    )
    assert report.renamed["proposal_generator.head.convs.0.weight"] == (
        "proposal_generator.rpn_head.conv.weight"
    )


def test_detectron2_retinanet_pkl_with_top_block_from_res5(tmp_path: Path) -> None:
    """Detectron2's RetinaNet: FPN on res3..res5, P6/P7 from res5 inside the backbone."""
    backbone = FPN(
        bottom_up=ResNet(depth=18, out_features=["res3", "res4", "res5"]),
        in_features=["res3", "res4", "res5"],
        out_channels=32,
        top_block=LastLevelP6P7(in_channels=512, out_channels=32, in_feature="res5"),
    )
    model = RetinaNet(
        backbone=backbone,
        head_in_features=["p3", "p4", "p5", "p6", "p7"],
        anchor_generator=DefaultAnchorGenerator(sizes=[[32], [64], [128], [256], [512]]),
        num_classes=3,
    )
    levels = {0: 3, 1: 4, 2: 5}
    arrays = _write_detectron2_pkl(model, tmp_path / "retinanet.pkl", levels)

    report = load_weights(model, tmp_path / "retinanet.pkl", strict=True, detectron2_to_rgb=False)

    assert report.naming == "detectron2" and report.complete
    assert report.kept == ["foreground_ema"]  # training state, left as initialised
    assert float(model.foreground_ema) == 100.0
    for name, tensor in model.state_dict().items():
        if name == "foreground_ema":
            continue
        assert torch.equal(tensor, torch.from_numpy(arrays[_detectron2_name(name, levels)])), name
    assert report.renamed["backbone.lateral_convs.0.0.weight"] == "backbone.fpn_lateral3.weight"
    assert "head.cls_subnet.0.weight" not in report.renamed  # same name in both libraries


def test_detectron2_bgr_stem_flip_gives_the_same_function(tmp_path: Path) -> None:
    model = _rcnn(depth=18, masks=False, keypoints=False)
    path = tmp_path / "r18.pkl"
    _write_detectron2_pkl(model, path, {0: 2, 1: 3, 2: 4, 3: 5})
    rgb_model, bgr_model = _rcnn(depth=18, masks=False, keypoints=False), model
    load_weights(rgb_model, path, strict=True)
    load_weights(bgr_model, path, strict=True, detectron2_to_rgb=False)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        got = rgb_model.backbone.bottom_up.conv1(image)
        expected = bgr_model.backbone.bottom_up.conv1(image.flip(1))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# COCO's category ids are 1..90 without these ten; lazydet's COCO class c is the c-th used id.
_COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def test_torchvision_coco_91_classes_into_80_class_models() -> None:
    tv_rcnn = detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    rcnn = instantiate(compose("torchvision_mask_rcnn_fpn", ["dataset=coco2017"]).model)
    report = load_weights(rcnn, tv_rcnn.state_dict(), strict=True)
    assert report.complete and rcnn.roi_heads.num_classes == 80
    tv_box, box = tv_rcnn.roi_heads.box_predictor, rcnn.roi_heads.box_predictor
    assert torch.equal(box.cls_score.weight[:80], tv_box.cls_score.weight[_COCO_IDS])
    assert torch.equal(box.cls_score.bias[80], tv_box.cls_score.bias[0])  # background last
    tv_deltas = tv_box.bbox_pred.weight.reshape(91, 4, -1)
    assert torch.equal(box.bbox_pred.weight.reshape(80, 4, -1), tv_deltas[_COCO_IDS])
    tv_masks = tv_rcnn.roi_heads.mask_predictor.mask_fcn_logits
    assert torch.equal(rcnn.roi_heads.mask_head.predictor.bias, tv_masks.bias[_COCO_IDS])

    tv_retina = detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None)
    retina = instantiate(compose("torchvision_retinanet_fpn", ["dataset=coco2017"]).model)
    report = load_weights(retina, tv_retina.state_dict())
    assert not report.mismatched and not report.unexpected
    tv_logits = tv_retina.head.classification_head.cls_logits.weight.reshape(9, 91, 256, 3, 3)
    logits = retina.head.cls_score.weight.reshape(9, 80, 256, 3, 3)
    assert torch.equal(logits, tv_logits[:, _COCO_IDS])


# torchvision's ``_load_from_state_dict`` upgrades these older names (version < 2 of each module);
# the downloadable ``*_coco-*.pth`` files still use them. Written as the inverse of that upgrade.
_OLD_TORCHVISION_NAMES = [
    (
        r"backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.0\.(weight|bias)",
        r"backbone.fpn.\1_blocks.\2.\3",
    ),
    (r"rpn\.head\.conv\.0\.0\.(weight|bias)", r"rpn.head.conv.\1"),
    (
        r"roi_heads\.mask_head\.(\d+)\.0\.(weight|bias)",
        lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}.{m[2]}",
    ),
    (
        r"head\.(classification|regression)_head\.conv\.(\d+)\.0\.(weight|bias)",
        lambda m: f"head.{m[1]}_head.conv.{2 * int(m[2])}.{m[3]}",
    ),
]


def _with_old_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in _OLD_TORCHVISION_NAMES:
            key = re.sub(rf"^{pattern}$", replacement, key)
        renamed[key] = value
    return renamed


@pytest.mark.parametrize(
    ("builder", "preset", "old_names"),
    [
        (detection.maskrcnn_resnet50_fpn, "torchvision_mask_rcnn_fpn", 4 * 4 + 2 + 4 * 2),
        (detection.retinanet_resnet50_fpn, "torchvision_retinanet_fpn", 3 * 4 + 2 * 4 * 2),
    ],
)
def test_torchvision_older_layer_names_load_like_the_current_ones(builder, preset, old_names):
    torch.manual_seed(0)
    tv_model = builder(weights=None, weights_backbone=None, num_classes=91)
    current = {k: v.clone() for k, v in tv_model.state_dict().items()}
    old = _with_old_names(current)
    assert len(set(old) - set(current)) == old_names  # FPN blocks, RPN conv, mask/tower convs
    # These are the names torchvision itself still accepts (it upgrades them when loading):
    tv_model.load_state_dict(old)

    model = instantiate(compose(preset).model)
    report_current = load_weights(model, current)
    from_current = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # forget what was loaded
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.zero_()
    report_old = load_weights(model, old)

    assert report_old.naming == "torchvision"
    assert report_old.loaded == report_current.loaded and len(report_old.loaded) > 250
    assert report_old.missing == report_current.missing
    assert not report_old.unexpected and not report_old.mismatched
    state = model.state_dict()
    for name in report_old.loaded:
        assert torch.equal(state[name], from_current[name]), name
