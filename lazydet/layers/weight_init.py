"""Weight initialisations shared by the model parts (each fills ``weight`` and zeroes ``bias``).

They take any module with a ``weight`` (conv, transposed conv, linear) and an optional ``bias``.
"""

from __future__ import annotations

from torch import nn

__all__ = ["caffe2_msra_fill", "caffe2_xavier_fill", "normal_fill"]


def _zero_bias(module: nn.Module) -> None:
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


def caffe2_xavier_fill(module: nn.Module) -> None:
    """Caffe2's XavierFill (uniform, variance 1/fan_in) and zero bias, in place.

    Detectron2's FPN, simple feature pyramid and box-head FC layers, and torchvision's FPN.
    """
    # kaiming_uniform_ with a=1 draws from U(-sqrt(3/fan_in), sqrt(3/fan_in)), variance 1/fan_in.
    nn.init.kaiming_uniform_(module.weight, a=1)
    _zero_bias(module)


def caffe2_msra_fill(module: nn.Module) -> None:
    """Caffe2's MSRAFill (He normal, fan_out, for layers followed by ReLU) and zero bias, in place.

    Detectron2's ResNet, mask/keypoint head convs and box-head convs.
    """
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    _zero_bias(module)


def normal_fill(module: nn.Module, std: float = 0.01) -> None:
    """Normal weights with standard deviation ``std`` and zero bias, in place (RPN/RetinaNet heads)."""
    nn.init.normal_(module.weight, std=std)
    _zero_bias(module)
