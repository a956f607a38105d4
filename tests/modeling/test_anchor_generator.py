"""DefaultAnchorGenerator against torchvision's AnchorGenerator and hand-computed anchors."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList as TorchvisionImageList

from lazydet.modeling.anchor_generator import DefaultAnchorGenerator
from lazydet.structures import Boxes

FPN_SIZES = ((32,), (64,), (128,), (256,), (512,))
FPN_STRIDES = (4, 8, 16, 32, 64)


def fpn_features(image_size: int = 128) -> list[torch.Tensor]:
    return [torch.zeros(2, 1, image_size // s, image_size // s) for s in FPN_STRIDES]


def torchvision_anchors(sizes, ratios, features, image_size: int) -> list[torch.Tensor]:
    """torchvision's anchors for image 0, split back into levels."""
    generator = AnchorGenerator(sizes=sizes, aspect_ratios=ratios)
    images = TorchvisionImageList(
        torch.zeros(2, 3, image_size, image_size), [(image_size,) * 2] * 2
    )
    anchors = generator(images, features)[0]
    counts = [
        f.shape[-2] * f.shape[-1] * n
        for f, n in zip(features, generator.num_anchors_per_location())
    ]
    return list(anchors.split(counts))


def test_fpn_preset_equals_torchvision():
    features = fpn_features()
    ratios = ((0.5, 1.0, 2.0),) * len(FPN_SIZES)
    ours = DefaultAnchorGenerator(
        sizes=FPN_SIZES, aspect_ratios=(0.5, 1.0, 2.0), round_base_anchors=True
    )(features, FPN_STRIDES)
    theirs = torchvision_anchors(FPN_SIZES, ratios, features, 128)
    assert all(isinstance(level, Boxes) for level in ours)
    for level_ours, level_theirs in zip(ours, theirs):
        torch.testing.assert_close(level_ours.tensor, level_theirs, rtol=0, atol=0)


def test_several_sizes_per_level_in_torchvision_order_equals_torchvision():
    # RetinaNet-style: 3 scales x 3 ratios per level.
    sizes = tuple((s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)) for s in (32, 64, 128))
    features = [torch.zeros(1, 1, 64 // s, 64 // s) for s in (8, 16, 32)]
    ours = DefaultAnchorGenerator(
        sizes=sizes,
        aspect_ratios=(0.5, 1.0, 2.0),
        round_base_anchors=True,
        cell_anchor_order="ratio_major",
    )(features, (8, 16, 32))
    theirs = torchvision_anchors(sizes, ((0.5, 1.0, 2.0),) * 3, features, 64)
    for level_ours, level_theirs in zip(ours, theirs):
        torch.testing.assert_close(level_ours.tensor, level_theirs, rtol=0, atol=0)


def test_unrounded_anchors_with_offset_by_hand():
    generator = DefaultAnchorGenerator(sizes=[[32, 64]], aspect_ratios=[0.5, 2.0], offset=0.5)
    (anchors,) = generator([torch.zeros(1, 1, 2, 3)], [8])
    assert generator.num_cell_anchors == [4]
    assert len(anchors) == 2 * 3 * 4
    # Size-major: (32, 0.5), (32, 2), (64, 0.5), (64, 2). Ratio is height / width.
    w = 32 / math.sqrt(0.5)
    h = 32 * math.sqrt(0.5)
    torch.testing.assert_close(
        anchors.tensor[0], torch.tensor([4 - w / 2, 4 - h / 2, 4 + w / 2, 4 + h / 2])
    )
    torch.testing.assert_close(
        anchors.area()[:4], torch.tensor([32.0**2, 32.0**2, 64.0**2, 64.0**2])
    )
    # Location (row 1, column 2) starts at anchor index (1 * 3 + 2) * 4, centred on (20, 12).
    torch.testing.assert_close(anchors.centers()[20], torch.tensor([20.0, 12.0]))


def test_single_size_list_is_shared_by_all_levels_and_cells_follow_device():
    generator = DefaultAnchorGenerator(sizes=[[16]], aspect_ratios=[1.0])
    anchors = generator([torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 1)], [4, 8])
    assert [len(a) for a in anchors] == [4, 1]
    torch.testing.assert_close(anchors[1].tensor, torch.tensor([[-8.0, -8.0, 8.0, 8.0]]))
    assert "cell_anchors_0" not in generator.state_dict()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="one non-empty list of sizes per feature"):
        DefaultAnchorGenerator(sizes=[32, 64])
    with pytest.raises(ValueError, match="aspect_ratios has 2 levels"):
        DefaultAnchorGenerator(sizes=[[32], [64], [128]], aspect_ratios=[[1.0], [2.0]])
    generator = DefaultAnchorGenerator(sizes=[[32], [64]])
    with pytest.raises(ValueError, match="configured for 2 levels"):
        generator([torch.zeros(1, 1, 2, 2)] * 3, [4, 8, 16])
    with pytest.raises(ValueError, match="one stride per feature map"):
        generator([torch.zeros(1, 1, 2, 2)] * 2, [4])


