"""ResNet-50 + FPN: p2..p6, 256 channels."""

from ._resnet_fpn import resnet_fpn

backbone = resnet_fpn(depth=50)
