"""One conv-norm-activation block, ``conv_norm_act``, and stacks of it, ``conv_norm_act_stack``.

Both return plain ``nn.Sequential`` s whose children are ``conv[, norm][, activation]`` (for a
stack: those of every block in a row), so the parameter names are the flat ones checkpoints use:
``convs.0`` conv, ``convs.1`` norm or ReLU, ... (Detectron2 and torchvision head layouts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from lazydet.layers.norm import NormSpec, get_norm, has_norm

__all__ = ["conv_norm_act", "conv_norm_act_stack"]


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    *,
    stride: int = 1,
    norm: NormSpec = None,
    activation: Callable[[], nn.Module] | None = None,
    bias: bool | None = None,
    init: Callable[[nn.Module], None] | None = None,
    owner: str = "conv_norm_act",
) -> nn.Sequential:
    """``nn.Sequential(conv[, norm][, activation])``: ``[B, in, H, W] -> [B, out, H/s, W/s]``.

    Args:
        in_channels, out_channels, kernel_size, stride: of the ``nn.Conv2d`` ("same" padding,
            ``kernel_size // 2``).
        norm: see ``lazydet.layers.get_norm``; None for no norm.
        activation: called with no argument to build the activation (``nn.ReLU``), or None.
        bias: whether the conv has a bias; None: only without a norm (a norm's shift replaces it).
        init: fills the conv in place (``caffe2_xavier_fill`` etc.); None keeps PyTorch's default.
        owner: names the caller in errors (e.g. ``"FPN norm"``).
    """
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        bias=not has_norm(norm) if bias is None else bias,
    )
    if init is not None:
        init(conv)
    layers: list[nn.Module] = [conv]
    norm_layer = get_norm(norm, out_channels, owner=owner)
    if norm_layer is not None:
        layers.append(norm_layer)
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


def conv_norm_act_stack(
    in_channels: int,
    dims: Sequence[int],
    kernel_size: int = 3,
    *,
    norm: NormSpec = None,
    activation: Callable[[], nn.Module] | None = nn.ReLU,
    init: Callable[[nn.Module], None] | None = None,
    owner: str = "conv_norm_act_stack",
) -> nn.Sequential:
    """``len(dims)`` ``conv_norm_act`` blocks in a row, flattened into one ``nn.Sequential``.

    Block ``i`` maps ``dims[i - 1]`` (``in_channels`` for the first) to ``dims[i]`` channels; an
    empty ``dims`` gives an empty (identity) Sequential. The output channels are
    ``dims[-1]`` (``in_channels`` when empty).
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for dim in dims:
        layers.extend(
            conv_norm_act(
                channels, dim, kernel_size, norm=norm, activation=activation, init=init, owner=owner
            )
        )
        channels = dim
    return nn.Sequential(*layers)
