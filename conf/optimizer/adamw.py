"""AdamW as in ViTDet's recipes (lr 1e-4 for a total batch of 64, no decay on norms)."""

import torch

from lazydet.config import L, ref
from lazydet.engine.optim import param_groups

optimizer = L(torch.optim.AdamW)(
    params=L(param_groups)(module=ref("model"), weight_decay_norm=0.0),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.1,
)
