"""One norm factory for every model part: ``get_norm(norm, channels)``.

``norm`` may be (as timm's ``get_norm_layer``):

* a name: ``"BN"`` (``nn.BatchNorm2d``), ``"SyncBN"`` (``nn.SyncBatchNorm``), ``"FrozenBN"``
  (torchvision's ``FrozenBatchNorm2d``: fixed statistics, eps 1e-5 like ``nn.BatchNorm2d`` so
  trained statistics give identical outputs once frozen), ``"GN"`` (``nn.GroupNorm`` with 32
  groups, Detectron2's choice) or ``"LN"`` (``ChannelLayerNorm``: LayerNorm over the channels of
  a ``[B, C, H, W]`` map, eps 1e-6 as ViTDet);
* a class or any callable taking the channel count, e.g. ``nn.BatchNorm2d`` or
  ``functools.partial(nn.GroupNorm, 16)`` (in a config: ``L(nn.GroupNorm)(num_groups=16,
  _partial_=True)``);
* ``None`` or ``""``: no norm (``get_norm`` returns None, and convs then keep their bias).

Every norm here maps ``Tensor[B, C, H, W]`` to the same shape.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["NORM_NAMES", "ChannelLayerNorm", "NormSpec", "get_norm", "has_norm"]

NormSpec = str | Callable[[int], nn.Module] | None


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dimension of ``Tensor[B, C, H, W]`` (each pixel normalized
    separately), with per-channel ``weight`` and ``bias`` of shape ``[C]``; eps 1e-6 as ViTDet.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        # F.layer_norm normalizes trailing dims, so move channels last and back.
        x = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(32, channels)


_BY_NAME: dict[str, Callable[[int], nn.Module]] = {
    "BN": nn.BatchNorm2d,
    "SyncBN": nn.SyncBatchNorm,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": _group_norm,
    "LN": ChannelLayerNorm,
}
NORM_NAMES = tuple(_BY_NAME)


def has_norm(norm: NormSpec) -> bool:
    """Whether ``norm`` asks for a norm layer (``None`` and ``""`` do not)."""
    return norm is not None and norm != ""


def get_norm(norm: NormSpec, channels: int, *, owner: str = "norm") -> nn.Module | None:
    """The norm layer ``norm`` names for ``channels`` channels, or None for no norm.

    Raises ValueError (naming ``owner``, the argument at fault) for an unknown name and
    TypeError for a value that is neither a name nor a callable, or a callable that does not
    return a module.
    """
    if not has_norm(norm):
        return None
    if isinstance(norm, str):
        if norm not in _BY_NAME:
            raise ValueError(
                f"{owner}={norm!r} is not a known norm; use one of {', '.join(NORM_NAMES)}, "
                "None, or a class/partial called with the channel count "
                "(e.g. functools.partial(nn.GroupNorm, 16))."
            )
        return _BY_NAME[norm](channels)
    if not callable(norm):
        raise TypeError(
            f"{owner} must be a norm name ({', '.join(NORM_NAMES)}), a class or partial called "
            f"with the channel count, or None; got {type(norm).__name__}."
        )
    module = norm(channels)
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"{owner}={norm!r} returned {type(module).__name__} for {channels} channels, not an "
            "nn.Module."
        )
    return module
