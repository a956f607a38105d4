"""ImageList padding against hand-computed sizes and the original images (round trip)."""

from __future__ import annotations

import pytest
import torch

from lazydet.structures import ImageList


def images() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(3, 5, 7, generator=generator), torch.rand(3, 9, 4, generator=generator)]


def test_pads_bottom_right_to_max_size_and_keeps_true_sizes():
    originals = images()
    batch = ImageList.from_tensors(originals, pad_value=-1.0)
    assert batch.tensor.shape == (2, 3, 9, 7)
    assert batch.image_sizes == [(5, 7), (9, 4)]
    assert len(batch) == 2
    for index, original in enumerate(originals):
        assert torch.equal(batch[index], original)  # round trip, top-left aligned
    assert (batch.tensor[0, :, 5:, :] == -1).all()
    assert (batch.tensor[1, :, :, 4:] == -1).all()


@pytest.mark.parametrize(
    ("divisibility", "expected"), [(0, (9, 7)), (1, (9, 7)), (4, (12, 8)), (32, (32, 32))]
)
def test_size_divisibility_rounds_up(divisibility, expected):
    batch = ImageList.from_tensors(images(), size_divisibility=divisibility)
    assert batch.tensor.shape[-2:] == expected
    assert batch.image_sizes == [(5, 7), (9, 4)]


def test_exact_multiple_is_not_padded_further():
    batch = ImageList.from_tensors([torch.zeros(1, 8, 16)], size_divisibility=8)
    assert batch.tensor.shape == (1, 1, 8, 16)


def test_square_size():
    batch = ImageList.from_tensors(images(), square_size=16)
    assert batch.tensor.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="square_size=8"):
        ImageList.from_tensors(images(), square_size=8)


def test_dtype_is_kept():
    batch = ImageList.from_tensors([torch.ones(3, 2, 2, dtype=torch.uint8)], 4, pad_value=7)
    assert batch.tensor.dtype == torch.uint8
    assert batch.tensor[0, 0].tolist() == [[1, 1, 7, 7], [1, 1, 7, 7], [7] * 4, [7] * 4]


def test_errors():
    with pytest.raises(ValueError, match="empty list"):
        ImageList.from_tensors([])
    with pytest.raises(ValueError, match=r"image 1 must be a \[C, H, W\]"):
        ImageList.from_tensors([torch.zeros(3, 2, 2), torch.zeros(2, 2)])
    with pytest.raises(ValueError, match="image 1 has 1 channels"):
        ImageList.from_tensors([torch.zeros(3, 2, 2), torch.zeros(1, 2, 2)])
    with pytest.raises(ValueError, match=r"image 1 is torch\.float64"):
        ImageList.from_tensors([torch.zeros(3, 2, 2), torch.zeros(3, 2, 2, dtype=torch.float64)])
    with pytest.raises(ValueError, match="2 image_sizes for a batch of 1"):
        ImageList(torch.zeros(1, 3, 4, 4), [(4, 4), (4, 4)])
    with pytest.raises(ValueError, match="exceeds"):
        ImageList(torch.zeros(1, 3, 4, 4), [(5, 4)])


def test_to():
    batch = ImageList.from_tensors(images()).to("cpu", torch.float64)
    assert batch.tensor.dtype == torch.float64 and batch.device == torch.device("cpu")
    assert batch.image_sizes == [(5, 7), (9, 4)]
