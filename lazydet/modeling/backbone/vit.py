"""Plain Vision Transformer backbone in the style of ViTDet (Li et al. 2022, "Exploring Plain
Vision Transformer Backbones for Object Detection").

Input ``Tensor[B, in_channels, H, W]`` with ``H, W`` multiples of ``patch_size``; output
``{"last_feat": Tensor[B, embed_dim, H / patch_size, W / patch_size]}`` (stride ``patch_size``,
16 by default). There is no class token and no final norm: ``SimpleFeaturePyramid`` builds the
multi-scale maps from this single map.

Tokens are kept as ``Tensor[B, h, w, C]`` maps (``h = H / patch_size``) so that blocks can use
either global attention over all ``h * w`` tokens or attention inside non-overlapping
``window_size x window_size`` windows (the map is zero-padded at the bottom/right to a multiple of
the window; padded tokens take part as keys, as in ViTDet). ViTDet makes most blocks windowed
and a few, evenly spaced, global (``window_block_indexes``).

Position information:

* absolute: ``pos_embed`` of the pre-training grid (``pretrain_img_size / patch_size`` squared,
  plus a class-token slot when ``pretrain_use_cls_token``), dropped of its class slot and resized
  bicubically (``align_corners=False``) to the input's token grid;
* relative (``use_rel_pos``): decomposed relative position biases of MViTv2. For query ``(qy, qx)``
  and key ``(ky, kx)`` the attention logit gets ``q . R_h[qy - ky] + q . R_w[qx - kx]`` (``q``
  unscaled), where ``R_h: Tensor[2 * size_h - 1, head_dim]`` is indexed by offset + size - 1.
  Tables are sized for ``img_size`` (global blocks) or the window (windowed blocks) and
  linearly resized when the token grid differs.

Checkpoint names are those of MAE/ViTDet (``patch_embed.proj``, ``pos_embed``,
``blocks.{i}.{norm1,attn.qkv,attn.proj,attn.rel_pos_h,attn.rel_pos_w,norm2,mlp.fc1,mlp.fc2}``), so
MAE pre-trained weights load with ``strict=False`` (their ``cls_token``, ``norm``, ``head`` are
unused). torchvision's ``vit_b_16`` maps too: ``conv_proj`` -> ``patch_embed.proj``,
``encoder.pos_embedding`` -> ``pos_embed``, ``encoder.layers.encoder_layer_{i}.{ln_1, ln_2,
self_attention.in_proj_*, self_attention.out_proj, mlp.0, mlp.3}`` -> ``blocks.{i}.{norm1,
norm2, attn.qkv.*, attn.proj, mlp.fc1, mlp.fc2}``.

The ViTDet sizes with ViTDet's detection settings (ViT-B and ViT-L with a simple feature pyramid)
are configs, in one place: ``conf/model/backbone/vit_b.py`` and ``vit_l.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from lazydet.layers import ShapeSpec
from lazydet.modeling.backbone.base import Backbone

__all__ = [
    "PatchEmbed",
    "ViT",
    "ViTBlock",
    "WindowedAttention",
    "relative_position_bias",
    "window_partition",
    "window_unpartition",
]


def window_partition(x: Tensor, window_size: int) -> tuple[Tensor, tuple[int, int]]:
    """Split ``x: Tensor[B, H, W, C]`` into windows ``Tensor[B * nH * nW, ws, ws, C]``.

    The map is zero-padded at the bottom and right to ``(Hp, Wp)``, multiples of ``window_size``;
    windows are ordered row-major per image. Returns the windows and ``(Hp, Wp)``.
    """
    batch, height, width, channels = x.shape
    pad_h = (window_size - height % window_size) % window_size
    pad_w = (window_size - width % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    padded_h, padded_w = height + pad_h, width + pad_w
    x = x.view(
        batch, padded_h // window_size, window_size, padded_w // window_size, window_size, channels
    )
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, channels)
    return windows, (padded_h, padded_w)


def window_unpartition(
    windows: Tensor, window_size: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> Tensor:
    """Inverse of ``window_partition``: ``Tensor[B * nH * nW, ws, ws, C] -> Tensor[B, H, W, C]``."""
    padded_h, padded_w = padded_hw
    height, width = hw
    num_h, num_w = padded_h // window_size, padded_w // window_size
    batch = windows.shape[0] // (num_h * num_w)
    x = windows.view(batch, num_h, num_w, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, padded_h, padded_w, -1)
    return x[:, :height, :width, :].contiguous()


def _relative_position_table(q_size: int, k_size: int, table: Tensor) -> Tensor:
    """Embeddings ``Tensor[q_size, k_size, d]`` of the offsets between query and key positions.

    ``table: Tensor[L, d]`` holds one embedding per offset, offset ``o`` at ``o + size - 1``.
    When ``L != 2 * max(q_size, k_size) - 1`` (a token grid other than the one the table was made
    for) it is resized linearly; when query and key grids differ, coordinates are scaled to the
    finer grid (MViTv2).
    """
    length = 2 * max(q_size, k_size) - 1
    if table.shape[0] != length:
        table = (
            F.interpolate(table.transpose(0, 1).unsqueeze(0), size=length, mode="linear")
            .squeeze(0)
            .transpose(0, 1)
        )
    q_coords = torch.arange(q_size, device=table.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=table.device)[None, :] * max(q_size / k_size, 1.0)
    offsets = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return table[offsets.long()]


def relative_position_bias(
    q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor, q_hw: tuple[int, int], k_hw: tuple[int, int]
) -> Tensor:
    """Decomposed relative position bias added to the attention logits.

    Args:
        q: unscaled queries ``Tensor[B, q_h * q_w, d]`` (row-major tokens; B may include heads).
        rel_pos_h, rel_pos_w: offset tables ``Tensor[L_h, d]`` and ``Tensor[L_w, d]``.
        q_hw, k_hw: query and key token grids.
    Returns:
        ``Tensor[B, q_h * q_w, k_h * k_w]`` with entry ``[b, (qy, qx), (ky, kx)] =
        q[b, (qy, qx)] . (R_h[qy, ky] + R_w[qx, kx])``.
    """
    q_h, q_w = q_hw
    k_h, k_w = k_hw
    table_h = _relative_position_table(q_h, k_h, rel_pos_h)  # [q_h, k_h, d]
    table_w = _relative_position_table(q_w, k_w, rel_pos_w)  # [q_w, k_w, d]
    grid_q = q.reshape(q.shape[0], q_h, q_w, q.shape[-1])
    bias_h = torch.einsum("byxd,ykd->byxk", grid_q, table_h)  # [B, q_h, q_w, k_h]
    bias_w = torch.einsum("byxd,xkd->byxk", grid_q, table_w)  # [B, q_h, q_w, k_w]
    bias = bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]  # [B, q_h, q_w, k_h, k_w]
    return bias.reshape(q.shape[0], q_h * q_w, k_h * k_w)


class WindowedAttention(nn.Module):
    """Multi-head self-attention over a token map ``Tensor[B, h, w, C] -> Tensor[B, h, w, C]``.

    Despite the name it attends over the whole map it is given; ``ViTBlock`` feeds it windows.
    ``input_size`` is the token grid the relative position tables are sized for.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"ViT embed_dim={dim} must be divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        # One projection for q, k and v, concatenated in that order (MAE and torchvision's
        # in_proj_weight use the same layout).
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("WindowedAttention with use_rel_pos=True needs input_size=(h, w).")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, channels = x.shape
        tokens = height * width
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, tokens, head_dim]
        bias = None
        if self.use_rel_pos:
            bias = relative_position_bias(
                q.reshape(batch * self.num_heads, tokens, -1),
                self.rel_pos_h,
                self.rel_pos_w,
                (height, width),
                (height, width),
            ).view(batch, self.num_heads, tokens, tokens)
        # scaled_dot_product_attention adds `bias` to q.k / sqrt(d): the same logits as ViTDet,
        # computed by PyTorch's fused kernels.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(batch, height, width, channels)
        return self.proj(out)


