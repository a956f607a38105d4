"""ViTDet Mask R-CNN, ViT-L: as vitdet_mask_rcnn_b with the ViT-L backbone (lr decay 0.8)."""

# Re-exported names are the experiment's content (pyproject exempts projects/*/configs from F401).
from .vitdet_mask_rcnn_b import dataloader, evaluator, lsj, model, train

defaults = {
    "model/backbone": "vit_l",
    "dataset": "coco2017",
    "optimizer": "adamw",
    "schedule": "lsj_100ep",
}
