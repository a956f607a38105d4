"""The quick start's schedule: 1200 iterations at batch 8, short warm-up, decay at 75% and 92%."""

from ._steps import warmup_then_steps

schedule = warmup_then_steps(max_iter=1200, steps=[900, 1100], warmup_iters=100)
