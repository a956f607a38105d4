"""Detectron2 checkpoint names -> lazydet names (the table is in ``docs/weights.md``).

Detectron2's model-zoo ``.pkl`` files hold ``{"model": {name: numpy array}}`` with Detectron2's
module names. lazydet's ResNet uses torchvision's names and its heads keep their layers in
``nn.Sequential`` trunks, so the conversion is a rename driven by the target model
(``ModelLayout``): Detectron2's ``res{k}.{j}.conv{n}`` becomes ``layer{k-1}.{j}.conv{n}``, its
``fc{i}`` / ``mask_fcn{i}`` / ``conv_fcn{i}`` become the i-th ``nn.Linear`` / ``nn.Conv2d`` of the
lazydet head, and so on. Class layouts agree (foreground ``0..K-1``, background last, no
per-class outputs for the background), so no tensor is re-laid.

Input colour order: Detectron2's MSRA/Caffe2 backbones (every ``R-50.pkl``-based model-zoo
model) were trained on **BGR** images with ``pixel_std = 1``. lazydet feeds RGB; with
``to_rgb=True`` (the default) the stem convolution's input channels are reversed on load, which
makes the model compute exactly the same function on the RGB image. The config must still use
Detectron2's normalisation, in RGB order: ``pixel_mean=(123.675, 116.28, 103.53)``,
``pixel_std=(1.0, 1.0, 1.0)``, and the ResNet needs ``stride_in_1x1=True``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from lazydet.checkpoint.layout import ModelLayout, SequentialLayers

__all__ = ["convert_detectron2_state_dict", "is_detectron2_state_dict"]

# Detectron2 keeps these non-persistent buffers out of new checkpoints; old ones may have them.
_IGNORED = re.compile(r"(pixel_mean|pixel_std|.*anchor_generator\.cell_anchors\.\d+)")

_BN_SUFFIX = r"(weight|bias|running_mean|running_var)"


def is_detectron2_state_dict(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether the names look like a Detectron2 model (ResNet stem/stages or FPN names)."""
    markers = ("stem.conv1.", "fpn_lateral", "proposal_generator.rpn_head.", "head.cls_subnet.")
    return any(marker in key for key in state_dict for marker in markers)


Rule = Callable[[re.Match[str]], "str | None"]


def _nth(names: list[str | None] | None, index: int) -> str | None:
    return names[index] if names is not None and 0 <= index < len(names) else None


def _join(module_name: str | None, parameter: str) -> str | None:
    return None if module_name is None else f"{module_name}.{parameter}"


