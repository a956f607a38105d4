"""The one way lazydet turns a config into a model with its weights.

``train`` (``train.init_checkpoint``), ``evaluate``, ``Predictor.from_config`` /
``from_checkpoint`` (``predict``) and any later command (export) build their model here:
``build_model`` instantiates ``cfg.model`` and hands the weights to
:func:`lazydet.checkpoint.load_weights`, whose ``LoadReport`` (what matched, what did not) is
logged and returned. ``load_model_weights`` is the loading half, for a model already built with
the rest of a config (training builds model and optimizer together).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from torch import nn

from .load import LoadReport, load_weights

__all__ = ["build_model", "load_model_weights"]

logger = logging.getLogger(__name__)


def load_model_weights(
    model: nn.Module, weights: str | os.PathLike, *, key: str = "train.init_checkpoint"
) -> LoadReport:
    """Load ``weights`` into ``model`` with ``load_weights``; log and return its report.

    An unreadable file or weights that do not fit become one ``ConfigError`` naming ``key`` (the
    config key or option the weights came from).
    """
    from lazydet.config import ConfigError

    try:
        report = load_weights(model, weights)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from e
    logger.info("%s", report)
    return report


def build_model(
    cfg: Any, *, weights: str | os.PathLike | None = None, key: str = "train.init_checkpoint"
) -> tuple[nn.Module, LoadReport | None]:
    """``(model, report)``: ``cfg.model`` built, with ``weights`` loaded (default: the config's
    ``train.init_checkpoint``; none set: the initial weights and report None)."""
    from lazydet.config import ConfigError, instantiate, select

    node = select(cfg, "model")
    if node is None:
        raise ConfigError("The config has no 'model' to build.")
    model = instantiate(node)
    if weights is None:
        weights = select(cfg, "train.init_checkpoint") or None
    else:
        key = "weights"
    report = load_model_weights(model, weights, key=key) if weights else None
    return model, report
