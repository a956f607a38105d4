"""Optimizer parameter groups, written so configs can build them (``L(param_groups)(...)``)."""

from __future__ import annotations

from typing import Any

from torch import nn

# Normalisation layers whose affine parameters usually get no weight decay.
_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def param_groups(
    *,
    module: nn.Module,
    weight_decay_norm: float | None = None,
    weight_decay_bias: float | None = None,
) -> list[dict[str, Any]]:
    """The trainable parameters of ``module`` as optimizer parameter groups.

    Parameters of normalisation layers get ``weight_decay_norm`` and biases get
    ``weight_decay_bias`` when those are given; everything else keeps the optimizer's own weight
    decay. Frozen parameters (``requires_grad=False``) and parameters shared by several modules
    appear once or not at all, so the optimizer never steps one tensor twice.
    """
    seen: set[int] = set()
    default: list[nn.Parameter] = []
    norm: list[nn.Parameter] = []
    bias: list[nn.Parameter] = []
    for submodule in module.modules():
        for name, param in submodule.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if weight_decay_norm is not None and isinstance(submodule, _NORM_TYPES):
                norm.append(param)
            elif weight_decay_bias is not None and name == "bias":
                bias.append(param)
            else:
                default.append(param)
    groups: list[dict[str, Any]] = [{"params": default}]
    if norm:
        groups.append({"params": norm, "weight_decay": weight_decay_norm})
    if bias:
        groups.append({"params": bias, "weight_decay": weight_decay_bias})
    return [g for g in groups if g["params"]]
