"""torchvision checkpoint names -> lazydet names.

Covers torchvision's ``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn``,
``keypointrcnn_resnet50_fpn``, ``retinanet_resnet50_fpn`` and the ImageNet ``resnet*`` /
``resnext*`` classifiers, in both the current module names and the older ones that the
downloadable ``*_coco-*.pth`` files still use (torchvision upgrades those in
``_load_from_state_dict``; lazydet renames them here).

=============================================  ==============================================
torchvision                                    lazydet (prefixes found in the model)
=============================================  ==============================================
``conv1``, ``bn1``, ``layer{k}.*`` (ImageNet)  ``<resnet>conv1``, ``bn1``, ``layer{k}.*``
``fc.*`` (ImageNet classifier)                 not used (reported as unexpected)
``backbone.body.*``                            ``<resnet>*`` (same ResNet names)
``backbone.fpn.inner_blocks.{i}[.0]``          ``<fpn>lateral_convs.{j}.0``
``backbone.fpn.layer_blocks.{i}[.0]``          ``<fpn>output_convs.{j}.0``
``backbone.fpn.extra_blocks.p6/p7``            ``<LastLevelP6P7>p6/p7``
``rpn.head.conv[.0.0]``                        ``<rpn head>convs.0``
``rpn.head.cls_logits`` / ``bbox_pred``        ``<rpn head>objectness_logits`` / ``anchor_deltas``
``roi_heads.box_head.fc6`` / ``fc7``           first / second ``nn.Linear`` of the box head
``roi_heads.box_predictor.cls_score``          ``<box_predictor>cls_score``: rows reordered
``roi_heads.box_predictor.bbox_pred``          ``<box_predictor>bbox_pred``: background dropped
``roi_heads.mask_head.{i}.0`` / ``mask_fcn{i+1}``  i-th conv of the mask head
``roi_heads.mask_predictor.conv5_mask``        ``<mask_head>deconv``
``roi_heads.mask_predictor.mask_fcn_logits``   ``<mask_head>predictor``: background dropped
``roi_heads.keypoint_head.{2i}``               i-th conv of the keypoint head
``roi_heads.keypoint_predictor.kps_score_lowres``  ``<keypoint_head>score_lowres``
``head.classification_head.conv.{i}.0``        ``<retinanet head>cls_subnet``, i-th conv
``head.classification_head.cls_logits``        ``<retinanet head>cls_score``
``head.regression_head.conv.{i}.0`` / bbox_reg  ``bbox_subnet`` / ``bbox_pred``
=============================================  ==============================================

Two things are more than a rename:

* **Class order.** torchvision's R-CNN predictors have a background class at index 0 and
  per-class outputs for it; lazydet (like Detectron2) has ``K`` foreground classes
  ``0..K-1`` and the background as the *last* score column, with no box or mask output for it.
  So ``cls_score`` rows ``[bg, c1..cK]`` become ``[c1..cK, bg]`` (softmax is unchanged by the
  permutation), and the background's 4 ``bbox_pred`` rows and its ``mask_fcn_logits`` channel
  are dropped. torchvision's label ``l`` (``1..K``) is lazydet's ``pred_classes == l - 1``.
  RetinaNet has no background column in either library: labels are equal.
* **COCO ids.** torchvision's COCO checkpoints have 91 classes: the background (R-CNNs) and the
  COCO category ids 1..90, ten of which are unused. Loaded into a model with 80 classes (lazydet's
  COCO datasets: contiguous ids in category-id order), the rows of the 80 used ids are selected,
  so lazydet's class ``c`` is COCO's ``c``-th category. Into a model with 90 (R-CNN) or 91
  (RetinaNet) classes they load as they are (class ``c`` is category id ``c + 1`` for the R-CNNs,
  ``c`` for RetinaNet).
* **FPN levels.** ``inner_blocks.i`` is numbered from torchvision's first returned layer
  (``layer1`` for the R-CNNs, ``layer2`` for RetinaNet, i.e. no P2); lazydet's
  ``lateral_convs.j`` follow the FPN's ``in_features``. The level is recovered from the number
  of blocks in the checkpoint (they always end at ``layer4``), then placed at its index in the
  model's ``in_features``; a level the model lacks stays unmatched and is reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from lazydet.checkpoint.layout import ModelLayout, SequentialLayers

__all__ = ["convert_torchvision_state_dict", "is_torchvision_state_dict"]

_RESNET_STAGES = ("res2", "res3", "res4", "res5")

# The 80 category ids COCO uses out of 1..90, in the order of lazydet's contiguous class ids.
_UNUSED_COCO_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in _UNUSED_COCO_IDS)
_TORCHVISION_COCO_CLASSES = 91


def _coco_classes(num_classes: int | None, checkpoint_classes: int) -> list[int] | None:
    """Which of the checkpoint's class outputs to keep for a COCO-80 model, else None (all)."""
    if num_classes == len(COCO_CATEGORY_IDS) and checkpoint_classes == _TORCHVISION_COCO_CLASSES:
        return list(COCO_CATEGORY_IDS)
    return None


