"""Box regression parameterisation: boxes <-> (dx, dy, dw, dh) deltas, and the losses defined on it.

Both boxes and deltas follow the R-CNN convention used by Detectron2 and torchvision (current
versions, no "+1" in widths): for a source box with centre ``(x, y)`` and size ``(w, h)`` and a
target box ``(x', y', w', h')``::

    dx = wx * (x' - x) / w      dy = wy * (y' - y) / h
    dw = ww * log(w' / w)       dh = wh * log(h' / h)

Boxes are ``XYXY`` in absolute pixels.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

# exp() of a larger dw/dh would blow a box up by more than 1000/16 = 62.5x, which no trained
# regressor asks for; clamping keeps early-training or adversarial deltas from producing inf.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)

BoxRegressionLossType = Literal["smooth_l1", "giou"]


def check_box_reg_loss_type(value: str) -> None:
    """Raise at build time, not at the first training step, for an unknown loss type."""
    if value not in typing.get_args(BoxRegressionLossType):
        raise ValueError(f"box_reg_loss_type must be 'smooth_l1' or 'giou', got {value!r}.")


def _check_boxes(name: str, boxes: Tensor) -> None:
    if not isinstance(boxes, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape [N, 4], got {type(boxes).__name__}."
        )
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape [N, 4] (XYXY), got {tuple(boxes.shape)}.")


class Box2BoxTransform:
    """Encodes a target box relative to a source box as weighted (dx, dy, dw, dh) deltas.

    Args:
        weights: ``(wx, wy, ww, wh)`` multipliers of the deltas. ``(1, 1, 1, 1)`` for RPN and
            RetinaNet, ``(10, 10, 5, 5)`` for the Fast R-CNN box head: they scale the targets
            to roughly unit variance.
        scale_clamp: upper bound on ``dw``/``dh`` (after dividing by the weights) when decoding.
    """

    def __init__(
        self,
        *,
        weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        scale_clamp: float = DEFAULT_SCALE_CLAMP,
    ) -> None:
        weights = tuple(float(w) for w in weights)
        if len(weights) != 4 or any(w <= 0 for w in weights):
            raise ValueError(
                f"Box2BoxTransform weights must be 4 positive numbers (wx, wy, ww, wh), got {weights}."
            )
        if not scale_clamp > 0:
            raise ValueError(f"Box2BoxTransform scale_clamp must be positive, got {scale_clamp}.")
        self.weights: tuple[float, float, float, float] = weights  # type: ignore[assignment]
        self.scale_clamp = float(scale_clamp)

    def __repr__(self) -> str:
        return f"Box2BoxTransform(weights={self.weights}, scale_clamp={self.scale_clamp:.4f})"

    def get_deltas(self, src_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """Deltas that turn each source box into its target box.

        Args:
            src_boxes: ``[N, 4]`` XYXY, e.g. anchors or proposals; must have positive size.
            target_boxes: ``[N, 4]`` XYXY, e.g. the matched ground-truth boxes.

        Returns:
            ``[N, 4]`` deltas ``(dx, dy, dw, dh)`` in the dtype of ``src_boxes``.
        """
        _check_boxes("src_boxes", src_boxes)
        _check_boxes("target_boxes", target_boxes)
        if src_boxes.shape[0] != target_boxes.shape[0]:
            raise ValueError(
                f"src_boxes and target_boxes must pair up one to one, got {src_boxes.shape[0]} "
                f"and {target_boxes.shape[0]} boxes."
            )
        target_boxes = target_boxes.to(src_boxes.dtype)
        src_w, src_h, src_x, src_y = _size_and_centre(src_boxes)
        tgt_w, tgt_h, tgt_x, tgt_y = _size_and_centre(target_boxes)
        wx, wy, ww, wh = self.weights
        deltas = torch.stack(
            (
                wx * (tgt_x - src_x) / src_w,
                wy * (tgt_y - src_y) / src_h,
                ww * torch.log(tgt_w / src_w),
                wh * torch.log(tgt_h / src_h),
            ),
            dim=1,
        )
        return deltas

    def apply_deltas(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Boxes obtained by applying ``deltas`` to ``boxes``.

        Args:
            deltas: ``[N, 4 * K]``: K sets of ``(dx, dy, dw, dh)`` per box (K = 1 for
                class-agnostic regression, K = number of classes for per-class regression).
            boxes: ``[N, 4]`` XYXY reference boxes.

        Returns:
            ``[N, 4 * K]`` XYXY boxes, in at least float32 precision: half-precision deltas are
            decoded in float32 because ``exp`` and pixel coordinates overflow fp16 resolution.
        """
        _check_boxes("boxes", boxes)
        if not isinstance(deltas, Tensor) or deltas.dim() != 2 or deltas.shape[1] % 4 != 0:
            raise ValueError(
                "deltas must be a tensor of shape [N, 4 * K], got "
                f"{tuple(deltas.shape) if isinstance(deltas, Tensor) else type(deltas).__name__}."
            )
        if deltas.shape[0] != boxes.shape[0]:
            raise ValueError(
                f"deltas has {deltas.shape[0]} rows but boxes has {boxes.shape[0]}; give one row "
                "of deltas per reference box."
            )
        dtype = torch.promote_types(deltas.dtype, torch.float32)
        deltas = deltas.to(dtype)
        boxes = boxes.to(dtype)
        widths, heights, ctr_x, ctr_y = _size_and_centre(boxes)
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.scale_clamp)

        pred_ctr_x = ctr_x[:, None] + dx * widths[:, None]
        pred_ctr_y = ctr_y[:, None] + dy * heights[:, None]
        half_w = 0.5 * torch.exp(dw) * widths[:, None]
        half_h = 0.5 * torch.exp(dh) * heights[:, None]
        pred = torch.stack(
            (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h),
            dim=2,
        )
        return pred.reshape(deltas.shape)


def _size_and_centre(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    return widths, heights, boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights


def box_regression_loss(
    *,
    box2box_transform: Box2BoxTransform,
    anchors: Tensor,
    pred_deltas: Tensor,
    gt_boxes: Tensor,
    loss_type: BoxRegressionLossType = "smooth_l1",
    smooth_l1_beta: float = 0.0,
) -> Tensor:
    """Summed (not averaged) box regression loss over foreground anchors; the caller normalises.

    Args:
        box2box_transform: the delta parameterisation of ``pred_deltas``.
        anchors: ``[P, 4]`` XYXY anchors (or proposals) that were matched to a ground-truth box.
        pred_deltas: ``[P, 4]`` predicted deltas for those anchors.
        gt_boxes: ``[P, 4]`` XYXY ground-truth box matched to each anchor.
        loss_type: ``"smooth_l1"`` on the encoded deltas (``smooth_l1_beta=0`` is plain L1), or
            ``"giou"`` on the decoded boxes.
        smooth_l1_beta: transition point of the smooth-L1 loss; torchvision's RPN uses 1/9.

    Returns:
        A scalar tensor.
    """
    if loss_type == "smooth_l1":
        target_deltas = box2box_transform.get_deltas(anchors, gt_boxes)
        return F.smooth_l1_loss(pred_deltas, target_deltas, beta=smooth_l1_beta, reduction="sum")
    if loss_type == "giou":
        pred_boxes = box2box_transform.apply_deltas(pred_deltas, anchors)
        return generalized_box_iou_loss(pred_boxes, gt_boxes.to(pred_boxes.dtype), reduction="sum")
    raise ValueError(f"loss_type must be 'smooth_l1' or 'giou', got {loss_type!r}.")
