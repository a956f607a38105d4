"""ViT-L/16 (ViTDet) + SimpleFeaturePyramid: p2..p6, 256 channels.

Starts from scratch: no public ImageNet file is converted to lazydet's ViT yet, so a COCO recipe
needs train.init_checkpoint=null with this option (the run then logs that it trains from scratch).
"""

from ._vit_sfp import vit_sfp

backbone = vit_sfp(
    embed_dim=1024, depth=24, num_heads=16, drop_path_rate=0.4, global_blocks=[5, 11, 17, 23]
)
