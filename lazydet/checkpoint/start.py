"""The weights a run starts from: ``train.init_checkpoint`` and its two companions.

``load_start_weights(model, cfg)`` is the one way train, evaluate and predict load
``train.init_checkpoint``: a weights name or a file, which must fit the part of the model it is
for (``LoadReport.require_fit``), unless ``train.init_checkpoint_skip`` names the layers to start
from their initial values (fine-tuning with another ``num_classes``) or
``train.init_checkpoint_strict=false`` accepts a partial load (the report lists what was left).

``configure_start(cfg)`` makes a from-scratch run (``train.init_checkpoint=null``) train every
layer: a ResNet written with frozen stages (``freeze_at > 0``) or ``FrozenBN`` for pretrained
weights gets ``freeze_at=0`` and ``norm="BN"`` (a frozen random layer is never right), and the
run says so in one log line.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from lazydet.checkpoint.load import LoadReport, load_weights
from lazydet.checkpoint.named_weights import is_weights_name, named_weights
from lazydet.config.lazy import target_nodes

__all__ = ["RANDOM_WEIGHTS", "configure_start", "load_start_weights"]

# train.init_checkpoint=random: no weights, on purpose (predicting without weights is refused
# otherwise; for training it means the same as null).
RANDOM_WEIGHTS = "random"

logger = logging.getLogger("lazydet.checkpoint")

_RESNET_TARGETS = ("lazydet.modeling.backbone.resnet.ResNet", "lazydet.modeling.backbone.ResNet")


def _train_node(cfg: Any) -> Any:
    node = cfg.get("train") if hasattr(cfg, "get") else None
    return node if node is not None else {}


def load_start_weights(
    model: nn.Module, cfg: Any, *, checkpoint: Any = None, training: bool = True
) -> LoadReport | None:
    """Load ``checkpoint`` (default ``cfg.train.init_checkpoint``) into ``model``; log the report.

    For training (``training=True``) ``cfg.train.init_checkpoint_skip`` and
    ``init_checkpoint_strict`` apply. For evaluating or predicting (``training=False``) the
    weights must fit the whole model: a fine-tuning config's skip list must not leave the
    trained heads of its own ``model_final.pth`` at random values.

    Returns None when there is nothing to load. Raises ``WeightsMisfitError`` (a ``ValueError``)
    when the file leaves tensors missing or mismatched and strictness is on (the default); the
    model is then unchanged.
    """
    train = _train_node(cfg)
    checkpoint = checkpoint if checkpoint is not None else train.get("init_checkpoint")
    if not checkpoint or checkpoint == RANDOM_WEIGHTS:
        return None
    skip = list(train.get("init_checkpoint_skip") or []) if training else []
    strict = train.get("init_checkpoint_strict") if training else True
    strict = True if strict is None else bool(strict)
    report = load_weights(model, checkpoint, require_fit=strict, skip=skip)
    logger.info("%s", report)
    if not strict and report.misfit:
        logger.warning(
            "train.init_checkpoint_strict=false: %d tensors left at their initial values "
            "(listed above as missing or mismatched).",
            len(report.misfit),
        )
    return report


def _resnet_nodes(model: Any) -> list[tuple[str, Any]]:
    """``(dotted path, node)`` of every ``L(ResNet)(...)`` node under the ``model`` node."""
    return [
        (path, node)
        for path, node in target_nodes(model, "model")
        if node["_target_"] in _RESNET_TARGETS or str(node["_target_"]).endswith(".ResNet")
    ]


def configure_start(cfg: Any) -> list[str]:
    """With no ``train.init_checkpoint``, unfreeze every ResNet node of ``cfg.model`` in place.

    Returns the dotted paths changed (empty when the run starts from weights, or nothing was
    frozen), after logging one line about them.
    """
    if not hasattr(cfg, "get"):
        return []
    model = cfg.get("model")
    if model is None:
        return []
    checkpoint = _train_node(cfg).get("init_checkpoint")
    if (
        is_weights_name(checkpoint)
        and named_weights(str(checkpoint)).imagenet
        and not _resnet_nodes(model)
    ):
        # A COCO recipe names an ImageNet ResNet; a backbone option without a ResNet (the ViTs:
        # no public ImageNet file that lazydet converts) starts from scratch, said in the log.
        logger.warning(
            "train.init_checkpoint=%s is an ImageNet ResNet, but this model's backbone has no "
            "ResNet: training it from scratch instead (set train.init_checkpoint=null to say so, "
            "or give weights made for this backbone).",
            checkpoint,
        )
        _train_node(cfg)["init_checkpoint"] = None
        return []
    if checkpoint not in (None, "", RANDOM_WEIGHTS):
        return []
    changed = []
    for path, node in _resnet_nodes(model):
        freeze_at = node.get("freeze_at", 2)  # ResNet's defaults: freeze_at=2, norm="FrozenBN"
        norm = node.get("norm", "FrozenBN")
        if freeze_at or norm == "FrozenBN":
            node["freeze_at"] = 0
            if norm == "FrozenBN":
                node["norm"] = "BN"
            changed.append(path)
    if changed:
        logger.warning(
            "train.init_checkpoint=null: training from scratch, so nothing is frozen and the "
            "norms train (%s: freeze_at=0, FrozenBN -> BN).",
            ", ".join(changed),
        )
    return changed
