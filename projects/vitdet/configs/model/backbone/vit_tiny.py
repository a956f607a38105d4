"""A 2-block ViT (96 wide) + SimpleFeaturePyramid for CPU smoke runs: p2..p6, 256 channels."""

# A project can add options to lazydet's groups: this file sits at model/backbone/ in the
# project's config directory, so `model.backbone=vit_tiny` works for every experiment. Not a
# ViTDet size: use it to try a config on a laptop (lazydet's param_groups has no ViTDet decay
# rate for 2 blocks, so give one: optimizer.params.vit_lr_decay=0.7).
from lazydet.config import L
from lazydet.modeling.backbone import LastLevelMaxPool, SimpleFeaturePyramid, ViT

backbone = L(SimpleFeaturePyramid)(
    net=L(ViT)(
        img_size=128,
        patch_size=16,
        embed_dim=96,
        depth=2,
        num_heads=3,
        drop_path_rate=0.1,
        mlp_ratio=4.0,
        qkv_bias=True,
        use_rel_pos=True,
        window_size=4,
        window_block_indexes=[0],
    ),
    in_feature="last_feat",
    out_channels=256,
    scale_factors=[4.0, 2.0, 1.0, 0.5],
    top_block=L(LastLevelMaxPool)(),
    norm="LN",
)
