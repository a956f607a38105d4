"""ViTDet Mask R-CNN, ViT-B: LSJ data, AdamW with layer-wise lr decay, 100-epoch schedule."""

# This directory layers over lazydet's conf/ (LAZYDET_CONFIG_PATH=projects/vitdet/configs), so
# the experiment starts from lazydet's Mask R-CNN and uses its options (vit_b, coco2017, adamw,
# lsj_100ep); only what ViTDet (Li et al. 2022) does differently is written here.
import torchvision.transforms.v2 as T
from lazydet.conf.mask_rcnn_fpn import dataloader, evaluator, model, train

from lazydet.config import L
from lazydet.data import large_scale_jitter, resize_longest_edge
from lazydet.modeling.roi_heads import FastRCNNConvFCHead, MaskRCNNConvUpsampleHead

defaults = {
    "model/backbone": "vit_b",
    "dataset": "coco2017",
    "optimizer": "adamw",  # lazydet's adamw: param_groups(vit_lr_decay="auto") -> 0.7 for ViT-B
    "schedule": "lsj_100ep",
}

# The side of LSJ's square crops and of the test-time resize; the ViT's global attention tables
# are sized for it too. One key, so `lsj.image_size=512` changes all three together.
lsj = dict(image_size=1024, scale_range=[0.1, 2.0])

# ViTDet's heads: 4 convs + 1 fc box head and LayerNorm in the box and mask heads (the paper's
# "LN in the heads"), RPN with two shared convs.
model.proposal_generator.head.num_convs = 2
model.roi_heads.box_head = L(FastRCNNConvFCHead)(
    conv_dims=[256, 256, 256, 256], fc_dims=[1024], norm="LN", _partial_=True
)
model.roi_heads.mask_head = L(MaskRCNNConvUpsampleHead)(
    conv_dims=[256, 256, 256, 256], norm="LN", _partial_=True
)

# Large-scale jitter: rescale by 0.1-2.0 of a image_size square, crop (or pad) to the square,
# then flip. torchvision.transforms.v2 moves the boxes and masks with the image.
dataloader["train"].mapper.augmentations = L(T.Compose)(
    transforms=[
        L(large_scale_jitter)(image_size="${lsj.image_size}", scale_range="${lsj.scale_range}"),
        L(T.RandomHorizontalFlip)(p=0.5),
    ]
)
dataloader["train"].total_batch_size = 64
# Test: the long edge to image_size, the aspect ratio kept (the model pads to the square).
dataloader["test"].mapper.augmentations = L(T.Compose)(
    transforms=[L(resize_longest_edge)(max_size="${lsj.image_size}")]
)

# Mixed precision is part of the recipe on GPUs; add train.amp=fp16 there (a CPU has no fp16).
train.checkpoint_period = 5000
# COCO AP on dataset.test every 5000 iterations and at the end (lazydet's COCO evaluator).
train.eval_period = 5000
