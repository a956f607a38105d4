"""The ``train`` node of the experiments: every ``TrainConfig`` knob written out with its default,
so that ``train.KEY=VALUE`` overrides need no '+' (docs/training.md)."""

import dataclasses

from lazydet.config import L
from lazydet.engine.train_config import TrainConfig


def train_node(**changes):
    """``L(TrainConfig)(...)`` with every field at its default, then ``changes``."""
    knobs = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return L(TrainConfig)(**{**knobs, **changes})