class _Mlp(nn.Module):
    def __init__(self, *, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    """Pre-norm transformer block on ``Tensor[B, h, w, C]``: attention then MLP, each residual.

    ``window_size=0`` attends globally; otherwise within ``window_size`` windows.
    ``drop_path`` is the per-sample stochastic depth rate of both residual branches (identity in
    eval mode).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = WindowedAttention(
            dim=dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.drop_path = StochasticDepth(drop_path, mode="row")
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = _Mlp(dim=dim, hidden_dim=int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            height, width = x.shape[1], x.shape[2]
            windows, padded_hw = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(windows), self.window_size, padded_hw, (height, width))
        else:
            x = self.attn(x)
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: ``Tensor[B, C, H, W] -> Tensor[B, H/p, W/p, embed_dim]``.

    A single ``proj`` convolution (kernel = stride = ``patch_size``), named as in MAE.
    """

    def __init__(self, *, patch_size: int, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images).permute(0, 2, 3, 1)


class ViT(Backbone):
    """ViTDet-style plain ViT backbone (see the module docstring).

    Args:
        img_size: input size the global blocks' relative position tables are made for.
        patch_size: side of the square patches (= output stride).
        in_channels: image channels.
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: transformer size.
        drop_path_rate: stochastic depth rate, increasing linearly from 0 to this over the blocks.
        norm_eps: LayerNorm epsilon (1e-6 as MAE/ViTDet).
        use_abs_pos: add the (resized) absolute position embedding.
        use_rel_pos, rel_pos_zero_init: decomposed relative position biases, zero-initialized.
        window_size: window side in tokens for the blocks in ``window_block_indexes``.
        window_block_indexes: blocks that attend within windows; the others attend globally.
        pretrain_img_size, pretrain_use_cls_token: shape of ``pos_embed`` as pre-trained.
        out_feature: name of the output feature.
    """

    def __init__(
        self,
        *,
        img_size: int = 1024,
        patch_size: int = 16,
        in_channels: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-6,
        use_abs_pos: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        window_block_indexes: Sequence[int] = (),
        pretrain_img_size: int = 224,
        pretrain_use_cls_token: bool = True,
        out_feature: str = "last_feat",
    ) -> None:
        super().__init__()
        window_block_indexes = tuple(window_block_indexes)
        bad_indexes = [i for i in window_block_indexes if not 0 <= i < depth]
        if bad_indexes:
            raise ValueError(
                f"ViT window_block_indexes {bad_indexes} are outside the blocks 0..{depth - 1}."
            )
        if window_block_indexes and window_size <= 0:
            raise ValueError(
                f"ViT window_block_indexes={window_block_indexes} need window_size > 0, "
                f"got {window_size}."
            )
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"ViT drop_path_rate={drop_path_rate} must be in [0, 1).")
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.out_feature = out_feature
        self.pretrain_use_cls_token = pretrain_use_cls_token

        self.patch_embed = PatchEmbed(
            patch_size=patch_size, in_channels=in_channels, embed_dim=embed_dim
        )
        if use_abs_pos:
            num_positions = (pretrain_img_size // patch_size) ** 2 + int(pretrain_use_cls_token)
            self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        else:
            self.pos_embed = None

        grid = img_size // patch_size
        self.blocks = nn.ModuleList(
            ViTBlock(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=drop_path_rate * i / max(depth - 1, 1),
                norm_eps=norm_eps,
                use_rel_pos=use_rel_pos,
                rel_pos_zero_init=rel_pos_zero_init,
                window_size=window_size if i in window_block_indexes else 0,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # MAE/ViTDet initialization: truncated normal (std 0.02) for linears and pos_embed.
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def size_divisibility(self) -> int:
        return self.patch_size

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {self.out_feature: ShapeSpec(channels=self.embed_dim, stride=self.patch_size)}

    def _absolute_position(self, height: int, width: int) -> Tensor:
        """``pos_embed`` as a ``Tensor[1, height, width, C]`` map for the current token grid."""
        pos = self.pos_embed[:, 1:] if self.pretrain_use_cls_token else self.pos_embed
        side = math.isqrt(pos.shape[1])
        if side * side != pos.shape[1]:
            raise ValueError(f"ViT pos_embed has {pos.shape[1]} positions, not a square grid.")
        pos = pos.reshape(1, side, side, -1)
        if (side, side) == (height, width):
            return pos
        pos = F.interpolate(
            pos.permute(0, 3, 1, 2), size=(height, width), mode="bicubic", align_corners=False
        )
        return pos.permute(0, 2, 3, 1)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``images: Tensor[B, C, H, W]`` -> ``{out_feature: Tensor[B, embed_dim, H/p, W/p]}``."""
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"ViT expects images of shape [B, {self.in_channels}, H, W], "
                f"got {tuple(images.shape)}."
            )
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"ViT input size {height}x{width} is not a multiple of patch_size={self.patch_size};"
                " pad the batch, e.g. ImageList.from_tensors(..., "
                "size_divisibility=backbone.size_divisibility)."
            )
        x = self.patch_embed(images)  # [B, h, w, C]
        if self.pos_embed is not None:
            x = x + self._absolute_position(x.shape[1], x.shape[2])
        for block in self.blocks:
            x = block(x)
        return {self.out_feature: x.permute(0, 3, 1, 2)}
