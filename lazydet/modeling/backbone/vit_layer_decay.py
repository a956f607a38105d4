"""ViTDet's layer-wise learning-rate decay: the rule, kept with the ViT it describes.

``lazydet.engine.optim.param_groups(vit_lr_decay=...)`` applies it: a parameter of an ``L``-block
ViT backbone at layer ``layer_id`` gets ``lr * rate ** (L + 1 - layer_id)``, so early layers move
less than the heads. The layer of a parameter is read from its name (``backbone....blocks.i...``),
as the ViT in :mod:`lazydet.modeling.backbone.vit` names its blocks.
"""

from __future__ import annotations

import re

from torch import nn

__all__ = ["VIT_LR_DECAY_RATES", "vit_lr_decay_rate", "vit_num_layers"]

# ViTDet's layer decay per ViT depth: ViT-B (12 blocks) 0.7, ViT-L (24) 0.8, ViT-H (32) 0.9
# (Li et al. 2022, "Exploring Plain Vision Transformer Backbones for Object Detection", and
# Detectron2's projects/ViTDet configs).
VIT_LR_DECAY_RATES = {12: 0.7, 24: 0.8, 32: 0.9}

_BLOCK_INDEX = re.compile(r"\.blocks\.(\d+)\.")


def vit_lr_decay_rate(name: str, *, lr_decay_rate: float, num_layers: int) -> float:
    """The lr factor of parameter ``name`` under ViTDet's layer-wise decay.

    Same semantics as Detectron2's ``get_vit_lr_decay_rate``: a parameter of the backbone
    (``name`` starts with ``backbone``) has layer id 0 if it belongs to the patch or position
    embedding, ``i + 1`` if it is in ``blocks.i``; every other parameter (the pyramid, the heads,
    and a block's ``residual`` branch) has layer id ``num_layers + 1``. The factor is
    ``lr_decay_rate ** (num_layers + 1 - layer_id)``: 1 for the heads, smallest for the
    embeddings.
    """
    layer_id = num_layers + 1
    if name.startswith("backbone"):
        if ".pos_embed" in name or ".patch_embed" in name:
            layer_id = 0
        elif ".blocks." in name and ".residual." not in name:
            layer_id = int(_BLOCK_INDEX.search(name).group(1)) + 1
    return lr_decay_rate ** (num_layers + 1 - layer_id)


def vit_num_layers(module: nn.Module) -> int:
    """The number of transformer blocks of a ViT backbone in ``module`` (0 if there is none):
    ``max(i) + 1`` over parameters named ``backbone....blocks.i....``."""
    indices = [
        int(m.group(1))
        for name, _ in module.named_parameters()
        if name.startswith("backbone") and (m := _BLOCK_INDEX.search(name))
    ]
    return max(indices) + 1 if indices else 0
