"""lazydet.ops ROIAlign (Triton kernels under the interpreter, and the torchvision fallback)
against torchvision.ops.roi_align / MultiScaleRoIAlign, the FPN formula and hand-computed cases."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
import torchvision
from helpers import import_kernels
from torchvision.ops import MultiScaleRoIAlign

from lazydet.ops import backend
from lazydet.ops.roi_align import assign_boxes_to_levels, multilevel_roi_align, roi_align

# Skips only where Triton is not installed, outside CI; a broken import fails (tests/helpers.py).
kernels = import_kernels("lazydet.kernels.roi_align")


def _reference(features, rois, output_size, scale, sampling_ratio, aligned):
    """torchvision.ops.roi_align, lazydet's sampling_ratio convention (0 = adaptive)."""
    return torchvision.ops.roi_align(
        features,
        rois,
        output_size,
        spatial_scale=scale,
        sampling_ratio=sampling_ratio if sampling_ratio > 0 else -1,
        aligned=aligned,
    )


def _rois(device: torch.device, num_images: int = 2) -> torch.Tensor:
    """12 rois (image pixels, scale 1/4 on a 13x17 map = 52x68 image) covering the cases that
    matter: interior, partly and wholly outside, tiny, zero-area, inverted, and sides that are
    exact multiples of the output size (the adaptive ceil at an integer ratio)."""
    boxes = [
        [0, 4.0, 6.0, 40.0, 30.0],
        [1, -10.0, -6.0, 20.0, 18.0],  # partly outside (top-left)
        [0, 50.0, 40.0, 90.0, 80.0],  # partly outside (bottom-right)
        [1, 100.0, 100.0, 140.0, 130.0],  # wholly outside
        [0, 10.0, 10.0, 10.0, 10.0],  # zero area
        [1, 12.5, 8.25, 13.0, 8.5],  # tiny
        [0, 30.0, 20.0, 20.0, 10.0],  # inverted
        [1, 0.0, 0.0, 68.0, 52.0],  # whole image
        [0, 8.0, 8.0, 8.0 + 4 * 12, 8.0 + 4 * 6],  # 12x6 feature px: ratio exactly 3 and 2
        [1, 2.0, 3.0, 2.0 + 4 * 3.5, 3.0 + 4 * 1.5],  # aligned=False clamps nothing here
        [0, 33.3, 1.7, 47.9, 51.1],
        [1, 21.0, 17.0, 22.0, 45.0],
    ]
    rois = torch.tensor(boxes, dtype=torch.float32, device=device)
    rois[:, 0] = rois[:, 0] % num_images
    return rois


OUTPUT = (3, 4)  # oh * ow = 12 bins: exercises the masked tail of the 16-wide bin block
SCALE = 0.25


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_forward_and_backward_match_torchvision(device, aligned, sampling_ratio):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 5, 13, 17, generator=generator).to(device)
    rois = _rois(device)
    expected_input = features.clone().requires_grad_(True)
    expected = _reference(expected_input, rois, OUTPUT, SCALE, sampling_ratio, aligned)
    grad_output = torch.randn(expected.shape, generator=generator).to(device)
    expected.backward(grad_output)

    actual_input = features.clone().requires_grad_(True)
    with backend.use_backend("triton"):
        actual = roi_align(actual_input, rois, OUTPUT, SCALE, sampling_ratio, aligned)
    actual.backward(grad_output)

    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(actual_input.grad, expected_input.grad, rtol=0, atol=1e-5)


def test_adaptive_grid_uses_exact_ceil(device):
    """A 14-pixel roi side over 7 bins is a sampling ratio of exactly 2 (not 3)."""
    features = torch.zeros(1, 1, 16, 16, device=device)
    features[0, 0, :, 2] = 1.0  # a vertical line hit by exactly one of the 2 sample columns
    rois = torch.tensor([[0, 0.0, 0.0, 14.0, 14.0]], device=device)
    with backend.use_backend("triton"):
        pooled = roi_align(features, rois, 7, 1.0, sampling_ratio=0, aligned=True)
    # Samples of bin column 1 sit at x = 2.0 and 3.0 (aligned shifts by -0.5): 2 rows x 2 columns,
    # one column on the line -> mean 0.5. With 3 samples per axis it would be 1/3.
    torch.testing.assert_close(pooled[0, 0, :, 1], torch.full((7,), 0.5, device=device))
    torch.testing.assert_close(pooled, _reference(features, rois, (7, 7), 1.0, 0, True))


