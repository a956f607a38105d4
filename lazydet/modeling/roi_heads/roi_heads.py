"""Second stage of the R-CNN family: per-proposal classification, box refinement, and optional
mask and keypoint branches (Faster, Mask and Keypoint R-CNN differ only in which heads are given).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lazydet.layers import ModuleOrFactory, ShapeSpec, build_module
from lazydet.modeling.matcher import Matcher
from lazydet.modeling.roi_heads.box_head import FastRCNNConvFCHead
from lazydet.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from lazydet.modeling.sampling import subsample_labels
from lazydet.ops import multilevel_roi_align, roi_align
from lazydet.structures import Boxes, ImageList, Instances, pairwise_iou


class ROIPooler(nn.Module):
    """RoIAlign of per-image boxes from one feature map or an FPN pyramid.

    With several levels each box is pooled from the level chosen by the FPN paper's eq. 1
    (``lazydet.ops.multilevel_roi_align``); the levels' scales must halve from one to the next.
    With one level every box is pooled from it (any stride).

    Args:
        output_size: ``P``, the pooled size.
        scales: per level, fine to coarse, ``1 / stride``.
        sampling_ratio: RoIAlign samples per bin side; 0 adapts it to the box (Detectron2).
        aligned: RoIAlign's half-pixel shift (Detectron2 True, torchvision False).
        canonical_box_size, canonical_level: FPN level mapping: a box of this size goes to
            this level.

    ``forward(features: list[Tensor[N, C, H_l, W_l]], boxes: list[Tensor[R_i, 4]])`` ->
    ``Tensor[sum R_i, C, P, P]`` in box order.
    """

    def __init__(
        self,
        *,
        output_size: int,
        scales: Sequence[float],
        sampling_ratio: int = 0,
        aligned: bool = True,
        canonical_box_size: float = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        if not scales:
            raise ValueError("ROIPooler needs the scale of at least one feature level.")
        if len(scales) > 1:
            levels = [-math.log2(s) for s in scales]
            if any(abs(b - a - 1) > 1e-6 for a, b in itertools.pairwise(levels)) or any(
                abs(level - round(level)) > 1e-6 for level in levels
            ):
                raise ValueError(
                    f"ROIPooler scales {list(scales)} must be 1 / stride of a pyramid whose "
                    "strides are powers of two doubling from level to level (e.g. p2..p5)."
                )
        self.output_size = output_size
        self.scales = [float(s) for s in scales]
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level

    def forward(self, features: Sequence[Tensor], boxes: Sequence[Tensor]) -> Tensor:
        if len(features) != len(self.scales):
            raise ValueError(
                f"ROIPooler got {len(features)} feature levels but has {len(self.scales)} scales."
            )
        if len(self.scales) > 1:
            return multilevel_roi_align(
                list(features),
                list(boxes),
                self.output_size,
                self.scales,
                self.sampling_ratio,
                self.aligned,
                self.canonical_box_size,
                self.canonical_level,
            )
        rois = torch.cat(
            [torch.cat([b.new_full((len(b), 1), i), b], dim=1) for i, b in enumerate(boxes)]
        )
        return roi_align(
            features[0],
            rois.to(features[0].dtype),
            self.output_size,
            self.scales[0],
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )


class StandardROIHeads(nn.Module):
    """Box branch (+ optional mask and keypoint branches) on the proposals of each image.

    Heads are sized from the backbone: ``input_shape`` (the backbone's ``output_shape()``) gives
    the channels ``C`` of ``in_features`` (all equal) and their strides (the pooler scales), so a
    config never repeats them. Each head is given either as a built module or as a factory (a
    class or ``functools.partial``; in a config ``L(Head)(..., _partial_=True)``) that is called
    with the sizes it needs:

    * ``box_head(in_channels=C, pooler_resolution=box_pooler_resolution)``, which must expose
      ``output_size`` (its feature vector length);
    * ``box_predictor(input_size=box_head.output_size, num_classes=num_classes)``: an object
      with ``FastRCNNOutputLayers``'s ``forward``/``losses``/``inference``;
    * ``mask_head(in_channels=C, num_classes=num_classes)`` with ``forward``/``losses``/
      ``inference`` as ``MaskRCNNConvUpsampleHead``;
    * ``keypoint_head(in_channels=C)`` as ``KRCNNConvDeconvUpsampleHead`` (it knows its own
      ``num_keypoints``).

    Training (``forward(images, features, proposals, targets)``), per image: the ground-truth
    boxes are appended to the proposals (``proposal_append_gt``), each proposal is matched to the
    ground truth it overlaps most (``proposal_matcher``: IoU >= 0.5 foreground), and
    ``batch_size_per_image`` proposals are sampled with at most ``positive_fraction``
    foreground. The box branch trains on all sampled proposals, the mask and keypoint branches on
    the foreground ones. Returns the sampled proposals and the losses.

    Inference: the box branch turns proposals into detections; the mask and keypoint branches then
    run on the detected boxes (not on the proposals). Returns per image
    ``Instances(pred_boxes, scores, pred_classes[, pred_masks][, pred_keypoints])`` in the
    coordinates of the (resized, unpadded) input image; ``pred_masks`` are ``[D, M, M]``
    probabilities over each box, ``pred_keypoints`` ``[D, K, 3]`` ``(x, y, score)``.

    Args:
        input_shape: the backbone's ``output_shape()``.
        num_classes: foreground classes ``K`` (background is class ``K``).
        in_features: feature maps to pool from, fine to coarse.
        box_head, box_predictor, mask_head, keypoint_head: modules or factories (see above);
            ``mask_head``/``keypoint_head`` None disable those branches.
        box_pooler_resolution, mask_pooler_resolution, keypoint_pooler_resolution: ``P`` of each
            branch's RoIAlign (7, 14, 14).
        pooler_sampling_ratio, pooler_aligned, canonical_box_size, canonical_level: see
            ``ROIPooler`` (shared by the three branches).
        proposal_matcher: default IoU ``< 0.5`` background, ``>= 0.5`` foreground.
        batch_size_per_image: proposals sampled per image in training.
        positive_fraction: largest share of foreground among them.
        proposal_append_gt: add the ground-truth boxes to the proposals in training, so every
            object has at least one well-placed foreground sample early in training.
    """

    def __init__(
        self,
        *,
        input_shape: Mapping[str, ShapeSpec],
        num_classes: int,
        in_features: Sequence[str] = ("p2", "p3", "p4", "p5"),
        box_head: ModuleOrFactory = FastRCNNConvFCHead,
        box_predictor: ModuleOrFactory = FastRCNNOutputLayers,
        box_pooler_resolution: int = 7,
        mask_head: ModuleOrFactory | None = None,
        mask_pooler_resolution: int = 14,
        keypoint_head: ModuleOrFactory | None = None,
        keypoint_pooler_resolution: int = 14,
        pooler_sampling_ratio: int = 0,
        pooler_aligned: bool = True,
        canonical_box_size: float = 224,
        canonical_level: int = 4,
        proposal_matcher: Matcher | None = None,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        proposal_append_gt: bool = True,
    ) -> None:
        super().__init__()
        in_features = list(in_features)
        if not in_features:
            raise ValueError("StandardROIHeads in_features must name at least one feature map.")
        missing = [name for name in in_features if name not in input_shape]
        if missing:
            raise ValueError(
                f"StandardROIHeads in_features {missing} are not among the backbone outputs "
                f"{sorted(input_shape)}; pick names from the backbone's output_shape()."
            )
        channels = {input_shape[name].channels for name in in_features}
        if len(channels) != 1:
            raise ValueError(
                "StandardROIHeads pools every level into the same heads, so all in_features need "
                f"the same channel count; got { {n: input_shape[n].channels for n in in_features} }."
            )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(
                f"StandardROIHeads num_classes must be a positive int, got {num_classes!r}."
            )
        if batch_size_per_image <= 0 or not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(
                "StandardROIHeads needs batch_size_per_image > 0 and positive_fraction in [0, 1], "
                f"got {batch_size_per_image} and {positive_fraction}."
            )
        in_channels = channels.pop()
        self.in_features = in_features
        self.num_classes = num_classes
        scales = [1.0 / input_shape[name].stride for name in in_features]

        def pooler(resolution: int) -> ROIPooler:
            return ROIPooler(
                output_size=resolution,
                scales=scales,
                sampling_ratio=pooler_sampling_ratio,
                aligned=pooler_aligned,
                canonical_box_size=canonical_box_size,
                canonical_level=canonical_level,
            )

        self.box_pooler = pooler(box_pooler_resolution)
        build = functools.partial(build_module, owner="StandardROIHeads")
        self.box_head = build(
            box_head,
            what="box_head",
            in_channels=in_channels,
            pooler_resolution=box_pooler_resolution,
        )
        head_size = getattr(self.box_head, "output_size", None)
        if not isinstance(box_predictor, nn.Module) and not isinstance(head_size, int):
            raise ValueError(
                f"StandardROIHeads box_head {type(self.box_head).__name__} has no int attribute "
                "output_size to size the box_predictor; add one or pass a built box_predictor."
            )
        self.box_predictor = build(
            box_predictor, what="box_predictor", input_size=head_size, num_classes=num_classes
        )
        self.mask_pooler = pooler(mask_pooler_resolution) if mask_head is not None else None
        self.mask_head = build(
            mask_head, what="mask_head", in_channels=in_channels, num_classes=num_classes
        )
        self.keypoint_pooler = (
            pooler(keypoint_pooler_resolution) if keypoint_head is not None else None
        )
        self.keypoint_head = build(keypoint_head, what="keypoint_head", in_channels=in_channels)
        self.proposal_matcher = proposal_matcher or Matcher(
            thresholds=[0.5], labels=[0, 1], allow_low_quality_matches=False
        )
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.proposal_append_gt = proposal_append_gt

    def forward(
        self,
        images: ImageList,
        features: Mapping[str, Tensor],
        proposals: Sequence[Instances],
        targets: Sequence[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, Tensor]]:
        """Run the heads.

        Args:
            images: the batch; only used for its number of images.
            features: the backbone's feature maps ``[B, C, H_l, W_l]``.
            proposals: per image ``Instances`` with ``proposal_boxes`` (XYXY pixels).
            targets: in training, per image ``Instances`` with ``gt_boxes``, ``gt_classes`` and
                (for the enabled branches) ``gt_masks`` / ``gt_keypoints``.

        Returns:
            training: the sampled proposals and ``{"loss_cls", "loss_box_reg"[, "loss_mask"]
            [, "loss_keypoint"]}``; inference: the detections and ``{}``.
        """
        if len(proposals) != len(images.image_sizes):
            raise ValueError(
                f"StandardROIHeads got proposals for {len(proposals)} images and a batch of "
                f"{len(images.image_sizes)}."
            )
        missing = [name for name in self.in_features if name not in features]
        if missing:
            raise ValueError(
                f"StandardROIHeads got features {sorted(features)}, missing {missing}."
            )
        level_features = [features[name] for name in self.in_features]
        if self.training:
            if targets is None or len(targets) != len(proposals):
                raise ValueError(
                    "StandardROIHeads in training mode needs targets: one Instances per image "
                    "with gt_boxes and gt_classes."
                )
            self._check_targets(targets)
            sampled = self.label_and_sample_proposals(proposals, targets)
            losses = self._forward_box(level_features, sampled)
            foreground = select_foreground_proposals(sampled, self.num_classes)
            if self.mask_head is not None:
                losses.update(self._forward_mask(level_features, foreground, targets))
            if self.keypoint_head is not None:
                losses.update(self._forward_keypoint(level_features, foreground, targets))
            return sampled, losses

        detections = self._forward_box(level_features, proposals)
        return self.forward_with_given_boxes(features, detections), {}

    def forward_with_given_boxes(
        self, features: Mapping[str, Tensor], detections: Sequence[Instances]
    ) -> list[Instances]:
        """Run the mask and keypoint branches on ``pred_boxes`` (inference only).

        Adds ``pred_masks`` / ``pred_keypoints`` to ``detections`` (in place) and returns them.
        """
        if self.training:
            raise RuntimeError("forward_with_given_boxes is for inference; call eval() first.")
        level_features = [features[name] for name in self.in_features]
        detections = list(detections)
        boxes = [d.pred_boxes.tensor for d in detections]
        if self.mask_head is not None:
            assert self.mask_pooler is not None
            logits = self.mask_head(self.mask_pooler(level_features, boxes))
            self.mask_head.inference(logits, detections)
        if self.keypoint_head is not None:
            assert self.keypoint_pooler is not None
            logits = self.keypoint_head(self.keypoint_pooler(level_features, boxes))
            self.keypoint_head.inference(logits, detections)
        return detections

    def _check_targets(self, targets: Sequence[Instances]) -> None:
        required = ["gt_boxes", "gt_classes"]
        if self.mask_head is not None:
            required.append("gt_masks")
        if self.keypoint_head is not None:
            required.append("gt_keypoints")
        for index, target in enumerate(targets):
            absent = [name for name in required if not target.has(name)]
            if absent:
                raise ValueError(
                    f"StandardROIHeads: targets[{index}] lacks {absent}; the enabled branches "
                    f"need {required} in every image's instances."
                )

    def _forward_box(
        self, level_features: list[Tensor], proposals: Sequence[Instances]
    ) -> dict[str, Tensor] | list[Instances]:
        boxes = [p.proposal_boxes.tensor for p in proposals]
        box_features = self.box_head(self.box_pooler(level_features, boxes))
        predictions = self.box_predictor(box_features)
        if self.training:
            return self.box_predictor.losses(predictions, proposals)
        return self.box_predictor.inference(predictions, proposals)

    def _forward_mask(
        self,
        level_features: list[Tensor],
        foreground: Sequence[Instances],
        targets: Sequence[Instances],
    ) -> dict[str, Tensor]:
        assert self.mask_pooler is not None and self.mask_head is not None
        boxes = [p.proposal_boxes.tensor for p in foreground]
        logits = self.mask_head(self.mask_pooler(level_features, boxes))
        return self.mask_head.losses(logits, foreground, [t.gt_masks for t in targets])

    def _forward_keypoint(
        self,
        level_features: list[Tensor],
        foreground: Sequence[Instances],
        targets: Sequence[Instances],
    ) -> dict[str, Tensor]:
        assert self.keypoint_pooler is not None and self.keypoint_head is not None
        boxes = [p.proposal_boxes.tensor for p in foreground]
        logits = self.keypoint_head(self.keypoint_pooler(level_features, boxes))
        return self.keypoint_head.losses(logits, foreground, [t.gt_keypoints for t in targets])

    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: Sequence[Instances], targets: Sequence[Instances]
    ) -> list[Instances]:
        """Match proposals to the ground truth and sample the training ROIs of each image.

        Returns:
            per image ``Instances(proposal_boxes, gt_classes, gt_boxes, gt_idxs)`` of the
            sampled ROIs, foreground first: ``gt_classes`` int64 (``num_classes`` for
            background), ``gt_boxes`` the matched ground-truth box and ``gt_idxs`` its index in
            the image's targets (both meaningful for foreground only; zeros for an image without
            ground truth).
        """
        sampled = []
        for image_proposals, image_targets in zip(proposals, targets):
            proposal_boxes = image_proposals.proposal_boxes
            gt_boxes: Boxes = image_targets.gt_boxes.to(proposal_boxes.device)
            if self.proposal_append_gt:
                proposal_boxes = Boxes.cat(
                    [proposal_boxes, Boxes(gt_boxes.tensor.to(proposal_boxes.tensor.dtype))]
                )
            proposal_boxes = Boxes(proposal_boxes.tensor.detach())
            matched_idxs, match_labels = self.proposal_matcher(
                pairwise_iou(gt_boxes, proposal_boxes)
            )
            if len(gt_boxes) > 0:
                gt_classes = image_targets.gt_classes.to(proposal_boxes.device, torch.int64)
                gt_classes = gt_classes[matched_idxs]
                matched_boxes = gt_boxes.tensor[matched_idxs].to(proposal_boxes.tensor.dtype)
            else:
                gt_classes = torch.full_like(matched_idxs, self.num_classes)
                matched_boxes = torch.zeros_like(proposal_boxes.tensor)
            gt_classes[match_labels == 0] = self.num_classes
            gt_classes[match_labels == -1] = -1
            positive, negative = subsample_labels(
                gt_classes,
                num_samples=self.batch_size_per_image,
                positive_fraction=self.positive_fraction,
                background_label=self.num_classes,
            )
            keep = torch.cat([positive, negative])
            sampled.append(
                Instances(
                    image_proposals.image_size,
                    proposal_boxes=proposal_boxes[keep],
                    gt_classes=gt_classes[keep],
                    gt_boxes=Boxes(matched_boxes[keep]),
                    gt_idxs=matched_idxs[keep],
                )
            )
        return sampled


def select_foreground_proposals(
    proposals: Sequence[Instances], num_classes: int
) -> list[Instances]:
    """Per image, the proposals whose ``gt_classes`` is a foreground class ``[0, num_classes)``."""
    return [p[(p.gt_classes >= 0) & (p.gt_classes < num_classes)] for p in proposals]
