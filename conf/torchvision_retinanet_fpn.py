"""RetinaNet R-50-FPN with torchvision's numerics: loads ``retinanet_resnet50_fpn`` weights exactly.

Same architecture as ``retinanet_fpn`` (P6/P7 from P5); what changes is what torchvision's
``retinanet_resnet50_fpn`` does differently from Detectron2: anchor sizes truncated to whole
pixels and rounded, ratio-major anchor order (the head's output channels follow it), plain L1
box loss with a per-image normaliser, and up to 300 detections per image. With
``train.init_checkpoint`` pointing at torchvision's ``retinanet_resnet50_fpn_coco-*.pth`` (91
classes) it returns torchvision's detections (``tests/modeling/test_torchvision_equivalence.py``).
"""

from .retinanet_fpn import *

# torchvision: (x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in 32 .. 512.
model.anchor_generator.sizes = [
    [size, int(size * 2 ** (1 / 3)), int(size * 2 ** (2 / 3))] for size in (32, 64, 128, 256, 512)
]
model.anchor_generator.round_base_anchors = True
model.anchor_generator.cell_anchor_order = "ratio_major"
model.smooth_l1_beta = 0.0
model.loss_normalizer = "per_image"
model.score_threshold = 0.05
model.topk_candidates = 1000
model.nms_threshold = 0.5
model.max_detections_per_image = 300