def _pyramid(device, dtype=torch.float32, channels=4):
    """4 levels (strides 4..32) of a 64x96 image, batch 2."""
    generator = torch.Generator().manual_seed(1)
    shapes = [(16, 24), (8, 12), (4, 6), (2, 3)]
    return [
        torch.randn(2, channels, h, w, generator=generator).to(device=device, dtype=dtype)
        for h, w in shapes
    ]


SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]


def _pyramid_boxes(device):
    """Per image boxes spanning all levels, including sides at exact level boundaries."""
    image0 = torch.tensor(
        [
            [3.0, 4.0, 9.0, 12.0],  # small -> P2
            [0.0, 0.0, 56.0, 56.0],  # sqrt(area) = 56 = 224/4 exactly -> boundary of P2/P3
            [10.0, 5.0, 122.0, 61.0],  # 112 x 56
            [-20.0, -10.0, 204.0, 214.0],  # 224 x 224 -> level 4 exactly
            [40.0, 30.0, 41.0, 30.0],  # zero area -> P2
        ],
        device=device,
    )
    image1 = torch.tensor(
        [
            [5.0, 5.0, 117.0, 117.0],  # 112 x 112 -> level 3 exactly
            [0.0, 0.0, 96.0, 64.0],
            [30.0, 20.0, 70.0, 44.0],
            [1.0, 2.0, 900.0, 700.0],  # huge -> clamped to P5
        ],
        device=device,
    )
    return [image0, image1]


@pytest.mark.parametrize("aligned", [True, False])
def test_multilevel_fused_matches_per_level_torchvision(device, aligned):
    features = _pyramid(device)
    boxes = _pyramid_boxes(device)
    levels = assign_boxes_to_levels(boxes, 2, 5)
    assert set(levels.tolist()) == {0, 1, 2, 3}, "the boxes must exercise every level"

    # Reference: torchvision.ops.roi_align on each box's level, box by box.
    rois = torch.cat([torch.cat([torch.full((len(b), 1), i, device=device), b], 1) for i, b in
                      enumerate(boxes)])  # fmt: skip
    ref_inputs = [f.clone().requires_grad_(True) for f in features]
    expected = torch.cat(
        [
            _reference(ref_inputs[lvl], rois[k : k + 1], (2, 3), SCALES[lvl], 2, aligned)
            for k, lvl in enumerate(levels.tolist())
        ]
    )
    grad_output = torch.randn(expected.shape, generator=torch.Generator().manual_seed(2))
    grad_output = grad_output.to(device)
    expected.backward(grad_output)

    for name in ("triton", "torchvision"):
        inputs = [f.clone().requires_grad_(True) for f in features]
        with backend.use_backend(name):
            actual = multilevel_roi_align(
                inputs, boxes, (2, 3), SCALES, sampling_ratio=2, aligned=aligned
            )
        actual.backward(grad_output)
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5, msg=name)
        for level, (got, want) in enumerate(zip(inputs, ref_inputs)):
            torch.testing.assert_close(
                got.grad, want.grad, rtol=0, atol=1e-5, msg=f"{name} level {level}"
            )


def test_multilevel_matches_torchvision_multiscale_roi_align(device):
    """torchvision's MultiScaleRoIAlign: aligned=False, canonical 224 / level 4, scales inferred
    from the feature sizes; its level mapper puts eps outside the log, which moves no box here."""
    features = _pyramid(device)
    boxes = _pyramid_boxes(device)
    boxes = [b + 0.5 for b in boxes]  # off the exact level boundaries, where the eps differ
    pooler = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], output_size=(2, 3), sampling_ratio=2)
    expected = pooler(dict(zip(["p2", "p3", "p4", "p5"], features)), boxes, [(64, 96), (64, 96)])
    for name in ("triton", "torchvision"):
        with backend.use_backend(name):
            actual = multilevel_roi_align(
                features, boxes, (2, 3), SCALES, sampling_ratio=2, aligned=False
            )
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5, msg=name)


