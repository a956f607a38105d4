"""ViT-L/16 (ViTDet) + SimpleFeaturePyramid: p2..p6, 256 channels."""

from ._vit_sfp import vit_sfp

backbone = vit_sfp(
    embed_dim=1024, depth=24, num_heads=16, drop_path_rate=0.4, global_blocks=[5, 11, 17, 23]
)
