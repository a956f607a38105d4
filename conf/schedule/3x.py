"""Detectron2's 3x: 270k iterations at batch 16, decay by 10 at 210k and 250k."""

from ._steps import warmup_then_steps

schedule = warmup_then_steps(max_iter=270_000, steps=[210_000, 250_000])