def test_assign_boxes_to_levels_hand_computed():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 224.0, 224.0],  # canonical -> level 4
            [0.0, 0.0, 112.0, 112.0],  # half -> 3
            [0.0, 0.0, 111.0, 112.0],  # just below -> 2
            [0.0, 0.0, 448.0, 448.0],  # 5
            [0.0, 0.0, 2000.0, 2000.0],  # clamped to 5
            [5.0, 5.0, 5.0, 9.0],  # zero area -> clamped to 2
            [9.0, 9.0, 5.0, 5.0],  # inverted: zero area
            [float("nan"), 0.0, 10.0, 10.0],  # non-finite -> index 0
            [0.0, 0.0, float("inf"), 10.0],
        ]
    )
    levels = assign_boxes_to_levels([boxes[:4], boxes[4:]], 2, 5)
    assert levels.dtype == torch.int64
    assert levels.tolist() == [2, 1, 0, 3, 3, 0, 0, 0, 0]


def test_assign_boxes_to_levels_matches_fpn_formula_in_float64():
    generator = torch.Generator().manual_seed(3)
    xy = torch.rand(1000, 2, generator=generator) * 500
    # Log-uniform sides from 1 to 1400 px, so every level and both clamps are used.
    wh = torch.exp(torch.rand(1000, 2, generator=generator) * math.log(1400))
    boxes = torch.cat([xy, xy + wh], 1)
    size = (wh[:, 0].double() * wh[:, 1].double()).sqrt()
    exact = torch.floor(4 + torch.log2(size / 224 + 1e-8)).clamp(2, 5) - 2
    # Keep boxes farther than fp32 rounding from a boundary (the float64 formula is the spec).
    ratio = torch.log2(size / 224 + 1e-8)
    clear = (ratio - ratio.round()).abs() > 1e-5
    actual = assign_boxes_to_levels([boxes[:600], boxes[600:]], 2, 5)
    assert torch.equal(actual[clear], exact[clear].long())
    assert clear.sum() > 990


def test_assign_boxes_to_levels_agrees_with_torchvision_level_mapper_off_boundaries():
    """torchvision's LevelMapper adds its eps (1e-6) outside the log; lazydet follows the FPN /
    Detectron2 formula (1e-8 inside). They agree except within ~1e-6 of a level boundary."""
    from torchvision.ops.poolers import LevelMapper

    generator = torch.Generator().manual_seed(9)
    xy = torch.rand(500, 2, generator=generator) * 300
    wh = torch.exp(torch.rand(500, 2, generator=generator) * math.log(1400))
    boxes = torch.cat([xy, xy + wh], 1)
    mapper = LevelMapper(k_min=2, k_max=5, canonical_scale=224, canonical_level=4, eps=1e-6)
    assert torch.equal(assign_boxes_to_levels([boxes], 2, 5), mapper([boxes]))
    # Just below the P3 boundary (side 112 minus 2 ulps): torchvision's outer eps rounds it up.
    side = 112.0 * (1 - 2 * 2.0**-24)
    just_below = torch.tensor([[0.0, 0.0, side, side]])
    assert assign_boxes_to_levels([just_below], 2, 5).item() == 0
    assert mapper([just_below]).item() == 1


def _boundary_boxes() -> torch.Tensor:
    """Boxes whose sqrt(area) is within a few ulps of each level boundary, plus odd ones."""
    sides = []
    for power in (-3, -2, -1, 0, 1, 2):
        side = torch.tensor(224.0 * 2.0**power, dtype=torch.float32)
        for step in range(-3, 4):
            sides.append(side + step * torch.finfo(torch.float32).eps * side)
    sides = torch.stack(sides)
    square = torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], 1)
    odd = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],
            [5.0, 5.0, 1.0, 1.0],
            [float("nan")] * 4,
            [0.0, 0.0, float("inf"), 3.0],
            [-float("inf"), 0.0, 3.0, 3.0],
            [0.0, 0.0, 3e38, 3e38],  # area overflows to inf
            [-1e-30, 0.0, 1e-30, 1e-30],
        ]
    )
    generator = torch.Generator().manual_seed(4)
    xy = torch.rand(200, 2, generator=generator) * 1000 - 200
    wh = torch.exp(torch.rand(200, 2, generator=generator) * math.log(2000))
    return torch.cat([square, odd, torch.cat([xy, xy + wh], 1)])


@pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning")
@pytest.mark.parametrize("min_level,max_level", [(2, 5), (3, 6), (0, 0)])
def test_kernel_level_choice_equals_assign_boxes_to_levels(device, min_level, max_level):
    boxes = _boundary_boxes()
    mapping = kernels.FpnLevelMapping(
        min_level=min_level, num_levels=max_level - min_level + 1, eps=1e-8
    )
    expected = assign_boxes_to_levels([boxes], min_level, max_level)
    actual = kernels.fpn_levels(boxes.to(device), mapping).cpu()
    assert torch.equal(actual, expected)


def test_fused_kernel_pools_from_the_assigned_level(device):
    """Constant maps (value = level + 1) reveal which level each roi read, including rois at
    the exact boundaries and ulps around them."""
    features = [torch.full((1, 1, 40, 40), float(v + 1), device=device) for v in range(4)]
    # The boundary squares, anchored at the origin: a square of side s read from its level
    # (stride 2**l, s < 224 * 2**(l - 3)) has its centre within 14 px of the map's corner, so
    # one sample per roi (sampling_ratio=1) stays inside the 40 x 40 maps.
    boxes = _boundary_boxes()[:42]
    levels = assign_boxes_to_levels([boxes], 2, 5)
    with backend.use_backend("triton"):
        pooled = multilevel_roi_align(
            features, [boxes.to(device)], 1, SCALES, sampling_ratio=1, aligned=False
        )
    assert torch.equal(pooled.flatten().cpu(), (levels + 1).float())


@pytest.mark.parametrize("dtype,atol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_half_precision_features_against_fp32_reference(device, dtype, atol):
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(2, 6, 13, 17, generator=generator).to(device=device, dtype=dtype)
    rois = _rois(device)
    reference_input = features.float().requires_grad_(True)
    expected = _reference(reference_input, rois, OUTPUT, SCALE, 0, True)
    grad_output = torch.randn(expected.shape, generator=generator).to(device)
    expected.backward(grad_output)

    for name in ("triton", "torchvision"):
        inputs = features.clone().requires_grad_(True)
        with backend.use_backend(name):
            actual = roi_align(inputs, rois, OUTPUT, SCALE)
        actual.backward(grad_output.to(dtype))
        assert actual.dtype == dtype and inputs.grad.dtype == dtype
        torch.testing.assert_close(actual.float(), expected, rtol=0, atol=atol, msg=name)
        torch.testing.assert_close(
            inputs.grad.float(), reference_input.grad, rtol=0, atol=atol, msg=name
        )


def _grad_of_features(features, rois, grad_output, **kwargs):
    inputs = features.clone().requires_grad_(True)
    roi_align(inputs, rois, OUTPUT, SCALE, **kwargs).backward(grad_output)
    return inputs.grad


def test_deterministic_backward(device):
    generator = torch.Generator().manual_seed(6)
    features = torch.randn(2, 5, 13, 17, generator=generator).to(device)
    rois = _rois(device)  # overlapping rois: several programs add into the same pixels
    reference_input = features.clone().requires_grad_(True)
    expected = _reference(reference_input, rois, OUTPUT, SCALE, 0, True)
    grad_output = torch.randn(expected.shape, generator=generator).to(device)
    expected.backward(grad_output)

    with backend.use_backend("triton"):
        first = _grad_of_features(features, rois, grad_output, deterministic=True)
        second = _grad_of_features(features, rois, grad_output, deterministic=True)
        floating = _grad_of_features(features, rois, grad_output, deterministic=False)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, reference_input.grad, rtol=0, atol=1e-5)
    torch.testing.assert_close(first, floating, rtol=0, atol=1e-5)


