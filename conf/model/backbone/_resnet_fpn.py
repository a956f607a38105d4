"""Shared by the ResNet options: ResNet bottom-up + FPN, the p2..p6 / 256-channel contract."""

from lazydet.config import L
from lazydet.modeling.backbone import FPN, LastLevelMaxPool, ResNet


def resnet_fpn(*, depth: int) -> dict:
    # stride_in_1x1=False (torchvision's ResNet v1.5 layout) matches torchvision's ImageNet
    # weights; set it to True for Detectron2's MSRA checkpoints.
    return L(FPN)(
        bottom_up=L(ResNet)(
            depth=depth, out_features=["res2", "res3", "res4", "res5"], freeze_at=2, norm="FrozenBN"
        ),
        in_features=["res2", "res3", "res4", "res5"],
        out_channels=256,
        top_block=L(LastLevelMaxPool)(),
    )
