"""ResNet-18 + FPN: p2..p6, 256 channels.

Starts from torchvision's ImageNet ResNet-18 with train.init_checkpoint=torchvision:resnet18 (RGB,
ImageNet mean/std, stride in the 3x3 conv); stem and res2 frozen with FrozenBN, unless
train.init_checkpoint=null, which unfreezes them and trains BN.
"""

from ._resnet_fpn import resnet_fpn

backbone = resnet_fpn(depth=18)