@pytest.mark.parametrize("grad_scale", [1e-6, 1e6])
def test_deterministic_backward_adapts_fixed_point_to_gradient_magnitude(device, grad_scale):
    """The fixed-point scale follows the gradient: tiny gradients keep their digits and large
    ones do not overflow int64."""
    generator = torch.Generator().manual_seed(8)
    features = torch.randn(2, 3, 13, 17, generator=generator).to(device)
    rois = _rois(device)[[0, 1, 7, 8]]
    reference_input = features.clone().requires_grad_(True)
    expected = _reference(reference_input, rois, OUTPUT, SCALE, 0, True)
    grad_output = (torch.randn(expected.shape, generator=generator) * grad_scale).to(device)
    expected.backward(grad_output)
    with backend.use_backend("triton"):
        actual = _grad_of_features(features, rois, grad_output, deterministic=True)
    torch.testing.assert_close(actual, reference_input.grad, rtol=1e-5, atol=1e-6 * grad_scale)


def test_deterministic_backward_follows_torch_flag(device, monkeypatch):
    calls = []
    original = kernels.roi_align_backward

    def spy(*args, **kwargs):
        calls.append(kwargs["deterministic"])
        return original(*args, **kwargs)

    monkeypatch.setattr(kernels, "roi_align_backward", spy)
    features = torch.randn(1, 2, 6, 6, device=device)
    rois = torch.tensor([[0, 1.0, 1.0, 9.0, 9.0]], device=device)
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        with backend.use_backend("triton"):
            torch.use_deterministic_algorithms(True)
            _grad_of_features(features, rois, torch.ones(1, 2, *OUTPUT, device=device))
            torch.use_deterministic_algorithms(False)
            _grad_of_features(features, rois, torch.ones(1, 2, *OUTPUT, device=device))
    finally:
        torch.use_deterministic_algorithms(previous)
    assert calls == [True, False]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_deterministic_backward_with_nonfinite_grad_is_all_nan(device):
    features = torch.randn(1, 2, 6, 6, device=device)
    rois = torch.tensor([[0, 1.0, 1.0, 9.0, 9.0]], device=device)
    grad_output = torch.ones(1, 2, *OUTPUT, device=device)
    grad_output[0, 1, 0, 0] = float("inf")
    with backend.use_backend("triton"):
        grad = _grad_of_features(features, rois, grad_output, deterministic=True)
    assert torch.isnan(grad).all()


BACKENDS = ["triton", "torchvision"]


@pytest.mark.parametrize("name", BACKENDS)
def test_empty_rois(device, name):
    features = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    with backend.use_backend(name):
        pooled = roi_align(features, torch.zeros(0, 5, device=device), (4, 5), 0.5)
        pooled_ml = multilevel_roi_align(
            [features, features[:, :, ::2, ::2]],
            [torch.zeros(0, 4, device=device)] * 2,
            7,
            [0.25, 0.125],
        )
    assert pooled.shape == (0, 3, 4, 5) and pooled_ml.shape == (0, 3, 7, 7)
    pooled.sum().backward()  # still part of the graph
    assert torch.equal(features.grad, torch.zeros_like(features))


