"""The input checks the per-ROI dense losses share (``mask_rcnn_loss``, ``keypoint_rcnn_loss``):
square ``[R, K, S, S]`` logits and one ground-truth entry per image of the proposals."""

from __future__ import annotations

from collections.abc import Sized

from torch import Tensor

__all__ = ["check_roi_loss_inputs"]


def check_roi_loss_inputs(
    logits: Tensor,
    proposals: Sized,
    ground_truth: Sized,
    *,
    loss: str,
    names: tuple[str, str, str],
) -> None:
    """Raise one ``ValueError`` naming the argument at fault.

    Args:
        logits: ``[R, K, S, S]`` per-ROI logits; the last two sides must be equal.
        proposals: the per-image proposals.
        ground_truth: the per-image ground truth, as many as ``proposals``.
        loss: the loss's name, for the message (``"mask_rcnn_loss"``).
        names: ``(logits name, side letter, ground-truth name)`` as the loss's docstring writes
            them (``("mask_logits", "M", "gt_masks")``).
    """
    logits_name, side_name, ground_truth_name = names
    height, width = logits.shape[-2:]
    if height != width:
        raise ValueError(
            f"{logits_name} must be square [R, K, {side_name}, {side_name}], "
            f"got {tuple(logits.shape)}."
        )
    if len(proposals) != len(ground_truth):
        raise ValueError(
            f"{loss} got proposals of {len(proposals)} images and {ground_truth_name} of "
            f"{len(ground_truth)}."
        )
