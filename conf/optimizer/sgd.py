"""SGD with momentum, Detectron2's COCO recipe (lr 0.02 for a total batch of 16)."""

import torch

from lazydet.config import L, ref
from lazydet.engine.optim import param_groups

optimizer = L(torch.optim.SGD)(
    # No decay on norms and biases; with a ViT backbone, ViTDet's layer-wise lr decay (0.7 for
    # vit_b, 0.8 for vit_l; nothing changes for a ResNet).
    params=L(param_groups)(
        module=ref("model"),
        weight_decay_norm=0.0,
        weight_decay_bias=0.0,
        vit_lr_decay="auto",
        base_lr="${optimizer.lr}",
    ),
    lr=0.02,
    momentum=0.9,
    weight_decay=1e-4,
)
