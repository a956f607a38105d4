"""Shared by the ViT options: ViTDet's plain ViT + SimpleFeaturePyramid, the p2..p6 contract."""

from lazydet.config import L
from lazydet.modeling.backbone import LastLevelMaxPool, SimpleFeaturePyramid, ViT


def vit_sfp(
    *, embed_dim: int, depth: int, num_heads: int, drop_path_rate: float, global_blocks: list[int]
) -> dict:
    window_blocks = [i for i in range(depth) if i not in global_blocks]
    return L(SimpleFeaturePyramid)(
        net=L(ViT)(
            img_size=1024,
            patch_size=16,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            drop_path_rate=drop_path_rate,
            mlp_ratio=4.0,
            qkv_bias=True,
            use_rel_pos=True,
            window_size=14,
            window_block_indexes=window_blocks,
        ),
        in_feature="last_feat",
        out_channels=256,
        scale_factors=[4.0, 2.0, 1.0, 0.5],
        top_block=L(LastLevelMaxPool)(),
        norm="LN",
    )
