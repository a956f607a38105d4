"""The shared test helpers in tests/helpers.py: the kernel-import policy and ``random_boxes``."""

from __future__ import annotations

import importlib

import pytest
import torch
from helpers import import_kernels, random_boxes


def _failing_import(error: ImportError):
    def import_module(name: str):
        raise error

    return import_module


@pytest.mark.parametrize("ci", ["", "false"])
def test_missing_triton_skips_outside_ci(monkeypatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    error = ModuleNotFoundError("No module named 'triton'", name="triton")
    monkeypatch.setattr(importlib, "import_module", _failing_import(error))
    with pytest.raises(pytest.skip.Exception, match="needs Triton"):
        import_kernels("lazydet.kernels.nms")


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_missing_triton_fails_in_ci(monkeypatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    error = ModuleNotFoundError("No module named 'triton.language'", name="triton.language")
    monkeypatch.setattr(importlib, "import_module", _failing_import(error))
    with pytest.raises(ImportError, match=r"lazydet\.kernels\.nms failed to import.*CI=true"):
        import_kernels("lazydet.kernels.nms")


@pytest.mark.parametrize("ci", ["", "true"])
def test_broken_import_always_fails(monkeypatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    error = ImportError("cannot import name '_nms_kernel' from 'lazydet.kernels.nms'")
    monkeypatch.setattr(importlib, "import_module", _failing_import(error))
    with pytest.raises(ImportError, match="broken import"):
        import_kernels("lazydet.kernels.nms")


def test_real_kernel_modules_import() -> None:
    assert hasattr(import_kernels("lazydet.kernels.nms"), "__file__")
    assert hasattr(import_kernels("lazydet.kernels.roi_align"), "__file__")


def test_random_boxes_respects_its_ranges() -> None:
    boxes = random_boxes(2000, 0, extent=(60.0, 40.0), offset=-5.0, min_side=2.0, side_spread=30.0)
    assert boxes.shape == (2000, 4) and boxes.dtype == torch.float32
    x0, y0, x1, y1 = boxes.unbind(1)
    assert x0.min() >= -5 and x0.max() < 55 and y0.min() >= -5 and y0.max() < 35
    sides = torch.stack((x1 - x0, y1 - y0), dim=1)
    assert sides.min() >= 2.0 - 1e-5 and sides.max() < 32.0 + 1e-5
    assert torch.equal(random_boxes(5, 3), random_boxes(5, torch.Generator().manual_seed(3)))
    clipped = random_boxes(500, 1, extent=(42.0, 35.0), side_spread=40.0, clip_to=(60, 50))
    assert clipped[:, 2].max() <= 60 and clipped[:, 3].max() <= 50
    assert random_boxes(3, 0, dtype=torch.float64).dtype == torch.float64
