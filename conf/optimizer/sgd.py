"""SGD with momentum, Detectron2's COCO recipe (lr 0.02 for a total batch of 16)."""

import torch

from lazydet.config import L, ref
from lazydet.engine.optim import param_groups

optimizer = L(torch.optim.SGD)(
    params=L(param_groups)(module=ref("model"), weight_decay_norm=0.0),
    lr=0.02,
    momentum=0.9,
    weight_decay=1e-4,
)
