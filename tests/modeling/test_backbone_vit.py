"""ViT (ViTDet style) against torchvision's transformer block, a naive relative-position
attention, window round trips, and torchvision's vit_b_16 parameter layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import tiny_vit
from torch import Tensor
from torchvision.models.vision_transformer import EncoderBlock

from lazydet.config import compose, instantiate
from lazydet.layers import ShapeSpec
from lazydet.modeling.backbone import ViT
from lazydet.modeling.backbone.vit import (
    ViTBlock,
    WindowedAttention,
    window_partition,
    window_unpartition,
)


def test_global_block_matches_torchvision_encoder_block() -> None:
    torch.manual_seed(0)
    dim, heads = 32, 4
    reference = EncoderBlock(
        num_heads=heads,
        hidden_dim=dim,
        mlp_dim=4 * dim,
        dropout=0.0,
        attention_dropout=0.0,
        norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6),
    ).eval()
    ours = ViTBlock(dim=dim, num_heads=heads, mlp_ratio=4.0).eval()
    # The name mapping documented in lazydet.modeling.backbone.vit.
    ours.load_state_dict(
        {
            "norm1.weight": reference.ln_1.weight,
            "norm1.bias": reference.ln_1.bias,
            "attn.qkv.weight": reference.self_attention.in_proj_weight,
            "attn.qkv.bias": reference.self_attention.in_proj_bias,
            "attn.proj.weight": reference.self_attention.out_proj.weight,
            "attn.proj.bias": reference.self_attention.out_proj.bias,
            "norm2.weight": reference.ln_2.weight,
            "norm2.bias": reference.ln_2.bias,
            "mlp.fc1.weight": reference.mlp[0].weight,
            "mlp.fc1.bias": reference.mlp[0].bias,
            "mlp.fc2.weight": reference.mlp[3].weight,
            "mlp.fc2.bias": reference.mlp[3].bias,
        }
    )
    tokens = torch.randn(2, 3, 5, dim)  # [B, h, w, C]
    with torch.no_grad():
        expected = reference(tokens.reshape(2, 15, dim)).reshape(2, 3, 5, dim)
        actual = ours(tokens)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def _naive_rel_pos_attention(attention: WindowedAttention, x: Tensor) -> Tensor:
    """Attention with decomposed relative positions, written out per head and per token pair."""
    height, width, dim = x.shape
    heads = attention.num_heads
    head_dim = dim // heads
    tokens = x.reshape(height * width, dim)
    qkv = tokens @ attention.qkv.weight.T + attention.qkv.bias
    q, k, v = qkv[:, :dim], qkv[:, dim : 2 * dim], qkv[:, 2 * dim :]
    positions = [(y, x_) for y in range(height) for x_ in range(width)]
    outputs = []
    for head in range(heads):
        part = slice(head * head_dim, (head + 1) * head_dim)
        qh, kh, vh = q[:, part], k[:, part], v[:, part]
        logits = torch.empty(height * width, height * width)
        for i, (qy, qx) in enumerate(positions):
            for j, (ky, kx) in enumerate(positions):
                relative = (
                    attention.rel_pos_h[qy - ky + height - 1]
                    + attention.rel_pos_w[qx - kx + width - 1]
                )
                logits[i, j] = qh[i] @ kh[j] / head_dim**0.5 + qh[i] @ relative
        outputs.append(logits.softmax(dim=-1) @ vh)
    out = torch.cat(outputs, dim=-1) @ attention.proj.weight.T + attention.proj.bias
    return out.reshape(height, width, dim)


def test_relative_position_attention_matches_naive_reference() -> None:
    torch.manual_seed(1)
    height, width, dim = 3, 5, 8
    attention = WindowedAttention(
        dim=dim,
        num_heads=2,
        use_rel_pos=True,
        rel_pos_zero_init=False,
        input_size=(height, width),
    )
    with torch.no_grad():
        # Large enough to change the result noticeably (the init std is 0.02).
        attention.rel_pos_h.normal_()
        attention.rel_pos_w.normal_()
        x = torch.randn(1, height, width, dim)
        expected = _naive_rel_pos_attention(attention, x[0])
        actual = attention(x)[0]
        without_bias = WindowedAttention(dim=dim, num_heads=2)
        without_bias.load_state_dict(attention.state_dict(), strict=False)
        assert not torch.allclose(without_bias(x)[0], expected, atol=1e-3)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_windowed_block_equals_global_block_on_each_window() -> None:
    torch.manual_seed(2)
    dim, window = 16, 2
    windowed = ViTBlock(
        dim=dim, num_heads=2, use_rel_pos=True, rel_pos_zero_init=False, window_size=window
    ).eval()
    single_window = ViTBlock(
        dim=dim, num_heads=2, use_rel_pos=True, input_size=(window, window)
    ).eval()
    single_window.load_state_dict(windowed.state_dict())
    x = torch.randn(2, 4, 6, dim)
    with torch.no_grad():
        actual = windowed(x)
        expected = torch.empty_like(x)
        for top in range(0, 4, window):
            for left in range(0, 6, window):
                crop = (slice(None), slice(top, top + window), slice(left, left + window))
                expected[crop] = single_window(x[crop])
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_window_covering_the_whole_map_equals_global_attention() -> None:
    torch.manual_seed(3)
    windowed = ViTBlock(dim=16, num_heads=4, use_rel_pos=True, window_size=4).eval()
    global_ = ViTBlock(dim=16, num_heads=4, use_rel_pos=True, input_size=(4, 4)).eval()
    with torch.no_grad():
        windowed.attn.rel_pos_h.normal_()
        windowed.attn.rel_pos_w.normal_()
    global_.load_state_dict(windowed.state_dict())
    x = torch.randn(2, 4, 4, 16)
    with torch.no_grad():
        torch.testing.assert_close(windowed(x), global_(x), rtol=0, atol=1e-6)


def test_window_partition_round_trip_with_padding() -> None:
    x = torch.randn(2, 5, 7, 3)
    windows, padded = window_partition(x, 3)
    assert padded == (6, 9)
    assert windows.shape == (2 * 2 * 3, 3, 3, 3)
    # Row-major window order: the second window of the first image starts at column 3.
    torch.testing.assert_close(windows[1], F.pad(x, (0, 0, 0, 2, 0, 1))[0, 0:3, 3:6])
    torch.testing.assert_close(window_unpartition(windows, 3, padded, (5, 7)), x)


def test_patch_embedding_and_absolute_positions_hand_computed() -> None:
    torch.manual_seed(4)
    vit = tiny_vit(depth=0, window_block_indexes=()).eval()
    images = torch.randn(1, 3, 64, 64)
    conv = vit.patch_embed.proj
    # pos_embed = [class slot, 16 grid positions row-major]; the class slot is dropped.
    grid = vit.pos_embed[0, 1:].reshape(4, 4, 64).permute(2, 0, 1)
    expected = F.conv2d(images, conv.weight, conv.bias, stride=16) + grid
    with torch.no_grad():
        actual = vit(images)["last_feat"]
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


def test_absolute_positions_are_resized_bicubically() -> None:
    torch.manual_seed(7)
    vit = tiny_vit(depth=0, window_block_indexes=()).eval()
    images = torch.randn(1, 3, 96, 160)  # token grid 6x10 instead of the pre-training 4x4
    conv = vit.patch_embed.proj
    grid = vit.pos_embed[0, 1:].detach().reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    # The reference: the whole [1, C, 4, 4] grid resized at once (ViTDet's get_abs_pos).
    bicubic = F.interpolate(grid, size=(6, 10), mode="bicubic", align_corners=False)
    # A random embedding tells interpolation modes apart (a constant one would not).
    for mode in ("nearest", "bilinear"):
        other = F.interpolate(
            grid, size=(6, 10), mode=mode, **({} if mode == "nearest" else {"align_corners": False})
        )
        assert not torch.allclose(other, bicubic, atol=1e-3)
    expected = F.conv2d(images, conv.weight, conv.bias, stride=16) + bicubic
    with torch.no_grad():
        torch.testing.assert_close(vit(images)["last_feat"], expected, rtol=0, atol=1e-5)


def _linear_resize_by_hand(table: Tensor, length: int) -> Tensor:
    """``table: [L, d]`` resized to ``[length, d]``: linear, half-pixel centres
    (``align_corners=False``), source coordinates clamped at the ends."""
    old = table.shape[0]
    rows = []
    for i in range(length):
        x = max((i + 0.5) * old / length - 0.5, 0.0)
        left = min(int(x), old - 1)
        right = min(left + 1, old - 1)
        weight = x - left
        rows.append(table[left] * (1 - weight) + table[right] * weight)
    return torch.stack(rows)


def test_relative_position_tables_are_resized_linearly() -> None:
    torch.manual_seed(8)
    # Tables made for a 2x3 grid (lengths 3 and 5) used on a 4x5 map (lengths 7 and 9).
    attention = WindowedAttention(
        dim=8, num_heads=2, use_rel_pos=True, rel_pos_zero_init=False, input_size=(2, 3)
    )
    with torch.no_grad():
        attention.rel_pos_h.normal_()
        attention.rel_pos_w.normal_()
        resized = WindowedAttention(dim=8, num_heads=2, use_rel_pos=True, input_size=(4, 5))
        state = dict(attention.state_dict())
        state["rel_pos_h"] = _linear_resize_by_hand(attention.rel_pos_h, 7)
        state["rel_pos_w"] = _linear_resize_by_hand(attention.rel_pos_w, 9)
        resized.load_state_dict(state)
        x = torch.randn(1, 4, 5, 8)
        expected = _naive_rel_pos_attention(resized, x[0])
        # The hand-resized tables differ from a nearest-neighbour resize of the same tables.
        nearest = F.interpolate(attention.rel_pos_h.T[None], size=7, mode="nearest")[0].T
        assert not torch.allclose(nearest, state["rel_pos_h"], atol=1e-3)
        actual = attention(x)[0]
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_vit_output_contract_with_resized_relative_positions() -> None:
    torch.manual_seed(5)
    vit = tiny_vit().eval()
    # img_size=64 sized the global block's tables for a 4x4 grid; a 128x192 input has 8x12.
    images = torch.randn(2, 3, 128, 192)
    with torch.no_grad():
        out = vit(images)
    assert list(out) == ["last_feat"]
    assert out["last_feat"].shape == (2, 64, 8, 12)
    assert vit.output_shape() == {"last_feat": ShapeSpec(channels=64, stride=16)}
    assert vit.size_divisibility == 16


def test_drop_path_is_identity_in_eval_and_active_in_training() -> None:
    torch.manual_seed(6)
    with_drop = tiny_vit(drop_path_rate=0.9)
    without_drop = tiny_vit(drop_path_rate=0.0)
    without_drop.load_state_dict(with_drop.state_dict())
    images = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        expected = without_drop.eval()(images)["last_feat"]
        torch.testing.assert_close(with_drop.eval()(images)["last_feat"], expected)
        assert not torch.allclose(with_drop.train()(images)["last_feat"], expected)


def _vit_option(name: str) -> ViT:
    """The ViT of the ``model/backbone`` option ``name`` (its one home, conf/model/backbone)."""
    cfg = compose("faster_rcnn_fpn", [f"model.backbone={name}"])
    return instantiate(cfg.model.backbone.net)


def test_vit_b_matches_torchvision_vit_b_16_layout() -> None:
    with torch.device("meta"):
        ours = _vit_option("vit_b")
        reference = torchvision.models.vit_b_16()
    ours_state = ours.state_dict()
    reference_state = reference.state_dict()
    assert ours_state["pos_embed"].shape == reference_state["encoder.pos_embedding"].shape
    assert ours_state["patch_embed.proj.weight"].shape == reference_state["conv_proj.weight"].shape
    renames = {
        "ln_1": "norm1",
        "self_attention.in_proj_weight": "attn.qkv.weight",
        "self_attention.in_proj_bias": "attn.qkv.bias",
        "self_attention.out_proj": "attn.proj",
        "ln_2": "norm2",
        "mlp.0": "mlp.fc1",
        "mlp.3": "mlp.fc2",
    }
    mapped = 0
    for key, value in reference_state.items():
        if not key.startswith("encoder.layers."):
            continue
        name = key.replace("encoder.layers.encoder_layer_", "blocks.")
        for old, new in renames.items():
            name = name.replace(old, new)
        assert ours_state[name].shape == value.shape, key
        mapped += 1
    # Every block tensor of ours is covered, except the relative position tables.
    block_keys = [k for k in ours_state if k.startswith("blocks.") and "rel_pos" not in k]
    assert mapped == len(block_keys) == 12 * 12
    # ViTDet's ViT-B: windowed attention everywhere except blocks 2, 5, 8, 11 (window 14).
    assert [block.window_size for block in ours.blocks] == [14, 14, 0] * 4
    # Global blocks' tables are sized for 1024 / 16 = 64 tokens, windowed ones for 14.
    assert ours.blocks[2].attn.rel_pos_h.shape == (127, 64)
    assert ours.blocks[0].attn.rel_pos_h.shape == (27, 64)


def test_vit_l_sizes() -> None:
    with torch.device("meta"):
        model = _vit_option("vit_l")
    assert len(model.blocks) == 24
    assert model.output_shape() == {"last_feat": ShapeSpec(channels=1024, stride=16)}
    assert [i for i, b in enumerate(model.blocks) if b.window_size == 0] == [5, 11, 17, 23]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_block_indexes": (5,)}, "outside"),
        ({"window_size": 0}, "window_size"),
        ({"embed_dim": 30}, "divisible"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_vit(**kwargs)


def test_input_not_multiple_of_patch_size_raises() -> None:
    with pytest.raises(ValueError, match="size_divisibility"):
        tiny_vit()(torch.zeros(1, 3, 64, 70))
