"""RetinaNet R-50-FPN with torchvision's numerics, for torchvision's COCO weights.

torchvision's ``retinanet_resnet50_fpn``: P3-P5 from a ResNet-50 FPN on ``res3..res5`` (no P2:
the backbone is written here, so this experiment has no ``model/backbone`` choice) and P6/P7 from
P5; and what torchvision does differently from Detectron2: anchor sizes truncated to whole
pixels and rounded, ratio-major anchor order (the head's output channels follow it), anchors
spaced by ``padded size // feature size`` (``DefaultAnchorGenerator(spacing="padded_size")``,
which is not the stride on images padded to a size P7's stride 128 does not divide), plain L1 box
loss with a per-image normaliser, and up to 300 detections per image. Loaded with torchvision's
``retinanet_resnet50_fpn_coco-*.pth`` (``train.init_checkpoint=...``), it returns torchvision's
detections (``tests/modeling/test_torchvision_equivalence.py``).
"""

from lazydet.config import L
from lazydet.modeling.backbone import FPN, ResNet

from ._torchvision_numerics import use_torchvision_anchors
from .retinanet_fpn import *

defaults = {group: option for group, option in defaults.items() if group != "model/backbone"}
model.backbone = L(FPN)(
    bottom_up=L(ResNet)(depth=50, out_features=["res3", "res4", "res5"], freeze_at=2),
    in_features=["res3", "res4", "res5"],
    out_channels=256,
    top_block=None,
)
# torchvision: (x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in 32 .. 512.
model.anchor_generator.sizes = [
    [size, int(size * 2 ** (1 / 3)), int(size * 2 ** (2 / 3))] for size in (32, 64, 128, 256, 512)
]
use_torchvision_anchors(model.anchor_generator)
model.smooth_l1_beta = 0.0
model.loss_normalizer = "per_image"
model.score_threshold = 0.05
model.topk_candidates = 1000
model.nms_threshold = 0.5
model.max_detections_per_image = 300

# No starting weights by default (the torchvision:resnet50 of the base recipe does not suit this
# preset): give this preset's COCO weights, train.init_checkpoint=torchvision:retinanet_resnet50_fpn
# (docs/weights.md), or a file; null trains from scratch.
train.init_checkpoint = None
