"""Matching predictions (anchors, proposals) to ground-truth boxes from a quality matrix (IoU)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

IGNORE_LABEL = -1
NEGATIVE_LABEL = 0
POSITIVE_LABEL = 1


class Matcher:
    """Gives every prediction its best ground truth and a label from that match's quality.

    ``thresholds`` split the quality axis into ``len(thresholds) + 1`` half-open intervals
    ``[-inf, t0), [t0, t1), ..., [tk, +inf)`` and ``labels`` gives one label per interval:
    ``1`` (positive), ``0`` (negative) or ``-1`` (ignored). The RPN uses
    ``thresholds=[0.3, 0.7], labels=[0, -1, 1]``; Fast R-CNN ``[0.5], [0, 1]``. This is
    torchvision's ``Matcher(high, low)`` with ``thresholds=[low, high]``: quality ``>= high`` is a
    match, ``< low`` background, in between ignored.

    Args:
        thresholds: increasing quality thresholds.
        labels: one label in ``{-1, 0, 1}`` per interval.
        allow_low_quality_matches: also label positive, for each ground truth, the predictions
            with the highest quality for it (all of them on ties), even below the top threshold;
            their matched index stays the ground truth they overlap most, so a prediction that
            is the best one for gt A but overlaps gt B more is matched to B (as torchvision and
            Detectron2 do). This guarantees every ground truth some positive prediction.
    """

    def __init__(
        self,
        *,
        thresholds: Sequence[float],
        labels: Sequence[int],
        allow_low_quality_matches: bool = False,
    ) -> None:
        thresholds = [float(t) for t in thresholds]
        labels = [int(label) for label in labels]
        if any(b < a for a, b in itertools.pairwise(thresholds)):
            raise ValueError(f"Matcher thresholds must be increasing, got {thresholds}.")
        if len(labels) != len(thresholds) + 1:
            raise ValueError(
                f"Matcher needs one label per interval: {len(thresholds)} thresholds make "
                f"{len(thresholds) + 1} intervals, got {len(labels)} labels {labels}."
            )
        if any(label not in (IGNORE_LABEL, NEGATIVE_LABEL, POSITIVE_LABEL) for label in labels):
            raise ValueError(f"Matcher labels must each be -1, 0 or 1, got {labels}.")
        self.thresholds = [-math.inf, *thresholds, math.inf]
        self.labels = labels
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __repr__(self) -> str:
        return (
            f"Matcher(thresholds={self.thresholds[1:-1]}, labels={self.labels}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches})"
        )

    def __call__(self, match_quality_matrix: Tensor) -> tuple[Tensor, Tensor]:
        """Match the N predictions against the M ground truths.

        Args:
            match_quality_matrix: ``[M, N]`` quality of each (ground truth, prediction) pair,
                e.g. ``pairwise_iou(gt_boxes, anchors)``.

        Returns:
            ``matched_idxs``: ``[N]`` int64 index in ``[0, M)`` of each prediction's best
            ground truth (0 when M == 0; meaningful only where the label is 1), and
            ``match_labels``: ``[N]`` int8 label in ``{-1, 0, 1}``.
        """
        if not isinstance(match_quality_matrix, Tensor) or match_quality_matrix.dim() != 2:
            raise ValueError(
                "match_quality_matrix must be a 2-D tensor [num_gt, num_predictions], got "
                f"{getattr(match_quality_matrix, 'shape', type(match_quality_matrix).__name__)}."
            )
        num_gt, num_pred = match_quality_matrix.shape
        device = match_quality_matrix.device
        if num_pred == 0:
            empty = torch.empty(0, dtype=torch.int64, device=device)
            return empty, empty.to(torch.int8)
        if num_gt == 0:
            # An image without annotations: every prediction falls in the lowest interval
            # (background for RPN and Fast R-CNN), which trains the detector on negatives.
            matched_idxs = torch.zeros(num_pred, dtype=torch.int64, device=device)
            match_labels = torch.full((num_pred,), self.labels[0], dtype=torch.int8, device=device)
            return matched_idxs, match_labels

        matched_vals, matched_idxs = match_quality_matrix.max(dim=0)
        # Every finite quality falls in one interval; a NaN quality stays ignored.
        match_labels = torch.full((num_pred,), IGNORE_LABEL, dtype=torch.int8, device=device)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            in_interval = (matched_vals >= low) & (matched_vals < high)
            match_labels[in_interval] = label

        if self.allow_low_quality_matches:
            best_quality_per_gt = match_quality_matrix.max(dim=1, keepdim=True).values
            is_best_for_some_gt = (match_quality_matrix == best_quality_per_gt).any(dim=0)
            match_labels[is_best_for_some_gt] = POSITIVE_LABEL
        return matched_idxs, match_labels
