"""The starting weights of the COCO recipes: torchvision's ImageNet ResNet-50."""


def start_from_torchvision_imagenet(*, model, train):
    """Set ``train.init_checkpoint`` to torchvision's ImageNet ResNet-50 and the model's input to
    what those weights were trained on, in place.

    As Detectron2 and MMDetection start from ImageNet. Those weights need RGB input, torchvision's
    ImageNet statistics on 0-255 pixels and the stride in the 3x3 conv (stride_in_1x1=False, the
    backbone options' setting). Stem and res2 stay frozen (freeze_at=2, FrozenBN). For
    model.backbone=resnet18/resnet101 give train.init_checkpoint=torchvision:resnet18/101; the ViT
    options have no ImageNet file lazydet converts: train.init_checkpoint=null trains from scratch
    (nothing frozen, the norms train). docs/weights.md lists the names.
    """
    train.init_checkpoint = "torchvision:resnet50"
    model.input_format = "RGB"
    model.pixel_mean = [123.675, 116.28, 103.53]
    model.pixel_std = [58.395, 57.12, 57.375]