def _build_rules(layout: ModelLayout) -> list[tuple[re.Pattern[str], Rule]]:
    rules: list[tuple[str, Rule]] = []

    def add(pattern: str, rule: Rule) -> None:
        rules.append((pattern, rule))

    if layout.resnet is not None:
        resnet = layout.resnet
        bottom_up = r"backbone\.(?:bottom_up\.)?"
        add(rf"{bottom_up}stem\.conv1\.weight", lambda m: f"{resnet}conv1.weight")
        add(rf"{bottom_up}stem\.conv1\.norm\.{_BN_SUFFIX}", lambda m: f"{resnet}bn1.{m.group(1)}")
        add(
            rf"{bottom_up}res([2-5])\.(\d+)\.conv([1-3])\.weight",
            lambda m: f"{resnet}layer{int(m.group(1)) - 1}.{m.group(2)}.conv{m.group(3)}.weight",
        )
        add(
            rf"{bottom_up}res([2-5])\.(\d+)\.conv([1-3])\.norm\.{_BN_SUFFIX}",
            lambda m: (
                f"{resnet}layer{int(m.group(1)) - 1}.{m.group(2)}.bn{m.group(3)}.{m.group(4)}"
            ),
        )
        add(
            rf"{bottom_up}res([2-5])\.(\d+)\.shortcut\.weight",
            lambda m: f"{resnet}layer{int(m.group(1)) - 1}.{m.group(2)}.downsample.0.weight",
        )
        add(
            rf"{bottom_up}res([2-5])\.(\d+)\.shortcut\.norm\.{_BN_SUFFIX}",
            lambda m: f"{resnet}layer{int(m.group(1)) - 1}.{m.group(2)}.downsample.1.{m.group(3)}",
        )

    if layout.fpn is not None:
        fpn, in_features = layout.fpn, layout.fpn_in_features

        def fpn_conv(kind: str) -> Rule:
            def target(m: re.Match[str]) -> str | None:
                stage = f"res{m.group(1)}"
                if stage not in in_features:
                    return None
                # conv -> Sequential index 0, its norm -> index 1
                index = 1 if m.group(2) else 0
                return f"{fpn}{kind}.{in_features.index(stage)}.{index}.{m.group(3)}"

            return target

        add(
            rf"backbone\.fpn_lateral([2-5])\.(norm\.)?{_BN_SUFFIX}",
            fpn_conv("lateral_convs"),
        )
        add(rf"backbone\.fpn_output([2-5])\.(norm\.)?{_BN_SUFFIX}", fpn_conv("output_convs"))
    if layout.p6p7 is not None:
        add(
            r"backbone\.top_block\.(p6|p7)\.(weight|bias)",
            lambda m: f"{layout.p6p7}{m.group(1)}.{m.group(2)}",
        )

    if layout.rpn_head is not None:
        rpn_head = layout.rpn_head
        rpn_convs = (layout.rpn_head_layers or SequentialLayers()).convs
        add(
            r"proposal_generator\.rpn_head\.conv\.(weight|bias)",
            lambda m: _join(_nth(rpn_convs, 0), m.group(1)),
        )
        # With several convs, Detectron2's rpn_head.conv is a Sequential of conv0, conv1, ...
        add(
            r"proposal_generator\.rpn_head\.conv\.conv(\d+)\.(weight|bias)",
            lambda m: _join(_nth(rpn_convs, int(m.group(1))), m.group(2)),
        )
        add(
            r"proposal_generator\.rpn_head\.(objectness_logits|anchor_deltas)\.(weight|bias)",
            lambda m: f"{rpn_head}{m.group(1)}.{m.group(2)}",
        )

    def head_convs(d2_head: str, d2_conv: str, layers: SequentialLayers | None) -> None:
        layers = layers or SequentialLayers()
        add(
            rf"roi_heads\.{d2_head}\.{d2_conv}(\d+)\.(weight|bias)",
            lambda m: _join(_nth(layers.convs, int(m.group(1)) - 1), m.group(2)),
        )
        add(
            rf"roi_heads\.{d2_head}\.{d2_conv}(\d+)\.norm\.{_BN_SUFFIX}",
            lambda m: _join(_nth(layers.norms, int(m.group(1)) - 1), m.group(2)),
        )

    if layout.box_head is not None:
        box_layers = layout.box_head_layers or SequentialLayers()
        head_convs("box_head", "conv", box_layers)
        add(
            r"roi_heads\.box_head\.fc(\d+)\.(weight|bias)",
            lambda m: _join(_nth(box_layers.linears, int(m.group(1)) - 1), m.group(2)),
        )
    if layout.box_predictor is not None:
        add(
            r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)",
            lambda m: f"{layout.box_predictor}{m.group(1)}.{m.group(2)}",
        )
    if layout.mask_head is not None:
        head_convs("mask_head", "mask_fcn", layout.mask_head_layers)
        add(
            r"roi_heads\.mask_head\.(deconv|predictor)\.(weight|bias)",
            lambda m: f"{layout.mask_head}{m.group(1)}.{m.group(2)}",
        )
    if layout.keypoint_head is not None:
        head_convs("keypoint_head", "conv_fcn", layout.keypoint_head_layers)
        add(
            r"roi_heads\.keypoint_head\.score_lowres\.(weight|bias)",
            lambda m: f"{layout.keypoint_head}score_lowres.{m.group(1)}",
        )
    if layout.retinanet_head is not None:
        # Same structure and names in both libraries (conv, [norm,] relu per tower layer).
        add(
            r"head\.((?:cls_subnet|bbox_subnet)\.\d+|cls_score|bbox_pred)\.(.+)",
            lambda m: f"{layout.retinanet_head}{m.group(1)}.{m.group(2)}",
        )
    return [(re.compile(pattern), rule) for pattern, rule in rules]


def convert_detectron2_state_dict(
    state_dict: Mapping[str, Tensor], model: torch.nn.Module, *, to_rgb: bool = True
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Rename a Detectron2 state dict for ``model``.

    Args:
        state_dict: Detectron2 names -> tensors (``read_checkpoint`` turns the ``.pkl``'s numpy
            arrays into tensors).
        model: the lazydet model it will be loaded into (target names are looked up in it).
        to_rgb: reverse the input channels of the stem convolution, so a backbone trained on BGR
            images computes the same function on lazydet's RGB input (see the module docstring).

    Returns:
        ``(converted, sources)`` as ``convert_torchvision_state_dict``: unmatched keys keep their
        Detectron2 name; ignored buffers (``pixel_mean``, ``pixel_std``, cell anchors) are dropped.
    """
    layout = ModelLayout.of(model)
    rules = _build_rules(layout)
    stem = f"{layout.resnet}conv1.weight" if layout.resnet is not None else None
    converted: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    for key, value in state_dict.items():
        if _IGNORED.fullmatch(key) or key.endswith("num_batches_tracked"):
            continue
        name = None
        for pattern, rule in rules:
            match = pattern.fullmatch(key)
            if match is not None:
                name = rule(match)
                break
        name = name or key
        renamed_stem = name == stem and key != name
        if to_rgb and renamed_stem and value.dim() == 4 and value.shape[1] == 3:
            value = value.flip(1)
        converted[name] = value
        sources[name] = key
    return converted, sources
