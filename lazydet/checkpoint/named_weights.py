"""Pretrained weights by name: ``train.init_checkpoint=torchvision:resnet50`` and the like.

A name is ``LIBRARY:MODEL``. ``torchvision:*`` names are resolved through torchvision's own
weight enums (``torchvision.models.get_weight``): their URL, their file name (which carries the
first hex digits of the file's SHA-256, checked on download) and torch.hub's cache folder
``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``), so a file torchvision
already downloaded is reused and the reverse. ``detectron2:*`` names are Detectron2 model-zoo
files (https://dl.fbaipublicfiles.com/detectron2/...), cached under the same folder in
``detectron2/`` with the URL's path. ``resolve_named_weights(name)`` returns the cached file,
downloading it first (torch.hub's download: progress bar, temporary file, hash check) when it is
not there; without network it raises one ``WeightsUnavailableError`` naming the file, the URL and
the folder to put it in. ``load_weights`` calls it for any string of this form, so every command
accepts the names. The table of names is in docs/weights.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "NAMED_WEIGHTS",
    "NamedWeights",
    "WeightsUnavailableError",
    "is_weights_name",
    "named_weights",
    "resolve_named_weights",
]

_DETECTRON2_URL = "https://dl.fbaipublicfiles.com/detectron2/"
# torchvision's file names end in -<first hex digits of the SHA-256>.pth (torch.hub's rule).
_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")


class WeightsUnavailableError(OSError):
    """A named weights file is not cached and cannot be downloaded (no network, a bad hash).

    An ``OSError``: the commands report it in one line and exit 1.
    """


@dataclass(frozen=True)
class NamedWeights:
    """One name of ``train.init_checkpoint``.

    Attributes:
        name: ``"torchvision:resnet50"``.
        what: what the file holds, in words.
        preset: the experiment (and backbone option) it loads into completely.
        imagenet: an ImageNet classifier: it fills the ResNet (the backbone's bottom-up) only.
        torchvision_weights: ``"ResNet50_Weights.IMAGENET1K_V1"``, for torchvision names.
        detectron2_path: the path under https://dl.fbaipublicfiles.com/detectron2/.
    """

    name: str
    what: str
    preset: str
    imagenet: bool = False
    torchvision_weights: str | None = None
    detectron2_path: str | None = None

    @property
    def url(self) -> str:
        if self.torchvision_weights is not None:
            from torchvision.models import get_weight

            return get_weight(self.torchvision_weights).url
        return _DETECTRON2_URL + str(self.detectron2_path)

    @property
    def cache_file(self) -> Path:
        """Where the file is (or will be) cached: torch.hub's checkpoints folder."""
        folder = Path(_hub_dir()) / "checkpoints"
        if self.torchvision_weights is not None:
            # torch.hub.load_state_dict_from_url's own rule: the URL's last component.
            return folder / os.path.basename(self.url)
        return folder / "detectron2" / str(self.detectron2_path)

    @property
    def hash_prefix(self) -> str | None:
        if self.torchvision_weights is None:
            return None  # Detectron2 publishes no hash for its model-zoo files.
        match = _HASH_IN_NAME.search(self.cache_file.name)
        return match.group(1) if match else None


def _hub_dir() -> str:
    import torch.hub

    return torch.hub.get_dir()


def _tv(name: str, weights: str, what: str, preset: str, imagenet: bool = False) -> NamedWeights:
    return NamedWeights(
        name=f"torchvision:{name}",
        what=what,
        preset=preset,
        imagenet=imagenet,
        torchvision_weights=weights,
    )


def _d2(name: str, path: str, what: str, preset: str) -> NamedWeights:
    return NamedWeights(name=f"detectron2:{name}", what=what, preset=preset, detectron2_path=path)


_COCO = "COCO 2017, 80 classes"
NAMED_WEIGHTS: dict[str, NamedWeights] = {
    w.name: w
    for w in (
        _tv(
            "resnet18",
            "ResNet18_Weights.IMAGENET1K_V1",
            "ImageNet ResNet-18 classifier",
            "any COCO recipe with model.backbone=resnet18",
            imagenet=True,
        ),
        _tv(
            "resnet50",
            "ResNet50_Weights.IMAGENET1K_V1",
            "ImageNet ResNet-50 classifier",
            "faster_rcnn_fpn, mask_rcnn_fpn, keypoint_rcnn_fpn, retinanet_fpn (model.backbone=resnet50)",
            imagenet=True,
        ),
        _tv(
            "resnet101",
            "ResNet101_Weights.IMAGENET1K_V1",
            "ImageNet ResNet-101 classifier",
            "any COCO recipe with model.backbone=resnet101",
            imagenet=True,
        ),
        _tv(
            "fasterrcnn_resnet50_fpn",
            "FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
            f"Faster R-CNN R50-FPN, {_COCO}",
            "torchvision_faster_rcnn_fpn",
        ),
        _tv(
            "maskrcnn_resnet50_fpn",
            "MaskRCNN_ResNet50_FPN_Weights.COCO_V1",
            f"Mask R-CNN R50-FPN, {_COCO}",
            "torchvision_mask_rcnn_fpn",
        ),
        _tv(
            "keypointrcnn_resnet50_fpn",
            "KeypointRCNN_ResNet50_FPN_Weights.COCO_V1",
            "Keypoint R-CNN R50-FPN, COCO 2017 person keypoints",
            "torchvision_keypoint_rcnn_fpn",
        ),
        _tv(
            "retinanet_resnet50_fpn",
            "RetinaNet_ResNet50_FPN_Weights.COCO_V1",
            f"RetinaNet R50-FPN, {_COCO}",
            "torchvision_retinanet_fpn",
        ),
        _d2(
            "COCO-Detection/faster_rcnn_R_50_FPN_3x",
            "COCO-Detection/faster_rcnn_R_50_FPN_3x/137849458/model_final_280758.pkl",
            f"Detectron2 Faster R-CNN R50-FPN 3x, {_COCO}",
            "detectron2_faster_rcnn_fpn",
        ),
        _d2(
            "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x",
            "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl",
            f"Detectron2 Mask R-CNN R50-FPN 3x, {_COCO}",
            "detectron2_mask_rcnn_fpn",
        ),
        _d2(
            "COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x",
            "COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x/137849621/model_final_a6e10b.pkl",
            "Detectron2 Keypoint R-CNN R50-FPN 3x, COCO 2017 person keypoints",
            "detectron2_keypoint_rcnn_fpn",
        ),
        _d2(
            "COCO-Detection/retinanet_R_50_FPN_3x",
            "COCO-Detection/retinanet_R_50_FPN_3x/190397829/model_final_5bd44e.pkl",
            f"Detectron2 RetinaNet R50-FPN 3x, {_COCO}",
            "detectron2_retinanet_fpn",
        ),
    )
}

# Names a user may expect, with the reason lazydet does not offer them.
_NOT_OFFERED = {
    "torchvision:maskrcnn_resnet50_fpn_v2": (
        "its heads (a 4-conv + GroupNorm box head, a 2-conv RPN head, GroupNorm mask head) have "
        "no lazydet preset and no name conversion yet"
    ),
    "detectron2:ImageNetPretrained/MSRA/R-50": (
        "R-50.pkl uses Caffe2's names (res2_0_branch2a_w, ...), which lazydet does not convert; "
        "use torchvision:resnet50"
    ),
}


def is_weights_name(value: object) -> bool:
    """A string of the form ``torchvision:...`` or ``detectron2:...`` (not a path)."""
    return isinstance(value, str) and value.split(":", 1)[0] in ("torchvision", "detectron2")


def named_weights(name: str) -> NamedWeights:
    """The entry for ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    if name in NAMED_WEIGHTS:
        return NAMED_WEIGHTS[name]
    if name in _NOT_OFFERED:
        raise ValueError(f"{name} is not offered: {_NOT_OFFERED[name]}.")
    import difflib

    close = difflib.get_close_matches(name, list(NAMED_WEIGHTS), n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    raise ValueError(
        f"Unknown weights name {name!r}.{hint} Known names: {', '.join(NAMED_WEIGHTS)} "
        "(see docs/weights.md), or give a file path."
    )


def resolve_named_weights(name: str) -> Path:
    """The local file of the weights ``name``, downloaded into torch.hub's cache if absent.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        WeightsUnavailableError: not cached and the download failed (no network, wrong hash):
            one message naming the file, the URL and the folder to put it in.
    """
    entry = named_weights(name)
    target = entry.cache_file
    if target.is_file():
        return target
    import torch.hub

    url = entry.url
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Writes a temporary file next to target and renames it once complete and checked, so an
        # interrupted download leaves no partial file under the expected name.
        torch.hub.download_url_to_file(
            url, str(target), hash_prefix=entry.hash_prefix, progress=True
        )
    except (OSError, RuntimeError, ValueError) as error:
        reason = str(getattr(error, "reason", None) or error).strip().splitlines()[0]
        raise WeightsUnavailableError(
            f"{name}: {target.name} is not in the cache and could not be downloaded from {url} "
            f"({type(error).__name__}: {reason}). Download it on a machine with network and put "
            f"it in {target.parent}/ as {target.name} (or set TORCH_HOME to a folder whose "
            "hub/checkpoints holds it), then run again."
        ) from None
    return target
