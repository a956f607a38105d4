"""AdamW as in ViTDet's recipes (lr 1e-4 for a total batch of 64, no decay on norms)."""

import torch

from lazydet.config import L, ref
from lazydet.engine.optim import param_groups

optimizer = L(torch.optim.AdamW)(
    # No decay on norms, biases and the position embedding; with a ViT backbone, ViTDet's
    # layer-wise lr decay (0.7 for vit_b, 0.8 for vit_l; nothing changes for a ResNet).
    params=L(param_groups)(
        module=ref("model"),
        weight_decay_norm=0.0,
        weight_decay_bias=0.0,
        overrides={"pos_embed": {"weight_decay": 0.0}},
        vit_lr_decay="auto",
        base_lr="${optimizer.lr}",
    ),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.1,
)