@pytest.mark.parametrize("name", BACKENDS)
def test_invalid_rois_pool_zeros_and_get_no_gradient(device, name):
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(2, 3, 13, 17, generator=generator).to(device)
    good = _rois(device)[:4]
    nan = float("nan")
    inf = float("inf")
    bad = torch.tensor(
        [
            [0, nan, 1.0, 5.0, 5.0],
            [1, 1.0, 1.0, inf, 5.0],
            [0, -inf, -inf, inf, inf],
            [nan, 1.0, 1.0, 5.0, 5.0],
            [2, 1.0, 1.0, 5.0, 5.0],  # batch index out of range (N = 2)
            [-1, 1.0, 1.0, 5.0, 5.0],
        ],
        device=device,
    )
    rois = torch.cat([good[:2], bad, good[2:]])
    grad_output = torch.randn(len(rois), 3, *OUTPUT, generator=generator).to(device)
    inputs = features.clone().requires_grad_(True)
    with backend.use_backend(name):
        pooled = roi_align(inputs, rois, OUTPUT, SCALE)
    pooled.backward(grad_output)

    keep = torch.tensor([True, True] + [False] * len(bad) + [True, True], device=device)
    reference_input = features.clone().requires_grad_(True)
    expected = _reference(reference_input, rois[keep], OUTPUT, SCALE, 0, True)
    expected.backward(grad_output[keep])
    assert torch.equal(pooled[~keep], torch.zeros_like(pooled[~keep]))
    torch.testing.assert_close(pooled[keep], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(inputs.grad, reference_input.grad, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", BACKENDS)
def test_multilevel_invalid_boxes_pool_zeros(device, name):
    features = _pyramid(device)
    boxes = _pyramid_boxes(device)
    boxes[0][1, 2] = float("nan")
    boxes[1][0, 0] = float("inf")
    with backend.use_backend(name):
        pooled = multilevel_roi_align(features, boxes, 2, SCALES, sampling_ratio=2)
    assert torch.equal(pooled[1], torch.zeros_like(pooled[1]))
    assert torch.equal(pooled[5], torch.zeros_like(pooled[5]))
    assert pooled.abs().sum() > 0


def test_forced_torchvision_backend_never_launches_a_kernel(device, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("Triton kernel launched under the torchvision backend")

    monkeypatch.setattr(kernels, "roi_align_forward", fail)
    features = torch.randn(1, 2, 6, 6, device=device)
    rois = torch.tensor([[0, 1.0, 1.0, 9.0, 9.0]], device=device)
    with backend.use_backend("torchvision"):
        roi_align(features, rois, 2, 0.5)
        multilevel_roi_align([features], [rois[:, 1:]], 2, [0.5])


def test_bad_arguments_raise_clear_errors(device):
    features = torch.randn(1, 2, 6, 6, device=device)
    rois = torch.tensor([[0, 1.0, 1.0, 9.0, 9.0]], device=device)
    with pytest.raises(TypeError, match="rois must be a Tensor"):
        roi_align(features, rois[:, 1:], 2, 0.5)
    with pytest.raises(TypeError, match="features must be a Tensor"):
        roi_align(features[0], rois, 2, 0.5)
    with pytest.raises(ValueError, match="output_size"):
        roi_align(features, rois, (2, 0), 0.5)
    with pytest.raises(ValueError, match="spatial_scale"):
        roi_align(features, rois, 2, 0.0)
    with pytest.raises(ValueError, match="power of two"):
        multilevel_roi_align([features], [rois[:, 1:]], 2, [0.3])
    with pytest.raises(ValueError, match="halve"):
        multilevel_roi_align([features, features], [rois[:, 1:]], 2, [0.25, 0.0625])
    with pytest.raises(ValueError, match="one Tensor"):
        multilevel_roi_align([features], [rois[:, 1:], rois[:, 1:]], 2, [0.5])
    with pytest.raises(ValueError, match="min_level"):
        assign_boxes_to_levels([rois[:, 1:]], 5, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_vectorised_cpu_backward_matches_torchvision_kernel(dtype, aligned, sampling_ratio):
    """The channel-vectorised CPU backward (used from CPU_BACKWARD_MIN_ROIS rois on) against
    torchvision's serial kernel: the edge-case rois of ``_rois`` (outside, tiny, zero-area,
    inverted) repeated, plus random rois of every size, so several sample grids mix in one call."""
    roi_align_module = importlib.import_module("lazydet.ops.roi_align")
    generator = torch.Generator().manual_seed(7)
    num_images, channels, height, width = 2, 5, 13, 17
    corners = torch.rand(60, 2, generator=generator) * torch.tensor([80.0, 60.0]) - 10.0
    sizes = torch.rand(60, 2, generator=generator) * 60.0
    random_rois = torch.cat(
        [torch.randint(0, num_images, (60, 1), generator=generator), corners, corners + sizes],
        dim=1,
    )
    rois = torch.cat([_rois(torch.device("cpu"), num_images).repeat(3, 1), random_rois])
    rois = rois.to(dtype)
    assert rois.shape[0] >= roi_align_module.CPU_BACKWARD_MIN_ROIS
    grad = torch.randn(rois.shape[0], channels, 3, 4, generator=generator, dtype=dtype)
    expected = torch.ops.torchvision._roi_align_backward(
        grad, rois, 0.25, 3, 4, num_images, channels, height, width,
        sampling_ratio if sampling_ratio > 0 else -1, aligned,
    )  # fmt: skip
    actual = roi_align_module._roi_align_backward_cpu(
        grad, rois, (num_images, channels, height, width), (3, 4), 0.25, sampling_ratio, aligned
    )
    assert actual.dtype == dtype and actual.is_contiguous()
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol)
