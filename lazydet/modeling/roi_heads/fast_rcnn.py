"""Fast R-CNN box predictor: class scores and class-specific box deltas per ROI, their losses, and
the detections they turn into (score threshold, per-class NMS, top-k).

Class ids follow Detectron2: foreground classes are ``0 .. num_classes - 1`` and the background
is ``num_classes`` (the last score column). torchvision puts the background at column 0 and
predicts deltas for it too; a weight converter drops those rows and rolls column 0 to the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lazydet.layers import check_positive_sizes
from lazydet.modeling.box_coder import (
    Box2BoxTransform,
    BoxRegressionLossType,
    box_regression_loss,
    check_box_reg_loss_type,
)
from lazydet.modeling.loss_weights import loss_weights_with_defaults
from lazydet.ops import batched_nms
from lazydet.structures import Boxes, Instances

# The box coder weights of Fast R-CNN in both Detectron2 and torchvision: they scale the
# regression targets of proposals (which are already close to their boxes) to about unit variance.
FAST_RCNN_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


class FastRCNNOutputLayers(nn.Module):
    """Two linear layers on the box head's features: class logits and box deltas.

    Args:
        input_size: size ``D`` of the box head's feature vector (``StandardROIHeads`` passes the
            box head's ``output_size``).
        num_classes: number of foreground classes ``K``.
        box2box_transform: delta parameterisation; default weights ``(10, 10, 5, 5)``.
        cls_agnostic_bbox_reg: predict one box per ROI instead of one per class.
        box_reg_loss_type: ``"smooth_l1"`` on deltas or ``"giou"`` on decoded boxes.
        smooth_l1_beta: smooth-L1 transition point; 0 is L1 (Detectron2), 1/9 torchvision.
        test_score_thresh: detections need a class probability above this.
        test_nms_thresh: IoU threshold of the per-class NMS.
        test_topk_per_image: detections kept per image (the highest-scoring; < 0 keeps all).
        min_box_size: at inference, drop boxes whose width or height (after clipping) is below
            this many pixels (0 keeps all, as Detectron2; torchvision uses 1e-2).
        loss_weights: multipliers of ``loss_cls`` and ``loss_box_reg`` (default 1 each).

    ``forward(x: Tensor[R, D]) -> (scores: Tensor[R, K + 1], deltas: Tensor[R, 4 * K])`` (deltas
    ``[R, 4]`` when class-agnostic); the last score column is the background.
    """

    def __init__(
        self,
        *,
        input_size: int,
        num_classes: int,
        box2box_transform: Box2BoxTransform | None = None,
        cls_agnostic_bbox_reg: bool = False,
        box_reg_loss_type: BoxRegressionLossType = "smooth_l1",
        smooth_l1_beta: float = 0.0,
        test_score_thresh: float = 0.05,
        test_nms_thresh: float = 0.5,
        test_topk_per_image: int = 100,
        min_box_size: float = 0.0,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        check_positive_sizes("FastRCNNOutputLayers", input_size=input_size, num_classes=num_classes)
        check_box_reg_loss_type(box_reg_loss_type)
        self.loss_weights = loss_weights_with_defaults(
            "FastRCNNOutputLayers", loss_weights, ("loss_cls", "loss_box_reg")
        )
        self.num_classes = num_classes
        num_box_classes = 1 if cls_agnostic_bbox_reg else num_classes
        self.cls_score = nn.Linear(input_size, num_classes + 1)
        self.bbox_pred = nn.Linear(input_size, num_box_classes * 4)
        # Small initial weights (Detectron2): near-uniform scores and near-zero deltas, so the
        # first iterations start from the proposals themselves.
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        self.box2box_transform = box2box_transform or Box2BoxTransform(
            weights=FAST_RCNN_BOX_WEIGHTS
        )
        self.cls_agnostic_bbox_reg = cls_agnostic_bbox_reg
        self.box_reg_loss_type = box_reg_loss_type
        self.smooth_l1_beta = smooth_l1_beta
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image
        self.min_box_size = min_box_size

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)

    def losses(
        self, predictions: tuple[Tensor, Tensor], proposals: Sequence[Instances]
    ) -> dict[str, Tensor]:
        """Cross-entropy over the sampled ROIs and box regression over the foreground ones.

        Args:
            predictions: ``forward``'s output for the ROIs of ``proposals`` (concatenated).
            proposals: per image, the sampled ``Instances`` with ``proposal_boxes``,
                ``gt_classes`` (``num_classes`` for background) and ``gt_boxes`` (the matched
                ground truth, meaningful for foreground).

        Returns:
            ``{"loss_cls", "loss_box_reg"}``. Both are normalised by the number of sampled ROIs
            (Detectron2 and torchvision alike): the classification loss is the mean cross-entropy
            and the summed regression loss is divided by the same count, so images with few
            foreground ROIs weigh less in the box loss.
        """
        scores, deltas = predictions
        if len(proposals) == 0:
            raise ValueError(
                "FastRCNNOutputLayers.losses needs the proposals of at least one image."
            )
        gt_classes = torch.cat([p.gt_classes for p in proposals]).to(torch.int64)
        proposal_boxes = torch.cat([p.proposal_boxes.tensor for p in proposals])
        gt_boxes = torch.cat([p.gt_boxes.tensor for p in proposals])
        if scores.shape[0] != gt_classes.shape[0]:
            raise ValueError(
                f"FastRCNNOutputLayers.losses got {scores.shape[0]} predictions for "
                f"{gt_classes.shape[0]} proposals."
            )
        # No branch on the ROI count (data-dependent when compiled: a graph break). With no ROI
        # in the batch both sums are zeros that still touch the parameters (DDP needs it); else
        # the summed cross-entropy over the count is the mean, bit for bit.
        normalizer = torch.sym_max(gt_classes.numel(), 1)
        loss_cls = F.cross_entropy(scores, gt_classes, reduction="sum") / normalizer

        foreground = (gt_classes >= 0) & (gt_classes < self.num_classes)
        fg_idxs = foreground.nonzero().squeeze(1)
        if self.cls_agnostic_bbox_reg:
            fg_deltas = deltas[fg_idxs]
        else:
            fg_deltas = deltas.unflatten(1, (-1, 4))[fg_idxs, gt_classes[fg_idxs]]
        loss_box_reg = box_regression_loss(
            box2box_transform=self.box2box_transform,
            anchors=proposal_boxes[fg_idxs],
            pred_deltas=fg_deltas,
            gt_boxes=gt_boxes[fg_idxs],
            loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        return {
            "loss_cls": loss_cls * self.loss_weights["loss_cls"],
            "loss_box_reg": loss_box_reg / normalizer * self.loss_weights["loss_box_reg"],
        }

    def predict_boxes(
        self, predictions: tuple[Tensor, Tensor], proposals: Sequence[Instances]
    ) -> list[Tensor]:
        """Per image, decoded boxes ``[R_i, 4 * K]`` (``[R_i, 4]`` if class-agnostic), XYXY."""
        _, deltas = predictions
        proposal_boxes = [p.proposal_boxes.tensor for p in proposals]
        if not proposal_boxes:
            return []
        boxes = self.box2box_transform.apply_deltas(deltas, torch.cat(proposal_boxes))
        return list(boxes.split([len(b) for b in proposal_boxes]))

    def predict_probs(
        self, predictions: tuple[Tensor, Tensor], proposals: Sequence[Instances]
    ) -> list[Tensor]:
        """Per image, class probabilities ``[R_i, K + 1]`` (softmax; background last)."""
        scores, _ = predictions
        probs = F.softmax(scores.float(), dim=-1)  # fp32 even under AMP: thresholds compare them
        return list(probs.split([len(p) for p in proposals]))

    def inference(
        self, predictions: tuple[Tensor, Tensor], proposals: Sequence[Instances]
    ) -> list[Instances]:
        """Detections per image, in the coordinates of the proposals' (resized input) image.

        Returns:
            per image ``Instances(pred_boxes=Boxes, scores=Tensor[D], pred_classes=Tensor[D])``,
            sorted by decreasing score, ``D <= test_topk_per_image``.
        """
        return fast_rcnn_inference(
            boxes=self.predict_boxes(predictions, proposals),
            scores=self.predict_probs(predictions, proposals),
            image_sizes=[p.image_size for p in proposals],
            score_threshold=self.test_score_thresh,
            nms_threshold=self.test_nms_thresh,
            topk_per_image=self.test_topk_per_image,
            min_box_size=self.min_box_size,
        )


def fast_rcnn_inference(
    *,
    boxes: Sequence[Tensor],
    scores: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    score_threshold: float,
    nms_threshold: float,
    topk_per_image: int,
    min_box_size: float = 0.0,
) -> list[Instances]:
    """Turn per-ROI class probabilities and per-class boxes into detections, image by image.

    Every (ROI, foreground class) pair is a candidate. Candidates of ROIs with a non-finite box
    or score are dropped; boxes are clipped to the image; candidates with probability
    ``<= score_threshold`` or a side shorter than ``min_box_size`` are dropped; NMS runs within
    each class; the ``topk_per_image`` best survivors are kept.

    Args:
        boxes: per image ``[R_i, 4 * K]`` (or ``[R_i, 4]`` for class-agnostic boxes) XYXY.
        scores: per image ``[R_i, K + 1]`` probabilities, background last.
        image_sizes: per image ``(height, width)`` to clip to.
        score_threshold, nms_threshold, topk_per_image, min_box_size: see
            ``FastRCNNOutputLayers``.

    Returns:
        per image ``Instances(pred_boxes, scores, pred_classes)`` by decreasing score.
    """
    if not len(boxes) == len(scores) == len(image_sizes):
        raise ValueError(
            f"fast_rcnn_inference got {len(boxes)} box tensors, {len(scores)} score tensors and "
            f"{len(image_sizes)} image sizes; give one of each per image."
        )
    return [
        _fast_rcnn_inference_single_image(
            image_boxes,
            image_scores,
            image_size,
            score_threshold=score_threshold,
            nms_threshold=nms_threshold,
            topk_per_image=topk_per_image,
            min_box_size=min_box_size,
        )
        for image_boxes, image_scores, image_size in zip(boxes, scores, image_sizes)
    ]


def _fast_rcnn_inference_single_image(
    boxes: Tensor,
    scores: Tensor,
    image_size: tuple[int, int],
    *,
    score_threshold: float,
    nms_threshold: float,
    topk_per_image: int,
    min_box_size: float,
) -> Instances:
    finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    # Compiled: filter always (the same result) rather than branch on the data (a graph break).
    if torch.compiler.is_compiling() or not finite.all():
        boxes, scores = boxes[finite], scores[finite]
    scores = scores[:, :-1]  # drop the background column
    num_rois = scores.shape[0]
    # [R, K', 4] with K' = 1 (class-agnostic, shared by every class) or K.
    boxes_per_roi = boxes.shape[1] // 4  # explicit, so that zero ROIs reshape too
    boxes = Boxes(boxes.reshape(-1, 4)).clip(image_size).tensor.view(num_rois, boxes_per_roi, 4)

    # Candidates in (ROI, class) row-major order, the order torchvision and Detectron2 both use,
    # so equal scores keep the same relative order through NMS.
    candidate = scores > score_threshold
    roi_idxs, class_idxs = candidate.nonzero().unbind(dim=1)
    box_class_idxs = class_idxs if boxes.shape[1] > 1 else torch.zeros_like(class_idxs)
    boxes = boxes[roi_idxs, box_class_idxs]
    scores = scores[roi_idxs, class_idxs]
    if min_box_size > 0:
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        large = (widths >= min_box_size) & (heights >= min_box_size)
        boxes, scores, class_idxs = boxes[large], scores[large], class_idxs[large]

    max_keep = topk_per_image if topk_per_image >= 0 else None
    keep = batched_nms(boxes, scores, class_idxs, nms_threshold, max_keep=max_keep)
    return Instances(
        image_size,
        pred_boxes=Boxes(boxes[keep]),
        scores=scores[keep],
        pred_classes=class_idxs[keep],
    )
