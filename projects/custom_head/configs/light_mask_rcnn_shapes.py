"""lazydet's quickstart Mask R-CNN on shapes, with the project's LightMaskHead as mask head."""

# The whole integration: import the class, put it where the old head was. StandardROIHeads builds
# it with in_channels and num_classes, so only the head's own knobs are written here.
from custom_head import LightMaskHead

# Re-exported names are the experiment's content (pyproject exempts projects/*/configs from F401).
from lazydet.conf.quickstart import dataloader, defaults, model, train

from lazydet.config import L
from lazydet.evaluation import COCOEvaluator

model.roi_heads.mask_head = L(LightMaskHead)(hidden_dim=32, num_convs=2, _partial_=True)

# COCO AP on the test split at the end of training (and every train.eval_period iterations).
evaluator = L(COCOEvaluator)(dataset_name="${dataset.test}")
