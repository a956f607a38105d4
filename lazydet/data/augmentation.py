"""Augmentation pipelines built from ``torchvision.transforms.v2``.

lazydet writes no augmentation maths: these functions only assemble torchvision transforms into
the recipes detection training uses. Every pipeline takes and returns the sample dict that
:class:`lazydet.data.DatasetMapper` builds (``image``, ``boxes``, ``points``, optionally
``masks`` as tv_tensors), so any v2 transform can be added to the lists below in a config.

Horizontal flips need nothing special: the mapper detects a mirrored sample and swaps left/right
keypoints by the dataset's flip map (see ``DatasetMapper``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torchvision.transforms.v2 as T

__all__ = [
    "iter_transforms",
    "large_scale_jitter",
    "resize_shortest_edge",
    "test_augmentations",
    "train_augmentations",
]


def resize_shortest_edge(
    short_edge_length: int | Sequence[int], max_size: int, *, sample_style: str = "choice"
) -> T.Transform:
    """Resize so the short edge is ``short_edge_length`` (capped so the long edge <= ``max_size``).

    ``short_edge_length`` is one size (deterministic, ``v2.Resize``) or several sizes:
    ``sample_style="choice"`` picks one of them per image, ``"range"`` takes ``(min, max)`` and
    picks any integer in between (both through ``v2.RandomShortestSize``).
    """
    if isinstance(short_edge_length, int):
        return T.Resize(short_edge_length, max_size=max_size, antialias=True)
    sizes = list(short_edge_length)
    if sample_style == "range":
        if len(sizes) != 2 or sizes[0] > sizes[1]:
            raise ValueError(f"sample_style='range' needs (min, max), got {short_edge_length!r}")
        sizes = list(range(sizes[0], sizes[1] + 1))
    elif sample_style != "choice":
        raise ValueError(f"sample_style must be 'choice' or 'range', got {sample_style!r}")
    return T.RandomShortestSize(min_size=sizes, max_size=max_size, antialias=True)


def resize_longest_edge(max_size: int) -> T.Transform:
    """Resize so the long edge is ``max_size`` (the aspect ratio kept): ViTDet's test resize.

    ``v2.Resize(size=None, max_size=...)``; a short edge equal to ``max_size`` would not do it,
    torchvision refuses ``max_size`` equal to the requested size.
    """
    return T.Resize(size=None, max_size=max_size, antialias=True)


def large_scale_jitter(
    image_size: int = 1024, scale_range: tuple[float, float] = (0.1, 2.0), *, fill: int = 0
) -> T.Transform:
    """Large-scale jitter (Ghiasi et al. 2021): random rescale of ``image_size x image_size``
    by ``scale_range`` (aspect kept), then a random ``image_size`` square crop, padding with
    ``fill`` where the image is smaller than the square."""
    return T.Compose(
        [
            T.ScaleJitter(
                target_size=(image_size, image_size), scale_range=scale_range, antialias=True
            ),
            T.RandomCrop(size=(image_size, image_size), pad_if_needed=True, fill=fill),
        ]
    )


def train_augmentations(
    *,
    short_edge_length: int | Sequence[int] = (640, 672, 704, 736, 768, 800),
    max_size: int = 1333,
    horizontal_flip: bool = True,
    color_jitter: float = 0.0,
) -> T.Transform:
    """The standard R-CNN training recipe: multi-scale shortest-edge resize, random h-flip,
    optional colour jitter (brightness/contrast/saturation by ``color_jitter``)."""
    transforms: list[T.Transform] = [resize_shortest_edge(short_edge_length, max_size)]
    if horizontal_flip:
        transforms.append(T.RandomHorizontalFlip(p=0.5))
    if color_jitter > 0:
        transforms.append(
            T.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter)
        )
    return T.Compose(transforms)


def test_augmentations(*, short_edge_length: int = 800, max_size: int = 1333) -> T.Transform:
    """Deterministic shortest-edge resize for inference."""
    return T.Compose([resize_shortest_edge(short_edge_length, max_size)])


def iter_transforms(transform: object) -> Iterator[object]:
    """``transform`` and every transform nested in it (Compose, RandomApply, RandomChoice, ...)."""
    yield transform
    children = getattr(transform, "transforms", None)
    if isinstance(children, (list, tuple, torch.nn.ModuleList)):
        for child in children:
            yield from iter_transforms(child)
