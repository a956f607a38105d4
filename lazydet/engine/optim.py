"""Optimizer parameter groups, written so configs can build them (``L(param_groups)(...)``).

The rules, applied per parameter (by its qualified name in ``module.named_parameters()``):

- no weight decay on normalisation layers (``weight_decay_norm``) and biases
  (``weight_decay_bias``), when those are given;
- per-name ``overrides`` (``{"pos_embed": {"weight_decay": 0.0}}``, matched on the last name
  component, as Detectron2's ``get_default_optimizer_params``);
- ViT layer-wise learning-rate decay (``vit_lr_decay``): a parameter at depth ``i`` of an
  ``L``-block ViT backbone gets ``lr * rate ** (L + 1 - layer_id)`` (the rule lives with the ViT:
  :mod:`lazydet.modeling.backbone.vit_layer_decay`), so early layers move less than the heads.

Parameters with the same resulting hyper-parameters share one group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from torch import nn

from lazydet.modeling.backbone.vit_layer_decay import (
    VIT_LR_DECAY_RATES,
    vit_lr_decay_rate,
    vit_num_layers,
)

__all__ = ["param_groups"]

# Normalisation layers whose affine parameters usually get no weight decay.
_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def _is_norm(module: nn.Module) -> bool:
    # torch's norm classes, plus the channels-first LayerNorm of a feature pyramid and other
    # models' own norm layers, which the engine cannot import: their class names say "Norm".
    return isinstance(module, _NORM_TYPES) or "Norm" in type(module).__name__


_OVERRIDE_KEYS = ("lr", "weight_decay", "lr_factor")


def _check_overrides(overrides: Mapping[str, Mapping[str, float]]) -> None:
    for key, values in overrides.items():
        unknown = [k for k in values if k not in _OVERRIDE_KEYS]
        if unknown:
            raise ValueError(
                f"param_groups overrides[{key!r}] sets {unknown}; allowed: {list(_OVERRIDE_KEYS)}."
            )


def param_groups(
    *,
    module: nn.Module,
    weight_decay_norm: float | None = None,
    weight_decay_bias: float | None = None,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
    vit_lr_decay: float | Literal["auto"] | None = None,
    base_lr: float | None = None,
) -> list[dict[str, Any]]:
    """The trainable parameters of ``module`` as optimizer parameter groups.

    Args:
        module: the model (parameter names are read relative to it: ``backbone.net.blocks.3...``).
        weight_decay_norm: weight decay of normalisation layers' parameters (``None``: the
            optimizer's own).
        weight_decay_bias: weight decay of biases (``None``: the optimizer's own).
        overrides: per-name settings, keyed by a parameter's last name component
            (``"pos_embed"``): ``weight_decay``, ``lr`` (absolute) or ``lr_factor`` (times the
            lr). They win over the norm and bias rules.
        vit_lr_decay: layer-wise lr decay rate for a ViT backbone (:func:`vit_lr_decay_rate`);
            ``"auto"``: ViTDet's rate for the backbone's depth (:data:`VIT_LR_DECAY_RATES`) when
            ``module`` has a ViT backbone, no decay otherwise (a ResNet); ``None``: no decay.
        base_lr: the optimizer's lr (``"${optimizer.lr}"`` in a config); needed as soon as a
            group's lr differs from it (lr decay or an ``lr_factor`` override), since a group
            that sets ``lr`` no longer follows the optimizer's default.

    Frozen parameters (``requires_grad=False``) are left out and a parameter shared by several
    modules appears once, so the optimizer never steps one tensor twice.
    """
    overrides = dict(overrides or {})
    _check_overrides(overrides)
    num_layers = vit_num_layers(module) if vit_lr_decay is not None else 0
    rate: float | None = None
    if vit_lr_decay == "auto":
        if num_layers:
            if num_layers not in VIT_LR_DECAY_RATES:
                raise ValueError(
                    f"param_groups vit_lr_decay='auto' knows ViTDet's rates for "
                    f"{sorted(VIT_LR_DECAY_RATES)} blocks, but the backbone has {num_layers}. "
                    "Set optimizer.params.vit_lr_decay to a number (e.g. 0.8)."
                )
            rate = VIT_LR_DECAY_RATES[num_layers]
    elif vit_lr_decay is not None:
        if not 0 < float(vit_lr_decay) <= 1:
            raise ValueError(
                f"param_groups vit_lr_decay={vit_lr_decay!r} must be in (0, 1], 'auto' or null."
            )
        if num_layers == 0:
            raise ValueError(
                f"param_groups vit_lr_decay={vit_lr_decay} asks for ViT layer-wise lr decay, but "
                "the model has no ViT backbone (no parameter named backbone...blocks.N...). Use "
                "vit_lr_decay='auto' (decay only for ViT backbones) or null."
            )
        rate = float(vit_lr_decay)

    names = {id(p): n for n, p in module.named_parameters()}
    grouped: dict[tuple, dict[str, Any]] = {}
    seen: set[int] = set()
    for submodule in module.modules():
        for short_name, param in submodule.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            name = names[id(param)]
            settings: dict[str, float] = {}
            if weight_decay_norm is not None and _is_norm(submodule):
                settings["weight_decay"] = weight_decay_norm
            elif weight_decay_bias is not None and short_name == "bias":
                settings["weight_decay"] = weight_decay_bias
            factor = (
                vit_lr_decay_rate(name, lr_decay_rate=rate, num_layers=num_layers)
                if rate is not None
                else 1.0
            )
            override = dict(overrides.get(short_name, {}))
            factor *= override.pop("lr_factor", 1.0)
            settings.update(override)
            if factor != 1.0 and "lr" not in settings:
                if base_lr is None:
                    raise ValueError(
                        f"param_groups: parameter {name!r} gets lr factor {factor:.4g} (layer "
                        "decay or an lr_factor override) but base_lr is not set. Pass "
                        "base_lr='${optimizer.lr}' in the config."
                    )
                settings["lr"] = base_lr * factor
            key = tuple(sorted(settings.items()))
            grouped.setdefault(key, {"params": [], **settings})["params"].append(param)
    # The group without any setting first, as before: it holds most parameters.
    return sorted(grouped.values(), key=lambda g: len(g) > 1)
