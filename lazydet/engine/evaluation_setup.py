"""A config check: a run told to evaluate has something to evaluate with.

``train.eval_period > 0`` asks for an evaluation every that many iterations; with no
``evaluator`` in the config the trainer would silently never evaluate (projects/vitdet did that
for its whole 100-epoch schedule). Run before anything is built or written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lazydet.config import ConfigError, select_resolved

__all__ = ["check_evaluation_setup"]


def check_evaluation_setup(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError when ``train.eval_period`` is above 0 and the config has no
    ``evaluator`` (or one that is ``None``), naming both keys and the two ways out."""
    period = select_resolved(cfg, "train.eval_period")
    if not isinstance(period, int) or isinstance(period, bool) or period <= 0:
        return
    if cfg.get("evaluator") is not None:
        return
    raise ConfigError(
        f"train.eval_period={period} asks for an evaluation every {period} iterations, but the "
        "config has no evaluator: add one, e.g. evaluator = L(COCOEvaluator)(dataset_name="
        '"${dataset.test}") (from lazydet.evaluation import COCOEvaluator), or set '
        "train.eval_period=0."
    )
