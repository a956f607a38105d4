"""Region Proposal Network (Faster R-CNN, Ren et al. 2015) over one or several feature levels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lazydet.layers import (
    ModuleOrFactory,
    ShapeSpec,
    build_module,
    conv_norm_act_stack,
    normal_fill,
)
from lazydet.modeling.anchor_generator import DefaultAnchorGenerator, shared_head_channels
from lazydet.modeling.box_coder import (
    Box2BoxTransform,
    BoxRegressionLossType,
    box_regression_loss,
    check_box_reg_loss_type,
)
from lazydet.modeling.dense_head import concat_levels, dense_head_outputs
from lazydet.modeling.loss_weights import loss_weights_with_defaults
from lazydet.modeling.matcher import Matcher
from lazydet.modeling.sampling import subsample_labels
from lazydet.ops import batched_nms
from lazydet.structures import Boxes, ImageList, Instances, pairwise_iou
from lazydet.utils.compile import check_all_true

LossNormalizer = Literal["batch_size", "num_sampled"]


class StandardRPNHead(nn.Module):
    """Shared 3x3 conv(s) + ReLU, then 1x1 convs predicting objectness and box deltas per anchor.

    The same weights run on every level, so every level must have ``in_channels`` channels and
    ``num_anchors`` anchors per location.

    Args:
        in_channels: channels of the input feature maps.
        num_anchors: anchors per feature map location.
        num_convs: number of 3x3 conv + ReLU layers before the predictors.
        conv_channels: output channels of those convs; ``None`` keeps ``in_channels``.
        box_dim: numbers per box delta (4 for XYXY boxes).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        num_convs: int = 1,
        conv_channels: int | None = None,
        box_dim: int = 4,
    ) -> None:
        super().__init__()
        if in_channels <= 0 or num_anchors <= 0 or num_convs < 0:
            raise ValueError(
                "StandardRPNHead needs positive in_channels and num_anchors and num_convs >= 0, "
                f"got in_channels={in_channels}, num_anchors={num_anchors}, num_convs={num_convs}."
            )
        conv_channels = in_channels if conv_channels is None else conv_channels
        dims = [conv_channels] * num_convs
        # Normal(0, 0.01) weights and zero biases everywhere, as Detectron2 and torchvision.
        self.convs = conv_norm_act_stack(in_channels, dims, 3, init=normal_fill)
        channels = dims[-1] if dims else in_channels
        self.objectness_logits = nn.Conv2d(channels, num_anchors, kernel_size=1)
        self.anchor_deltas = nn.Conv2d(channels, num_anchors * box_dim, kernel_size=1)
        normal_fill(self.objectness_logits)
        normal_fill(self.anchor_deltas)
        self.num_anchors = num_anchors
        self.box_dim = box_dim

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: objectness logits ``[B, A, H, W]`` and deltas ``[B, A * box_dim, H, W]``."""
        logits, deltas = [], []
        for feature in features:
            hidden = self.convs(feature)
            logits.append(self.objectness_logits(hidden))
            deltas.append(self.anchor_deltas(hidden))
        return logits, deltas


class RPN(nn.Module):
    """Proposes object boxes from anchors: objectness scoring, box regression, top-k and NMS.

    ``forward(images, features, gt_instances)`` returns per-image proposals and, in training,
    the losses ``{"loss_rpn_cls", "loss_rpn_loc"}``.

    Proposal selection, per image: the ``pre_nms_topk`` highest-scoring anchors of each level are
    decoded, clipped to the image, filtered (non-finite, smaller than ``min_box_size``), reduced
    by NMS (within each level when ``nms_per_level``, as torchvision and Detectron2 do; over all
    levels together otherwise) and the best ``post_nms_topk`` of the image are kept.

    Args:
        input_shape: the backbone's ``output_shape()``; channels and strides of ``in_features``
            are read from it.
        in_features: names of the feature maps to run on, e.g. ``["p2", ..., "p6"]``.
        anchor_generator: anchors per level (sizes and aspect ratios).
        head: the prediction head: a class or ``functools.partial`` called as
            ``head(in_channels=..., num_anchors=...)`` (sized from ``input_shape``), or an
            already built module with that output layout.
        anchor_matcher: labels anchors from their IoU with the ground truth; default IoU
            ``< 0.3`` negative, ``>= 0.7`` positive, plus each box's best anchors.
        box2box_transform: delta parameterisation; default weights ``(1, 1, 1, 1)``.
        batch_size_per_image: anchors sampled per image for the losses.
        positive_fraction: largest share of positives among them.
        pre_nms_topk_train, pre_nms_topk_test: anchors kept per level and image before NMS.
        post_nms_topk_train, post_nms_topk_test: proposals kept per image after NMS.
        batch_post_nms_topk_train: in training, keep the ``post_nms_topk_train`` best proposals
            of the whole batch instead of each image's best (Detectron1's behaviour; it makes
            training depend on the batch size, which is why Detectron2 and torchvision dropped it).
        nms_threshold: IoU above which NMS suppresses the lower-scoring box.
        nms_per_level: NMS within each level (True) or across all levels (False).
        min_box_size: proposals whose width or height is not larger than this (pixels, after
            clipping) are dropped.
        box_reg_loss_type: ``"smooth_l1"`` on deltas or ``"giou"`` on decoded boxes.
        smooth_l1_beta: smooth-L1 transition point; 0 is L1 (Detectron2), 1/9 torchvision.
        loss_normalizer: divide both summed losses by ``batch_size_per_image * num_images``
            (``"batch_size"``, Detectron2) or by the number of sampled anchors
            (``"num_sampled"``, torchvision).
        loss_weights: multipliers of ``loss_rpn_cls`` and ``loss_rpn_loc`` (default 1 each).
    """

    def __init__(
        self,
        *,
        input_shape: Mapping[str, ShapeSpec],
        in_features: Sequence[str],
        anchor_generator: DefaultAnchorGenerator,
        head: ModuleOrFactory = StandardRPNHead,
        anchor_matcher: Matcher | None = None,
        box2box_transform: Box2BoxTransform | None = None,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_topk_train: int = 2000,
        pre_nms_topk_test: int = 1000,
        post_nms_topk_train: int = 1000,
        post_nms_topk_test: int = 1000,
        batch_post_nms_topk_train: bool = False,
        nms_threshold: float = 0.7,
        nms_per_level: bool = True,
        min_box_size: float = 0.0,
        box_reg_loss_type: BoxRegressionLossType = "smooth_l1",
        smooth_l1_beta: float = 0.0,
        loss_normalizer: LossNormalizer = "batch_size",
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        in_features = list(in_features)
        in_channels = shared_head_channels("RPN", input_shape, in_features, anchor_generator)
        if loss_normalizer not in ("batch_size", "num_sampled"):
            raise ValueError(
                f"loss_normalizer must be 'batch_size' or 'num_sampled', got {loss_normalizer!r}."
            )
        check_box_reg_loss_type(box_reg_loss_type)
        self.loss_weights = loss_weights_with_defaults(
            "RPN", loss_weights, ("loss_rpn_cls", "loss_rpn_loc")
        )

        self.in_features = in_features
        self.strides = [input_shape[name].stride for name in in_features]
        self.anchor_generator = anchor_generator
        num_anchors = anchor_generator.num_cell_anchors[0]
        self.head = build_module(
            head, owner="RPN", what="head", in_channels=in_channels, num_anchors=num_anchors
        )
        self.anchor_matcher = anchor_matcher or Matcher(
            thresholds=[0.3, 0.7], labels=[0, -1, 1], allow_low_quality_matches=True
        )
        self.box2box_transform = box2box_transform or Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.pre_nms_topk = {True: pre_nms_topk_train, False: pre_nms_topk_test}
        self.post_nms_topk = {True: post_nms_topk_train, False: post_nms_topk_test}
        self.batch_post_nms_topk_train = batch_post_nms_topk_train
        self.nms_threshold = nms_threshold
        self.nms_per_level = nms_per_level
        self.min_box_size = min_box_size
        self.box_reg_loss_type = box_reg_loss_type
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_normalizer = loss_normalizer

    def forward(
        self,
        images: ImageList,
        features: Mapping[str, Tensor],
        gt_instances: Sequence[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        """Proposals for each image, and the losses in training.

        Args:
            images: the batch; its ``image_sizes`` (unpadded ``(height, width)``) and padded
                size (for anchors spaced by it) are used.
            features: the backbone's feature maps, ``[B, C, H_l, W_l]`` for each in_feature.
            gt_instances: in training, per image ``Instances`` with ``gt_boxes`` (XYXY pixels).

        Returns:
            Per image, ``Instances(proposal_boxes=Boxes[P, 4], objectness_logits=Tensor[P])``
            sorted by decreasing logit, ``P <= post_nms_topk``; and a dict with
            ``loss_rpn_cls`` and ``loss_rpn_loc`` in training (empty in eval).
        """
        anchors, level_logits, level_deltas = dense_head_outputs(
            owner="RPN",
            head=self.head,
            features=features,
            in_features=self.in_features,
            strides=self.strides,
            anchor_generator=self.anchor_generator,
            padded_size=images.tensor.shape[-2:],
            scores_per_anchor=1,
        )
        level_logits = [logits.squeeze(-1) for logits in level_logits]

        losses: dict[str, Tensor] = {}
        if self.training:
            if gt_instances is None:
                raise ValueError("RPN in training mode needs gt_instances (with gt_boxes).")
            if len(gt_instances) != len(images.image_sizes):
                raise ValueError(
                    f"RPN got {len(gt_instances)} gt_instances for {len(images.image_sizes)} images."
                )
            gt_labels, matched_gt_boxes = self.label_and_sample_anchors(anchors, gt_instances)
            losses = self.losses(anchors, level_logits, level_deltas, gt_labels, matched_gt_boxes)
        proposals = self.predict_proposals(anchors, level_logits, level_deltas, images.image_sizes)
        return proposals, losses

    @torch.no_grad()
    def label_and_sample_anchors(
        self, anchors: Sequence[Boxes], gt_instances: Sequence[Instances]
    ) -> tuple[Tensor, Tensor]:
        """Training labels of all anchors (all levels concatenated).

        Returns:
            ``gt_labels``: ``[B, R]`` int8, 1 for sampled positives, 0 for sampled negatives,
            -1 for anchors left out of the loss; ``matched_gt_boxes``: ``[B, R, 4]`` the
            ground-truth box of each anchor (meaningful where the label is 1).
        """
        all_anchors = Boxes.cat(list(anchors))
        labels_per_image, boxes_per_image = [], []
        for instances in gt_instances:
            if not instances.has("gt_boxes"):
                raise ValueError("RPN training needs a gt_boxes field in every gt_instances.")
            gt_boxes: Boxes = instances.gt_boxes.to(all_anchors.device)
            matched_idxs, labels = self.anchor_matcher(pairwise_iou(gt_boxes, all_anchors))
            positive, negative = subsample_labels(
                labels,
                num_samples=self.batch_size_per_image,
                positive_fraction=self.positive_fraction,
                background_label=0,
            )
            labels = torch.full_like(labels, -1)
            labels[positive] = 1
            labels[negative] = 0
            if len(gt_boxes) == 0:
                matched = torch.zeros_like(all_anchors.tensor)
            else:
                matched = gt_boxes.tensor[matched_idxs].to(all_anchors.tensor.dtype)
            labels_per_image.append(labels)
            boxes_per_image.append(matched)
        return torch.stack(labels_per_image), torch.stack(boxes_per_image)

    def losses(
        self,
        anchors: Sequence[Boxes],
        level_logits: Sequence[Tensor],
        level_deltas: Sequence[Tensor],
        gt_labels: Tensor,
        matched_gt_boxes: Tensor,
    ) -> dict[str, Tensor]:
        """Objectness (binary cross-entropy) and box regression losses over sampled anchors.

        ``anchors`` (per level ``Boxes`` of ``R_l`` anchors), ``level_logits`` (``[B, R_l]``
        objectness) and ``level_deltas`` (``[B, R_l, 4]``) are those of ``forward``;
        ``gt_labels`` and ``matched_gt_boxes`` come from ``label_and_sample_anchors``.
        """
        num_images = gt_labels.shape[0]
        all_anchors, logits, deltas = concat_levels(anchors, level_logits, level_deltas)
        positive = gt_labels == 1
        sampled = gt_labels >= 0

        anchor_idxs = positive.nonzero()[:, 1]
        loss_loc = box_regression_loss(
            box2box_transform=self.box2box_transform,
            anchors=all_anchors[anchor_idxs],
            pred_deltas=deltas[positive],
            gt_boxes=matched_gt_boxes[positive],
            loss_type=self.box_reg_loss_type,
            smooth_l1_beta=self.smooth_l1_beta,
        )
        loss_cls = F.binary_cross_entropy_with_logits(
            logits[sampled], gt_labels[sampled].to(logits.dtype), reduction="sum"
        )
        if self.loss_normalizer == "batch_size":
            normalizer = float(self.batch_size_per_image * num_images)
        else:
            # Clamped so an image batch with nothing sampled gives a zero loss, not NaN.
            normalizer = sampled.sum().clamp(min=1).to(logits.dtype)
        return {
            "loss_rpn_cls": loss_cls / normalizer * self.loss_weights["loss_rpn_cls"],
            "loss_rpn_loc": loss_loc / normalizer * self.loss_weights["loss_rpn_loc"],
        }

    @torch.no_grad()
    def predict_proposals(
        self,
        anchors: Sequence[Boxes],
        level_logits: Sequence[Tensor],
        level_deltas: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Instances]:
        """Decode, select and NMS the proposals of each image (no gradient flows through them)."""
        pre_nms_topk = self.pre_nms_topk[self.training]
        num_images = len(image_sizes)
        topk_boxes, topk_logits, topk_levels = [], [], []
        for level, (level_anchors, logits, deltas) in enumerate(
            zip(anchors, level_logits, level_deltas)
        ):
            # Decoding only the top-k anchors gives the same boxes as decoding all, for less work.
            k = min(pre_nms_topk, logits.shape[1])
            top_logits, top_idxs = logits.detach().topk(k, dim=1)
            image_idxs = torch.arange(num_images, device=logits.device)[:, None]
            top_deltas = deltas.detach()[image_idxs, top_idxs].reshape(-1, 4)
            top_anchors = level_anchors.tensor[top_idxs].reshape(-1, 4)
            boxes = self.box2box_transform.apply_deltas(top_deltas, top_anchors)
            topk_boxes.append(boxes.view(num_images, k, 4))
            topk_logits.append(top_logits)
            topk_levels.append(torch.full((k,), level, dtype=torch.int64, device=logits.device))
        return find_top_proposals(
            boxes=torch.cat(topk_boxes, dim=1),
            logits=torch.cat(topk_logits, dim=1),
            levels=torch.cat(topk_levels),
            image_sizes=image_sizes,
            nms_threshold=self.nms_threshold,
            post_nms_topk=self.post_nms_topk[self.training],
            post_nms_topk_over_batch=self.training and self.batch_post_nms_topk_train,
            min_box_size=self.min_box_size,
            nms_per_level=self.nms_per_level,
            training=self.training,
        )


def find_top_proposals(
    *,
    boxes: Tensor,
    logits: Tensor,
    levels: Tensor,
    image_sizes: Sequence[tuple[int, int]],
    nms_threshold: float,
    post_nms_topk: int,
    min_box_size: float = 0.0,
    nms_per_level: bool = True,
    post_nms_topk_over_batch: bool = False,
    training: bool = False,
) -> list[Instances]:
    """Clip, filter, NMS and keep the best proposals of each image.

    Args:
        boxes: ``[B, K, 4]`` decoded XYXY candidate boxes (the pre-NMS top-k of every level).
        logits: ``[B, K]`` their objectness logits.
        levels: ``[K]`` the feature level each candidate comes from.
        image_sizes: per image, the unpadded ``(height, width)`` to clip to.
        nms_threshold: IoU threshold of NMS.
        post_nms_topk: proposals kept per image, or over the whole batch when
            ``post_nms_topk_over_batch``.
        min_box_size: boxes with width or height ``<= min_box_size`` after clipping are dropped.
        nms_per_level: NMS within each level, else over all levels at once.
        post_nms_topk_over_batch: apply ``post_nms_topk`` to the batch as a whole.
        training: non-finite boxes raise in training (the model diverged) and are dropped at
            inference.

    Returns:
        Per image ``Instances(proposal_boxes, objectness_logits)`` by decreasing logit.
    """
    results = []
    for image_boxes, image_logits, image_size in zip(boxes, logits, image_sizes):
        finite = torch.isfinite(image_boxes).all(dim=1) & torch.isfinite(image_logits)
        image_levels = levels
        if training:
            check_all_true(
                finite,
                "RPN predicted non-finite proposal boxes or logits during training; the "
                "training has diverged (lower the learning rate or use gradient clipping).",
                FloatingPointError,
            )
        # Compiled inference filters always (the same result) rather than branch on the data.
        elif torch.compiler.is_compiling() or not finite.all():
            image_boxes, image_logits = image_boxes[finite], image_logits[finite]
            image_levels = levels[finite]
        proposal_boxes = Boxes(image_boxes.clone()).clip(image_size)
        keep = proposal_boxes.nonempty(threshold=min_box_size)
        proposal_boxes, image_logits = proposal_boxes[keep], image_logits[keep]
        image_levels = image_levels[keep]
        nms_groups = image_levels if nms_per_level else torch.zeros_like(image_levels)
        keep = batched_nms(
            proposal_boxes.tensor,
            image_logits,
            nms_groups,
            nms_threshold,
            max_keep=None if post_nms_topk_over_batch else post_nms_topk,
        )
        results.append(
            Instances(
                image_size,
                proposal_boxes=proposal_boxes[keep],
                objectness_logits=image_logits[keep],
            )
        )
    if post_nms_topk_over_batch:
        results = _keep_top_over_batch(results, post_nms_topk)
    return results


def _keep_top_over_batch(proposals: list[Instances], topk: int) -> list[Instances]:
    """Keep the ``topk`` highest-logit proposals over all images (each image stays sorted)."""
    logits = torch.cat([p.objectness_logits for p in proposals])
    if logits.numel() <= topk:
        return proposals
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep[logits.topk(topk).indices] = True
    return [p[mask] for p, mask in zip(proposals, keep.split([len(p) for p in proposals]))]
