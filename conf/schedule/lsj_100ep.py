"""ViTDet's 100-epoch LSJ schedule: 184,375 iterations at batch 64, decay at 88.9% and 96.3%."""

from ._steps import warmup_then_steps

schedule = warmup_then_steps(max_iter=184_375, steps=[163_889, 177_546], warmup_iters=250)