@pytest.mark.parametrize("padded_size", [(800, 1088), (96, 160), (128, 128)])
def test_padded_size_spacing_equals_torchvision_at_any_size(padded_size):
    # 800x1088: an 800x1066 image (torchvision's default resize) padded to multiples of 32.
    # P6 has ceil(800 / 64) = 13 rows, spaced 800 // 13 = 61 pixels by torchvision, not 64.
    height, width = padded_size
    shapes = [(height // 4, width // 4)]
    for _ in range(4):
        shapes.append((math.ceil(shapes[-1][0] / 2), math.ceil(shapes[-1][1] / 2)))
    features = [torch.zeros(1, 1, h, w) for h, w in shapes]
    generator = DefaultAnchorGenerator(
        sizes=FPN_SIZES,
        aspect_ratios=(0.5, 1.0, 2.0),
        round_base_anchors=True,
        spacing="padded_size",
    )
    ours = generator(features, FPN_STRIDES, padded_size=padded_size)
    tv_generator = AnchorGenerator(sizes=FPN_SIZES, aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    images = TorchvisionImageList(torch.zeros(1, 3, height, width), [padded_size])
    theirs = tv_generator(images, features)[0].split([len(a) for a in ours])
    for level_ours, level_theirs in zip(ours, theirs):
        torch.testing.assert_close(level_ours.tensor, level_theirs, rtol=0, atol=0)
    strided = DefaultAnchorGenerator(
        sizes=FPN_SIZES, aspect_ratios=(0.5, 1.0, 2.0), round_base_anchors=True
    )(features, FPN_STRIDES)
    same = all(torch.equal(a.tensor, b.tensor) for a, b in zip(ours, strided))
    # The spacings agree exactly when every level's stride divides the padded size.
    assert same == all(height % s == 0 and width % s == 0 for s in FPN_STRIDES)


def test_padded_size_spacing_by_hand_and_its_errors():
    generator = DefaultAnchorGenerator(sizes=[[8]], aspect_ratios=[1.0], spacing="padded_size")
    # A 2x3 map of a 13x20 batch: spacing 13 // 2 = 6 down, 20 // 3 = 6 across.
    (anchors,) = generator([torch.zeros(1, 1, 2, 3)], [8], padded_size=(13, 20))
    torch.testing.assert_close(
        anchors.centers(), torch.tensor([[0.0, 0.0], [6, 0], [12, 0], [0, 6], [6, 6], [12, 6]])
    )
    # The stride argument is ignored under this spacing.
    (same,) = generator([torch.zeros(1, 1, 2, 3)], [64], padded_size=(13, 20))
    assert torch.equal(same.tensor, anchors.tensor)
    with pytest.raises(ValueError, match="needs padded_size=.*images.tensor.shape"):
        generator([torch.zeros(1, 1, 2, 3)], [8])
    with pytest.raises(ValueError, match="smaller than a 2x3 feature map"):
        generator([torch.zeros(1, 1, 2, 3)], [8], padded_size=(1, 20))
    with pytest.raises(ValueError, match="spacing must be 'stride' or 'padded_size'"):
        DefaultAnchorGenerator(sizes=[[8]], spacing="torchvision")
