"""What Detectron2's model-zoo R-50-FPN detectors do differently from lazydet's defaults.

Shared by the ``detectron2_*`` presets. lazydet's defaults are Detectron2's recipe, so what is
left is the backbone the ``.pkl`` files were trained with and two output conventions:

* the MSRA ResNet-50 (``R-50.pkl``): stride in the 1x1 conv of each bottleneck, BGR images with
  ``pixel_std = 1``. ``load_weights`` reverses the stem's input channels (``detectron2_to_rgb``),
  so the model reads lazydet's RGB images with the same statistics in RGB order;
* masks pasted with ``grid_sample`` (``paste_masks_grid_sample``), keypoint scores as softmax
  probabilities, RetinaNet's NMS on unclipped boxes.
"""

from lazydet.config import L
from lazydet.modeling.backbone import FPN, LastLevelMaxPool, ResNet

# Detectron2's BGR means (103.53, 116.28, 123.675) in RGB order, and its unit std.
DETECTRON2_PIXEL_MEAN = [123.675, 116.28, 103.53]
DETECTRON2_PIXEL_STD = [1.0, 1.0, 1.0]


def detectron2_resnet50_fpn(*, in_features=("res2", "res3", "res4", "res5"), top_block=None):
    """The R-50-FPN of Detectron2's model zoo: MSRA ResNet-50 (stride in 1x1, frozen BN, stem
    and res2 frozen) and an FPN with 256 channels on ``in_features``."""
    return L(FPN)(
        bottom_up=L(ResNet)(
            depth=50,
            out_features=list(in_features),
            freeze_at=2,
            norm="FrozenBN",
            stride_in_1x1=True,
        ),
        in_features=list(in_features),
        out_channels=256,
        top_block=top_block if top_block is not None else L(LastLevelMaxPool)(),
    )


def use_detectron2_inputs(model) -> None:
    """Detectron2's pixel statistics (RGB order, for weights loaded with the stem reversed)."""
    model.pixel_mean = DETECTRON2_PIXEL_MEAN
    model.pixel_std = DETECTRON2_PIXEL_STD
