"""ViT-B/16 (ViTDet) + SimpleFeaturePyramid: p2..p6, 256 channels."""

from ._vit_sfp import vit_sfp

backbone = vit_sfp(
    embed_dim=768, depth=12, num_heads=12, drop_path_rate=0.1, global_blocks=[2, 5, 8, 11]
)
