"""Detectron2's 1x: 90k iterations at batch 16, decay by 10 at 60k and 80k."""

from ._steps import warmup_then_steps

schedule = warmup_then_steps(max_iter=90_000, steps=[60_000, 80_000])
