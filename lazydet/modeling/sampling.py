"""Sampling a fixed-size, class-balanced minibatch of labelled anchors or proposals."""

from __future__ import annotations

import torch
from torch import Tensor


def subsample_labels(
    labels: Tensor,
    *,
    num_samples: int,
    positive_fraction: float,
    background_label: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Pick at most ``num_samples`` elements, at most ``positive_fraction`` of them positive.

    Elements labelled ``-1`` are ignored, ``background_label`` are negatives, anything else is a
    positive (0/1 labels of the RPN with ``background_label=0``, class ids of Fast R-CNN with
    ``background_label=num_classes``). When there are too few positives the negatives fill the
    rest; both sets are drawn uniformly without replacement, positives first, so two samplers fed
    the same labels and the same random state draw the same elements.

    Args:
        labels: ``[N]`` integer (or float) labels.
        num_samples: total number of elements to keep.
        positive_fraction: largest share of positives, in ``[0, 1]``.
        background_label: the label that marks a negative.
        generator: random generator; the global one when None.

    Returns:
        ``(positive_idxs, negative_idxs)``: int64 indices into ``labels``.
    """
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be within [0, 1], got {positive_fraction}.")
    if num_samples < 0:
        raise ValueError(f"num_samples must be non-negative, got {num_samples}.")
    if labels.dim() != 1:
        raise ValueError(f"labels must be a 1-D tensor, got shape {tuple(labels.shape)}.")
    positive = torch.nonzero((labels != -1) & (labels != background_label)).squeeze(1)
    negative = torch.nonzero(labels == background_label).squeeze(1)

    num_pos = min(int(num_samples * positive_fraction), positive.numel())
    num_neg = min(num_samples - num_pos, negative.numel())

    # No generator argument when there is none: torch.compile traces randperm of a data-dependent
    # size (these counts) only through the overload without one; the draws are the same.
    random = {} if generator is None else {"generator": generator}
    pos_perm = torch.randperm(positive.numel(), device=labels.device, **random)
    neg_perm = torch.randperm(negative.numel(), device=labels.device, **random)
    return positive[pos_perm[:num_pos]], negative[neg_perm[:num_neg]]
