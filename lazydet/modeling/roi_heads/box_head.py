"""Box heads: pooled ROI features ``[R, C, P, P]`` -> one feature vector per ROI ``[R, D]``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lazydet.layers import (
    NormSpec,
    caffe2_msra_fill,
    caffe2_xavier_fill,
    check_positive_sizes,
    conv_norm_act_stack,
)


def _pair(size: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in pair):
        raise ValueError(f"{what} must be a positive int or a pair of them, got {size!r}.")
    return pair  # type: ignore[return-value]


class FastRCNNConvFCHead(nn.Module):
    """``len(conv_dims)`` 3x3 convs (+ norm) + ReLU, flatten, then ``len(fc_dims)`` FC + ReLU.

    With ``conv_dims=()`` and ``fc_dims=(1024, 1024)`` this is the "2fc" head of FPN detectors
    (torchvision's ``TwoMLPHead``, Detectron2's default); with ``conv_dims=(256,) * 4``,
    ``fc_dims=(1024,)`` and a norm it is the "4conv1fc" head.

    The input size is never written in a config: ``StandardROIHeads`` builds the head with the
    backbone's channel count and the pooler resolution it uses.

    Args:
        in_channels: channels of the pooled features (the backbone's ``in_features``).
        pooler_resolution: ``P`` or ``(P_h, P_w)``, the pooled feature size.
        conv_dims: output channels of each 3x3 conv.
        fc_dims: output size of each fully connected layer.
        norm: after each conv (see ``lazydet.layers.get_norm``): a name such as ``"GN"``, a
            class/partial called with the channel count, or None (no norm, convs keep their bias).

    ``forward(x: Tensor[R, in_channels, P_h, P_w]) -> Tensor[R, output_size]``; ``output_size`` is
    ``fc_dims[-1]``, or the flattened conv output size when ``fc_dims`` is empty.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        pooler_resolution: int | Sequence[int],
        conv_dims: Sequence[int] = (),
        fc_dims: Sequence[int] = (1024, 1024),
        norm: NormSpec = None,
    ) -> None:
        super().__init__()
        height, width = _pair(pooler_resolution, "FastRCNNConvFCHead pooler_resolution")
        check_positive_sizes(
            "FastRCNNConvFCHead", in_channels=in_channels, conv_dims=conv_dims, fc_dims=fc_dims
        )
        if not conv_dims and not fc_dims:
            raise ValueError("FastRCNNConvFCHead needs at least one conv or fc layer.")
        # Convs followed by ReLU get He init (fan_out), Detectron2's "MSRA fill".
        owner = "FastRCNNConvFCHead norm"
        convs = conv_norm_act_stack(
            in_channels, conv_dims, norm=norm, init=caffe2_msra_fill, owner=owner
        )
        layers: list[nn.Module] = list(convs)
        channels = conv_dims[-1] if conv_dims else in_channels
        layers.append(nn.Flatten())
        size = channels * height * width
        for dim in fc_dims:
            fc = nn.Linear(size, dim)
            caffe2_xavier_fill(fc)
            layers += [fc, nn.ReLU()]
            size = dim
        self.layers = nn.Sequential(*layers)
        self.output_size = size

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
