"""Detectron2's 1x length (90k iterations at batch 16) with a cosine decay instead of steps."""

from ._steps import warmup_then_cosine

schedule = warmup_then_cosine(max_iter=90_000)
