"""The part every dense (per-anchor) head shares: run the head on the pyramid levels, tile the
anchors, put the predictions in anchor order, and concatenate the levels for the losses.

RPN (one objectness logit per anchor) and RetinaNet (one logit per class and anchor) differ in
what they predict and how they label anchors, not in this plumbing, so it lives here once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from lazydet.modeling.anchor_generator import DefaultAnchorGenerator
from lazydet.structures import Boxes


def flatten_per_anchor(prediction: Tensor, values_per_anchor: int) -> Tensor:
    """``[B, A * k, H, W]`` -> ``[B, H * W * A, k]``: the order of the generated anchors
    (location-major, then cell anchor)."""
    batch, _, height, width = prediction.shape
    prediction = prediction.reshape(batch, -1, values_per_anchor, height, width)
    return prediction.permute(0, 3, 4, 1, 2).reshape(batch, -1, values_per_anchor)


def dense_head_outputs(
    *,
    owner: str,
    head: Callable[[list[Tensor]], tuple[Sequence[Tensor], Sequence[Tensor]]],
    features: Mapping[str, Tensor],
    in_features: Sequence[str],
    strides: Sequence[int],
    anchor_generator: DefaultAnchorGenerator,
    padded_size: Sequence[int],
    scores_per_anchor: int,
    scores_hint: str = "",
) -> tuple[list[Boxes], list[Tensor], list[Tensor]]:
    """Anchors and the head's per-anchor predictions on the ``in_features`` levels.

    Args:
        owner: the module's name, for the error messages.
        head: maps the level features to per level scores ``[B, A * scores_per_anchor, H, W]``
            and box deltas ``[B, A * 4, H, W]``.
        features: feature maps ``[B, C, H_l, W_l]`` by name (the backbone's outputs).
        in_features, strides: the levels the head runs on and their strides.
        anchor_generator: tiles the anchors; with ``padded_size`` (the batch's padded
            ``(height, width)``) for anchors spaced by the image size.
        scores_per_anchor: numbers the head scores each anchor with (1 for RPN's objectness,
            ``num_classes`` for RetinaNet).
        scores_hint: what else the head needs for the counts to match, added to the error
            message (e.g. ``"num_classes = 80"``).

    Returns:
        Per level: ``Boxes`` of ``R_l`` anchors, scores ``[B, R_l, scores_per_anchor]`` and box
        deltas ``[B, R_l, 4]``, both in anchor order.
    """
    missing = [name for name in in_features if name not in features]
    if missing:
        raise ValueError(
            f"{owner} in_features {list(in_features)} are not all among the backbone outputs "
            f"{sorted(features)}: missing {missing}."
        )
    level_features = [features[name] for name in in_features]
    anchors = anchor_generator(level_features, strides, padded_size=padded_size)
    level_scores, level_deltas = head(level_features)
    level_scores = [flatten_per_anchor(x, scores_per_anchor) for x in level_scores]
    level_deltas = [flatten_per_anchor(x, 4) for x in level_deltas]
    for level, (scores, deltas, level_anchors) in enumerate(
        zip(level_scores, level_deltas, anchors)
    ):
        if scores.shape[1] != len(level_anchors) or deltas.shape[1] != len(level_anchors):
            also = f" and {scores_hint}" if scores_hint else ""
            raise ValueError(
                f"{owner} head predicts {scores.shape[1]} score and {deltas.shape[1]} box "
                f"outputs on level {level} for {len(level_anchors)} anchors; the head's "
                f"num_anchors must equal the anchor generator's num_cell_anchors{also}."
            )
    return anchors, level_scores, level_deltas


def concat_levels(
    anchors: Sequence[Boxes], level_scores: Sequence[Tensor], level_deltas: Sequence[Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """All levels in one: anchors ``[R, 4]``, scores ``[B, R, ...]``, deltas ``[B, R, 4]``
    (``R`` the anchors of all levels, level by level, as the anchor labels are)."""
    all_anchors = Boxes.cat(list(anchors)).tensor
    return all_anchors, torch.cat(list(level_scores), dim=1), torch.cat(list(level_deltas), dim=1)