Rule = Callable[[re.Match[str], Tensor], "tuple[str, Tensor] | None"]


def is_torchvision_state_dict(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether the names look like a torchvision detection model or ImageNet ResNet."""
    keys = list(state_dict)
    detection = any(k.startswith(("backbone.body.", "backbone.fpn.")) for k in keys)
    imagenet = "conv1.weight" in state_dict and any(k.startswith("layer1.") for k in keys)
    return detection or imagenet


def _fpn_levels(state_dict: Mapping[str, Tensor]) -> int:
    indices = {
        int(m.group(1))
        for k in state_dict
        if (m := re.match(r"backbone\.fpn\.inner_blocks\.(\d+)\.", k))
    }
    return len(indices)


def _nth(names: list[str] | None, index: int) -> str | None:
    return names[index] if names is not None and 0 <= index < len(names) else None


def _build_rules(layout: ModelLayout, num_fpn_levels: int) -> list[tuple[re.Pattern[str], Rule]]:
    rules: list[tuple[str, Rule]] = []

    def add(pattern: str, rule: Rule) -> None:
        rules.append((pattern, rule))

    def renamed(target: Callable[[re.Match[str]], str | None]) -> Rule:
        def rule(match: re.Match[str], value: Tensor) -> tuple[str, Tensor] | None:
            name = target(match)
            return None if name is None else (name, value)

        return rule

    if layout.resnet is not None:
        add(r"backbone\.body\.(.+)", renamed(lambda m: f"{layout.resnet}{m.group(1)}"))
        # ImageNet classifier checkpoints: the ResNet at the top level, plus `fc`.
        add(r"((?:conv1|bn1|layer[1-4])\..+)", renamed(lambda m: f"{layout.resnet}{m.group(1)}"))

    if layout.fpn is not None:
        first_stage = len(_RESNET_STAGES) - num_fpn_levels

        def fpn_conv(kind: str) -> Rule:
            def target(m: re.Match[str]) -> str | None:
                stage_index = first_stage + int(m.group(1))
                if not 0 <= stage_index < len(_RESNET_STAGES):
                    return None
                stage = _RESNET_STAGES[stage_index]
                if stage not in layout.fpn_in_features:
                    return None
                j = layout.fpn_in_features.index(stage)
                return f"{layout.fpn}{kind}.{j}.0.{m.group(2)}"

            return renamed(target)

        add(r"backbone\.fpn\.inner_blocks\.(\d+)\.(?:0\.)?(weight|bias)", fpn_conv("lateral_convs"))
        add(r"backbone\.fpn\.layer_blocks\.(\d+)\.(?:0\.)?(weight|bias)", fpn_conv("output_convs"))
    if layout.p6p7 is not None:
        add(
            r"backbone\.fpn\.extra_blocks\.(p6|p7)\.(weight|bias)",
            renamed(lambda m: f"{layout.p6p7}{m.group(1)}.{m.group(2)}"),
        )

    if layout.rpn_head is not None:
        rpn_layers = layout.rpn_head_layers or SequentialLayers()
        add(
            r"rpn\.head\.conv\.(?:0\.0\.)?(weight|bias)",
            renamed(lambda m: _join(_nth(rpn_layers.convs, 0), m.group(1))),
        )
        add(
            r"rpn\.head\.cls_logits\.(weight|bias)",
            renamed(lambda m: f"{layout.rpn_head}objectness_logits.{m.group(1)}"),
        )
        add(
            r"rpn\.head\.bbox_pred\.(weight|bias)",
            renamed(lambda m: f"{layout.rpn_head}anchor_deltas.{m.group(1)}"),
        )

    if layout.box_head is not None:
        box_layers = layout.box_head_layers or SequentialLayers()
        add(
            r"roi_heads\.box_head\.fc(6|7)\.(weight|bias)",
            renamed(lambda m: _join(_nth(box_layers.linears, int(m.group(1)) - 6), m.group(2))),
        )
    if layout.box_predictor is not None:
        predictor = layout.box_predictor

        num_classes = layout.roi_num_classes

        def cls_score(m: re.Match[str], value: Tensor) -> tuple[str, Tensor]:
            # [bg, c1..cK] -> [c1..cK, bg]
            keep = _coco_classes(num_classes, value.shape[0]) or list(range(1, value.shape[0]))
            return f"{predictor}cls_score.{m.group(1)}", value[[*keep, 0]]

        def bbox_pred(m: re.Match[str], value: Tensor) -> tuple[str, Tensor]:
            per_class = value.reshape(-1, 4, *value.shape[1:])
            keep = _coco_classes(num_classes, per_class.shape[0]) or list(
                range(1, per_class.shape[0])  # drop the background's 4 rows
            )
            return f"{predictor}bbox_pred.{m.group(1)}", per_class[keep].flatten(0, 1)

        add(r"roi_heads\.box_predictor\.cls_score\.(weight|bias)", cls_score)
        add(r"roi_heads\.box_predictor\.bbox_pred\.(weight|bias)", bbox_pred)

    if layout.mask_head is not None:
        mask_head = layout.mask_head
        mask_layers = layout.mask_head_layers or SequentialLayers()
        add(
            r"roi_heads\.mask_head\.(\d+)\.0\.(weight|bias)",
            renamed(lambda m: _join(_nth(mask_layers.convs, int(m.group(1))), m.group(2))),
        )
        add(
            r"roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)",
            renamed(lambda m: _join(_nth(mask_layers.convs, int(m.group(1)) - 1), m.group(2))),
        )
        add(
            r"roi_heads\.mask_predictor\.conv5_mask\.(weight|bias)",
            renamed(lambda m: f"{mask_head}deconv.{m.group(1)}"),
        )

        def mask_logits(m: re.Match[str], value: Tensor) -> tuple[str, Tensor]:
            keep = _coco_classes(layout.roi_num_classes, value.shape[0])
            # drop the background
            return f"{mask_head}predictor.{m.group(1)}", value[keep] if keep else value[1:]

        add(r"roi_heads\.mask_predictor\.mask_fcn_logits\.(weight|bias)", mask_logits)

    if layout.keypoint_head is not None:
        keypoint_head = layout.keypoint_head
        keypoint_layers = layout.keypoint_head_layers or SequentialLayers()

        def keypoint_conv(m: re.Match[str]) -> str | None:
            index = int(m.group(1))
            # Sequential(conv, relu, conv, relu, ...): only even indices are convs.
            return None if index % 2 else _join(_nth(keypoint_layers.convs, index // 2), m.group(2))

        add(r"roi_heads\.keypoint_head\.(\d+)\.(weight|bias)", renamed(keypoint_conv))
        add(
            r"roi_heads\.keypoint_predictor\.kps_score_lowres\.(weight|bias)",
            renamed(lambda m: f"{keypoint_head}score_lowres.{m.group(1)}"),
        )

    if layout.retinanet_head is not None:
        head = layout.retinanet_head

        def retinanet_logits(m: re.Match[str], value: Tensor) -> tuple[str, Tensor]:
            name = f"{head}cls_score.{m.group(1)}"
            classes = _TORCHVISION_COCO_CLASSES
            if value.shape[0] % classes or layout.retinanet_num_classes != len(COCO_CATEGORY_IDS):
                return name, value
            # Output channels are (anchor, class): keep the 80 used ids for every anchor.
            per_anchor = value.reshape(-1, classes, *value.shape[1:])
            return name, per_anchor[:, list(COCO_CATEGORY_IDS)].flatten(0, 1)

        for tv_name, subnet, predictor, predictor_rule in (
            ("classification_head", "cls_subnet", "cls_logits", retinanet_logits),
            (
                "regression_head",
                "bbox_subnet",
                "bbox_reg",
                renamed(lambda m: f"{head}bbox_pred.{m.group(1)}"),
            ),
        ):
            # RetinaNetHead's towers are Sequential(conv, relu, ...) without a norm: conv i sits
            # at index 2i in lazydet and in torchvision's old names (conv.{2i}); the current
            # names wrap each conv + relu: conv.{i}.0.
            add(
                rf"head\.{tv_name}\.conv\.(\d+)\.0\.(weight|bias)",
                renamed(
                    lambda m, subnet=subnet: f"{head}{subnet}.{2 * int(m.group(1))}.{m.group(2)}"
                ),
            )
            add(
                rf"head\.{tv_name}\.conv\.(\d+)\.(weight|bias)",
                renamed(lambda m, subnet=subnet: f"{head}{subnet}.{m.group(1)}.{m.group(2)}"),
            )
            add(rf"head\.{tv_name}\.{predictor}\.(weight|bias)", predictor_rule)
    return [(re.compile(pattern), rule) for pattern, rule in rules]


def _join(module_name: str | None, parameter: str) -> str | None:
    return None if module_name is None else f"{module_name}.{parameter}"


def convert_torchvision_state_dict(
    state_dict: Mapping[str, Tensor], model: torch.nn.Module
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Rename (and, for the R-CNN predictors, re-lay) a torchvision state dict for ``model``.

    Args:
        state_dict: a torchvision detection model's or ImageNet ResNet's state dict.
        model: the lazydet model it will be loaded into; the target names are looked up in it
            (see ``ModelLayout``).

    Returns:
        ``(converted, sources)``: the state dict in lazydet names, and for each converted name the
        checkpoint name it came from. Keys with no lazydet counterpart in ``model`` keep their
        torchvision name (so ``load_weights`` reports them as unexpected).
    """
    layout = ModelLayout.of(model)
    rules = _build_rules(layout, _fpn_levels(state_dict))
    converted: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue  # BatchNorm bookkeeping; lazydet's frozen norms have no such buffer
        result = None
        for pattern, rule in rules:
            match = pattern.fullmatch(key)
            if match is not None:
                result = rule(match, value)
                break
        name, tensor = result if result is not None else (key, value)
        converted[name] = tensor
        sources[name] = key
    return converted, sources
