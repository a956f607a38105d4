"""RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", 2017): a one-stage detector."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from lazydet.layers import ModuleOrFactory, NormSpec, build_module, conv_norm_act_stack, normal_fill
from lazydet.modeling.anchor_generator import DefaultAnchorGenerator, shared_head_channels
from lazydet.modeling.backbone.base import Backbone
from lazydet.modeling.backbone.top_block import PyramidBackbone
from lazydet.modeling.box_coder import (
    Box2BoxTransform,
    BoxRegressionLossType,
    box_regression_loss,
    check_box_reg_loss_type,
)
from lazydet.modeling.dense_head import concat_levels, dense_head_outputs
from lazydet.modeling.matcher import Matcher
from lazydet.modeling.meta_arch.base import ImageDetector
from lazydet.modeling.meta_arch.preprocessing import (
    IMAGENET_RGB_MEAN,
    IMAGENET_RGB_STD,
    BatchedInputs,
    InputFormat,
)
from lazydet.ops import batched_nms
from lazydet.structures import Boxes, ImageList, Instances, pairwise_iou
from lazydet.utils.comm import all_reduce_mean

RetinaNetLossNormalizer = Literal["ema", "per_image"]


class RetinaNetHead(nn.Module):
    """Two conv towers shared by all levels: one predicts class logits, the other box deltas.

    Args:
        in_channels: channels of every input feature map.
        num_anchors: anchors per feature map location.
        num_classes: foreground classes (no background logit: scores are per-class sigmoids).
        num_convs: 3x3 convs (+ norm) + ReLU in each tower.
        prior_probability: initial foreground probability of every logit; the classifier's
            bias starts at ``-log((1 - p) / p)`` so the ~100k background anchors do not swamp
            the first iterations' loss (Sec. 4.1 of the paper).
        norm: after each tower conv (see ``lazydet.layers.get_norm``): a name such as ``"GN"``,
            a class/partial called with the channel count, or None (then the convs have a bias).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_convs: int = 4,
        prior_probability: float = 0.01,
        norm: NormSpec = None,
    ) -> None:
        super().__init__()
        if in_channels <= 0 or num_anchors <= 0 or num_classes <= 0 or num_convs < 0:
            raise ValueError(
                "RetinaNetHead needs positive in_channels, num_anchors and num_classes and "
                f"num_convs >= 0, got in_channels={in_channels}, num_anchors={num_anchors}, "
                f"num_classes={num_classes}, num_convs={num_convs}."
            )
        if not 0.0 < prior_probability < 1.0:
            raise ValueError(f"prior_probability must be within (0, 1), got {prior_probability}.")
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        # Conv (+ norm) + ReLU, num_convs times; Normal(0, 0.01) weights and zero biases (paper).
        dims = [in_channels] * num_convs
        self.cls_subnet = conv_norm_act_stack(
            in_channels, dims, 3, norm=norm, init=normal_fill, owner="RetinaNetHead norm"
        )
        self.bbox_subnet = conv_norm_act_stack(
            in_channels, dims, 3, norm=norm, init=normal_fill, owner="RetinaNetHead norm"
        )
        self.cls_score = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        normal_fill(self.cls_score)
        normal_fill(self.bbox_pred)
        nn.init.constant_(
            self.cls_score.bias, -math.log((1 - prior_probability) / prior_probability)
        )

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: logits ``[B, A * num_classes, H, W]`` and deltas ``[B, A * 4, H, W]``."""
        logits = [self.cls_score(self.cls_subnet(feature)) for feature in features]
        deltas = [self.bbox_pred(self.bbox_subnet(feature)) for feature in features]
        return logits, deltas


class RetinaNet(ImageDetector):
    """RetinaNet: backbone, dense head over anchors, focal loss, per-class NMS.

    Inputs, input checks and ``inference(batched_inputs, *, do_postprocess=True)`` are those of
    every lazydet detector (``ImageDetector``): ``image`` a ``[C, H, W]`` RGB tensor (0-255), in
    training ``instances`` with ``gt_boxes`` (``Boxes``, XYXY pixels of the given image) and
    ``gt_classes`` (int64 in ``[0, num_classes)``), and optionally ``height`` / ``width``: the
    size to report detections at (the original image before resizing).

    Training returns ``{"loss_cls", "loss_box_reg"}``; inference returns per image
    ``{"instances": Instances(pred_boxes=Boxes, scores=Tensor, pred_classes=Tensor)}``.

    Args:
        backbone: feature extractor; its ``output_shape()`` sizes the head and gives the strides.
        head_in_features: feature names the head runs on, e.g. ``["p3", "p4", "p5", "p6", "p7"]``.
        anchor_generator: anchors per level.
        num_classes: number of foreground classes.
        head: a class or ``functools.partial`` called as ``head(in_channels=, num_anchors=,
            num_classes=)``, or a built module with ``RetinaNetHead``'s output layout.
        anchor_matcher: default IoU ``< 0.4`` background, ``>= 0.5`` foreground, plus each box's
            best anchors (torchvision and Detectron2 defaults).
        box2box_transform: default weights ``(1, 1, 1, 1)``.
        focal_loss_alpha, focal_loss_gamma: focal loss parameters.
        box_reg_loss_type: ``"smooth_l1"`` on deltas or ``"giou"`` on decoded boxes.
        smooth_l1_beta: 0.1 in Detectron2; 0 (plain L1) in torchvision.
        loss_normalizer: ``"ema"`` divides the batch's summed losses by a moving average
            (momentum ``loss_normalizer_momentum``, starting at 100) of the number of foreground
            anchors per batch (Detectron2); ``"per_image"`` divides each image's loss by its own
            number of foreground anchors and averages over images (torchvision).
        score_threshold: candidates need a class probability above this.
        topk_candidates: candidates kept per level (highest scores) before NMS.
        nms_threshold: IoU threshold of the per-class NMS.
        max_detections_per_image: detections kept per image.
        clip_before_nms: clip the candidate boxes to the image before the per-class NMS
            (torchvision's order, the default), or run the NMS on the unclipped boxes and clip
            the kept ones afterwards (Detectron2's order; False). They differ near the border,
            where two boxes that overlap only inside the image suppress each other once clipped.
        pixel_mean, pixel_std, input_format: see ``ImageDetector``.
        top_block: extra pyramid levels for the head, given to the backbone
            (``backbone.set_top_block``, ``lazydet.modeling.backbone.top_block``): e.g.
            ``LastLevelP6P7(in_feature="p5", ...)`` replaces the backbone's ``p6`` by ``p6`` and
            ``p7`` from ``p5`` (torchvision's RetinaNet) and ``in_feature="res5"`` (with
            ``in_channels`` of res5) computes them from the ResNet's ``res5`` (the paper's and
            Detectron2's RetinaNet). It lets RetinaNet's ``p3..p7`` sit on any backbone option of
            the ``p2..p6`` contract; the parameters live at ``backbone.top_block.*``, where
            Detectron2's checkpoints have them. None keeps the backbone as it is.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        head_in_features: Sequence[str],
        anchor_generator: DefaultAnchorGenerator,
        num_classes: int,
        head: ModuleOrFactory = RetinaNetHead,
        anchor_matcher: Matcher | None = None,
        box2box_transform: Box2BoxTransform | None = None,
        focal_loss_alpha: float = 0.25,
        focal_loss_gamma: float = 2.0,
        box_reg_loss_type: BoxRegressionLossType = "smooth_l1",
        smooth_l1_beta: float = 0.1,
        loss_normalizer: RetinaNetLossNormalizer = "ema",
        loss_normalizer_momentum: float = 0.9,
        score_threshold: float = 0.05,
        topk_candidates: int = 1000,
        nms_threshold: float = 0.5,
        max_detections_per_image: int = 100,
        clip_before_nms: bool = True,
        pixel_mean: Sequence[float] = IMAGENET_RGB_MEAN,
        pixel_std: Sequence[float] = IMAGENET_RGB_STD,
        input_format: InputFormat = "RGB",
        top_block: nn.Module | None = None,
    ) -> None:
        super().__init__(
            backbone=backbone, pixel_mean=pixel_mean, pixel_std=pixel_std, input_format=input_format
        )
        if top_block is not None:
            if not isinstance(backbone, PyramidBackbone):
                raise TypeError(
                    f"RetinaNet top_block needs a pyramid backbone (FPN, SimpleFeaturePyramid) to "
                    f"attach it to, got {type(backbone).__name__}; build the extra levels into "
                    "the backbone instead and set top_block=None."
                )
            backbone.set_top_block(top_block)
        input_shape = backbone.output_shape()
        head_in_features = list(head_in_features)
        in_channels = shared_head_channels(
            "RetinaNet", input_shape, head_in_features, anchor_generator
        )
        if loss_normalizer not in ("ema", "per_image"):
            raise ValueError(
                f"loss_normalizer must be 'ema' or 'per_image', got {loss_normalizer!r}."
            )
        check_box_reg_loss_type(box_reg_loss_type)
        self.head_in_features = head_in_features
        self.strides = [input_shape[name].stride for name in head_in_features]
        self.anchor_generator = anchor_generator
        self.num_classes = num_classes
        self.head = build_module(
            head,
            owner="RetinaNet",
            what="head",
            in_channels=in_channels,
            num_anchors=anchor_generator.num_cell_anchors[0],
            num_classes=num_classes,
        )
        self.anchor_matcher = anchor_matcher or Matcher(
            thresholds=[0.4, 0.5], labels=[0, -1, 1], allow_low_quality_matches=True
        )
        self.box2box_transform = box2box_transform or Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0))
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.box_reg_loss_type = box_reg_loss_type
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_normalizer = loss_normalizer
        self.loss_normalizer_momentum = loss_normalizer_momentum
        # Running number of foreground anchors per batch (averaged over processes); 100 is a
        # typical early-training value, so the first iterations are neither over- nor
        # under-weighted. A buffer: checkpoints carry it, so a resumed run continues it.
        self.register_buffer("foreground_ema", torch.tensor(100.0))
        self.score_threshold = score_threshold
        self.topk_candidates = topk_candidates
        self.nms_threshold = nms_threshold
        self.max_detections_per_image = max_detections_per_image
        self.clip_before_nms = bool(clip_before_nms)

    def compute_losses(
        self, batched_inputs: BatchedInputs, images: ImageList, gt_instances: list[Instances]
    ) -> dict[str, Tensor]:
        anchors, level_logits, level_deltas = self.predict(images)
        gt_classes, matched_gt_boxes = self.label_anchors(anchors, gt_instances)
        return self.losses(anchors, level_logits, level_deltas, gt_classes, matched_gt_boxes)

    def detect(self, batched_inputs: BatchedInputs, images: ImageList) -> list[Instances]:
        anchors, level_logits, level_deltas = self.predict(images)
        return self.decode_detections(anchors, level_logits, level_deltas, images.image_sizes)

    def predict(self, images: ImageList) -> tuple[list[Boxes], list[Tensor], list[Tensor]]:
        """Anchors and the head's outputs of a batch.

        Returns:
            Per level: ``Boxes`` of ``R_l`` anchors, class logits ``[B, R_l, num_classes]`` and
            box deltas ``[B, R_l, 4]`` (anchor order: location-major, then cell anchor).
        """
        return dense_head_outputs(
            owner="RetinaNet",
            head=self.head,
            features=self.backbone(images.tensor),
            in_features=self.head_in_features,
            strides=self.strides,
            anchor_generator=self.anchor_generator,
            padded_size=images.tensor.shape[-2:],
            scores_per_anchor=self.num_classes,
            scores_hint=f"num_classes = {self.num_classes}",
        )

    @torch.no_grad()
    def label_anchors(
        self, anchors: Sequence[Boxes], gt_instances: Sequence[Instances]
    ) -> tuple[Tensor, Tensor]:
        """Class target of every anchor (all levels concatenated).

        Returns:
            ``gt_classes``: ``[B, R]`` int64: a class in ``[0, num_classes)`` for foreground,
            ``num_classes`` for background, ``-1`` for ignored anchors; ``matched_gt_boxes``:
            ``[B, R, 4]`` the matched ground-truth box (meaningful for foreground).
        """
        all_anchors = Boxes.cat(list(anchors))
        classes_per_image, boxes_per_image = [], []
        for instances in gt_instances:
            if not (instances.has("gt_boxes") and instances.has("gt_classes")):
                raise ValueError("RetinaNet training needs gt_boxes and gt_classes in instances.")
            matched_idxs, labels = self.anchor_matcher(
                pairwise_iou(instances.gt_boxes, all_anchors)
            )
            if len(instances) > 0:
                gt_classes = instances.gt_classes.to(torch.int64)[matched_idxs]
                matched = instances.gt_boxes.tensor[matched_idxs]
            else:
                gt_classes = torch.zeros_like(matched_idxs)
                matched = torch.zeros_like(all_anchors.tensor)
            gt_classes[labels == 0] = self.num_classes
            gt_classes[labels == -1] = -1
            classes_per_image.append(gt_classes)
            boxes_per_image.append(matched)
        return torch.stack(classes_per_image), torch.stack(boxes_per_image)

    def losses(
        self,
        anchors: Sequence[Boxes],
        level_logits: Sequence[Tensor],
        level_deltas: Sequence[Tensor],
        gt_classes: Tensor,
        matched_gt_boxes: Tensor,
    ) -> dict[str, Tensor]:
        """Focal loss over non-ignored anchors and box regression loss over foreground anchors.

        ``anchors``, ``level_logits`` (``[B, R_l, num_classes]``) and ``level_deltas`` are
        ``predict``'s; ``gt_classes`` and ``matched_gt_boxes`` are ``label_anchors``'.
        """
        all_anchors, logits, deltas = concat_levels(anchors, level_logits, level_deltas)
        valid = gt_classes >= 0
        foreground = valid & (gt_classes != self.num_classes)
        # One-hot with an extra background column that is then dropped: background anchors
        # have all-zero targets.
        targets = torch.nn.functional.one_hot(
            gt_classes.clamp(min=0), num_classes=self.num_classes + 1
        )[..., : self.num_classes].to(logits.dtype)

        loss_cls_per_image, loss_box_per_image = [], []
        for image in range(gt_classes.shape[0]):
            image_valid, image_fg = valid[image], foreground[image]
            loss_cls_per_image.append(
                sigmoid_focal_loss(
                    logits[image][image_valid],
                    targets[image][image_valid],
                    alpha=self.focal_loss_alpha,
                    gamma=self.focal_loss_gamma,
                    reduction="sum",
                )
            )
            loss_box_per_image.append(
                box_regression_loss(
                    box2box_transform=self.box2box_transform,
                    anchors=all_anchors[image_fg],
                    pred_deltas=deltas[image][image_fg],
                    gt_boxes=matched_gt_boxes[image][image_fg],
                    loss_type=self.box_reg_loss_type,
                    smooth_l1_beta=self.smooth_l1_beta,
                )
            )
        loss_cls = torch.stack(loss_cls_per_image)
        loss_box = torch.stack(loss_box_per_image)
        if self.loss_normalizer == "per_image":
            per_image = foreground.sum(dim=1).clamp(min=1).to(logits.dtype)
            return {
                "loss_cls": (loss_cls / per_image).mean(),
                "loss_box_reg": (loss_box / per_image).mean(),
            }
        with torch.no_grad():
            # Every process takes the same step (the mean of their counts), so the normaliser,
            # and with it the loss scale, is the same on every GPU.
            num_foreground = foreground.sum().to(torch.float32).clamp(min=1)
            num_foreground = all_reduce_mean(num_foreground)
            momentum = self.loss_normalizer_momentum
            normalizer = momentum * self.foreground_ema + (1 - momentum) * num_foreground
            self.foreground_ema.copy_(normalizer)
        return {
            "loss_cls": loss_cls.sum() / normalizer,
            "loss_box_reg": loss_box.sum() / normalizer,
        }

    @torch.no_grad()
    def decode_detections(
        self,
        anchors: Sequence[Boxes],
        level_logits: Sequence[Tensor],
        level_deltas: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[Instances]:
        """Detections per image, in the coordinates of the (resized, unpadded) input image.

        Per level, the ``topk_candidates`` (anchor, class) pairs with probability above
        ``score_threshold`` are decoded; then per-class NMS over all levels keeps the best
        ``max_detections_per_image``. Boxes are clipped to the image before the NMS, or after it
        with ``clip_before_nms=False``.
        """
        results = []
        for image, image_size in enumerate(image_sizes):
            boxes_all, scores_all, classes_all = [], [], []
            for level_anchors, logits, deltas in zip(anchors, level_logits, level_deltas):
                scores = logits[image].sigmoid().flatten()
                candidate_idxs = torch.nonzero(scores > self.score_threshold).squeeze(1)
                scores = scores[candidate_idxs]
                scores, order = scores.topk(min(self.topk_candidates, scores.numel()))
                candidate_idxs = candidate_idxs[order]
                anchor_idxs = candidate_idxs // self.num_classes
                boxes = self.box2box_transform.apply_deltas(
                    deltas[image][anchor_idxs], level_anchors.tensor[anchor_idxs]
                )
                if self.clip_before_nms:
                    boxes = Boxes(boxes).clip(image_size).tensor
                boxes_all.append(boxes)
                scores_all.append(scores)
                classes_all.append(candidate_idxs % self.num_classes)
            boxes, scores, classes = (
                torch.cat(boxes_all),
                torch.cat(scores_all),
                torch.cat(classes_all),
            )
            keep = batched_nms(
                boxes, scores, classes, self.nms_threshold, max_keep=self.max_detections_per_image
            )
            kept_boxes = Boxes(boxes[keep])
            if not self.clip_before_nms:
                kept_boxes.clip(image_size)
            results.append(
                Instances(
                    image_size,
                    pred_boxes=kept_boxes,
                    scores=scores[keep],
                    pred_classes=classes[keep],
                )
            )
        return results
