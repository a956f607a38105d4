"""The one way lazydet turns a config into a model with its weights.

``train`` (``train.init_checkpoint``), ``evaluate``, ``Predictor.from_config`` /
``from_checkpoint`` (``predict``) and any later command (export) build their model here:
``build_model`` instantiates ``cfg.model`` and hands the weights to
:func:`lazydet.checkpoint.start.load_start_weights` (``load_weights`` with the config's
``init_checkpoint_skip`` / ``init_checkpoint_strict`` for training, a full fit otherwise), whose
``LoadReport`` (what matched, what did not) is logged and returned. ``load_model_weights`` is
the loading half, for a model already built with the rest of a config (training builds model
and optimizer together).

Errors: weights that do not fit raise ``WeightsMisfitError`` (bad input: the commands exit 1);
an unreadable file or an unknown weights name becomes one ``ConfigError`` naming the key
(exit 2).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from .load import LoadReport, WeightsMisfitError
from .start import RANDOM_WEIGHTS, load_start_weights

__all__ = ["RANDOM_WEIGHTS", "build_model", "load_model_weights"]

logger = logging.getLogger(__name__)

Weights = str | os.PathLike | Mapping[str, Tensor]


def load_model_weights(
    model: nn.Module,
    weights: Weights,
    *,
    cfg: Any = None,
    training: bool = True,
    key: str = "train.init_checkpoint",
) -> LoadReport | None:
    """Load ``weights`` (a path, a name such as ``torchvision:resnet50``, a state dict) into
    ``model``; log and return the report (None for ``"random"``: nothing loaded).

    ``training=True`` applies ``cfg.train.init_checkpoint_skip`` / ``init_checkpoint_strict``;
    ``training=False`` (evaluate, predict) requires the weights to fit the whole model.
    """
    from lazydet.config import ConfigError

    try:
        return load_start_weights(model, cfg or {}, checkpoint=weights, training=training)
    except WeightsMisfitError:
        raise  # the file is at fault, not the config: exit 1 with the report's summary
    except (OSError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from e


def build_model(
    cfg: Any,
    *,
    weights: Weights | None = None,
    training: bool = False,
    key: str = "train.init_checkpoint",
) -> tuple[nn.Module, LoadReport | None]:
    """``(model, report)``: ``cfg.model`` built, with ``weights`` loaded (default: the config's
    ``train.init_checkpoint``; none set or ``"random"``: the initial weights and report None)."""
    from lazydet.config import ConfigError, instantiate, select

    node = select(cfg, "model")
    if node is None:
        raise ConfigError("The config has no 'model' to build.")
    model = instantiate(node)
    if weights is None:
        weights = select(cfg, "train.init_checkpoint") or None
    else:
        key = "weights"
    if weights is None or (isinstance(weights, str) and not weights):
        return model, None
    report = load_model_weights(model, weights, cfg=cfg, training=training, key=key)
    return model, report
