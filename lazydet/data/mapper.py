"""Turn one dataset record into what a model takes: image tensor + ``Instances``.

The image, boxes, masks and keypoints are augmented together by one
``torchvision.transforms.v2`` pipeline. The sample handed to that pipeline is a dict::

    {"image": tv_tensors.Image uint8 [3, H, W],
     "boxes": tv_tensors.BoundingBoxes [N, 4] XYXY (the ground-truth boxes),
     "masks": tv_tensors.Mask uint8 [N, H, W]                      (bitmask format only),
     "points": tv_tensors.BoundingBoxes [P, 4] XYXY, clamping off}  (see below)

``points`` carries every *point* that must move with the image -- three probe points, the
keypoints and the polygon vertices -- each as a zero-size box ``(x, y, x, y)``. Why not
``tv_tensors.KeyPoints`` (torchvision 0.29 has it)? Its horizontal flip maps ``x -> W - 1 - x``
(pixel indices) while its resize maps ``x -> s * x`` (continuous coordinates), so in lazydet's
continuous convention a flip would be off by one pixel; boxes use ``x -> W - x`` and ``s * x``
consistently, and with clamping off a zero-size box is exactly a point.

The probe points ``(0, 0), (W, 0), (0, H)`` tell whether the pipeline mirrored the image (the
orientation of the probe triangle flips sign); if so the keypoints are permuted by
``keypoint_flip_indices`` (left eye <-> right eye), which torchvision cannot know about. Any
mirroring transform works, not only ``RandomHorizontalFlip``.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Sequence
from typing import IO, Any

import numpy as np
import torch
import torchvision.transforms.v2 as T
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import pil_to_tensor, to_dtype

from ..structures import BitMasks, Boxes, Instances, Keypoints, PolygonMasks
from .augmentation import iter_transforms
from .rle import check_rle

__all__ = ["SKIP_NO_INSTANCE", "SKIP_UNREADABLE", "DatasetMapper", "read_image"]

logger = logging.getLogger(__name__)

# Values of DatasetMapper.last_skip_reason.
SKIP_UNREADABLE = "unreadable image (skip_unreadable_images=True)"
SKIP_NO_INSTANCE = "no instance left after augmentation (filter_empty=True)"


class _BadImage(Exception):
    """Raised while reading an image; carries what is wrong with it (``read_image`` adds where)."""


_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"))


def _open_regular_file(file_name: str) -> IO[bytes]:
    """The file opened for binary reading, refusing anything but a regular file.

    ``O_NONBLOCK``: opening a FIFO for reading otherwise waits for a writer, forever in a data
    loader worker; on a regular file the flag changes nothing.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(file_name, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next(
                (name for test, name in _NOT_REGULAR if test(mode)), "a device or special file"
            )
            raise _BadImage(f"it is {kind}, not a regular file; point file_name at an image file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _to_uint8_rgb(pil: Image.Image) -> torch.Tensor:
    """uint8 ``[3, H, W]`` of a PIL image of any mode.

    PIL's ``convert("RGB")`` clips 16-bit and float pixels to 255; those are scaled instead, with
    torchvision's ``to_dtype(scale=True)`` (16-bit: the high byte, as PIL itself does for 16-bit
    RGB PNGs; float: ``[0, 1] -> [0, 255]``).
    """
    mode = pil.mode
    if mode != "F" and mode != "I" and not mode.startswith("I;16"):
        return pil_to_tensor(pil.convert("RGB"))
    array = np.asarray(pil)
    low, high = (array.min(), array.max()) if array.size else (0, 0)
    if mode == "F":
        if not np.isfinite(array).all():
            raise _BadImage("it is a float image with NaN or infinite pixels")
        if low < 0 or high > 1:
            raise _BadImage(
                f"it is a float image with values in [{low:g}, {high:g}]; float images are read "
                "as intensities in [0, 1]: rescale it, or save it as an 8-bit image"
            )
        gray = torch.from_numpy(array.astype(np.float32))
    else:
        # 16-bit PNGs open as "I;16" (or "I" in older Pillow): 0..65535 either way.
        if low < 0 or high > 65535:
            raise _BadImage(
                f"it is a 32-bit integer image with values in [{low}, {high}]; integer images "
                "are read as 16-bit (0..65535): save it as an 8- or 16-bit image"
            )
        gray = torch.from_numpy(array.astype(np.uint16))  # native byte order (I;16B is big)
    return to_dtype(gray, torch.uint8, scale=True).unsqueeze(0).expand(3, -1, -1).contiguous()


def read_image(file_name: str, *, image_format: str = "RGB", image_id: Any = None) -> torch.Tensor:
    """Read an image file as a uint8 ``[3, H, W]`` tensor, applying the EXIF orientation.

    Grayscale, palette and RGBA images are converted to RGB (alpha dropped); 16-bit images are
    scaled to 8 bits (``v >> 8``) and float images from ``[0, 1]`` (other ranges are refused).
    ``image_format`` "BGR" reverses the channels. A missing file raises ``FileNotFoundError``;
    anything else that cannot be read (corrupt, a directory or FIFO, over PIL's
    ``Image.MAX_IMAGE_PIXELS`` decompression-bomb limit) raises ``ValueError``, both naming the
    file (and ``image_id`` when given).
    """
    where = f"image {file_name!r}" + (f" (image_id={image_id!r})" if image_id is not None else "")
    try:
        with _open_regular_file(file_name) as f, Image.open(f) as pil:
            image = _to_uint8_rgb(ImageOps.exif_transpose(pil))
    except FileNotFoundError:
        raise FileNotFoundError(f"{where} does not exist") from None
    except _BadImage as e:
        raise ValueError(f"cannot read {where}: {e}") from None
    except Image.DecompressionBombError as e:  # not an OSError: PIL's guard against huge images
        raise ValueError(
            f"cannot read {where}: {e} If the image is genuine, raise PIL.Image.MAX_IMAGE_PIXELS "
            "before loading; otherwise remove it from the dataset"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot read {where}: {type(e).__name__}: {e}") from None
    if image_format == "BGR":
        image = image.flip(0)
    elif image_format != "RGB":
        raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    return image


def _segmentation_to_bitmask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """uint8 [H, W] mask of a polygon list or an RLE dict (pycocotools does the rasterising)."""
    from pycocotools import mask as mask_util

    if isinstance(segmentation, dict):
        check_rle(segmentation, height, width)  # pycocotools trusts the counts; see ..rle
        rle = segmentation
        if isinstance(rle["counts"], list):  # uncompressed (a record not from load_coco_json)
            rle = mask_util.frPyObjects(rle, height, width)
    else:
        rle = mask_util.merge(
            mask_util.frPyObjects(
                [np.asarray(p, dtype=np.float64).tolist() for p in segmentation], height, width
            )
        )
    return mask_util.decode(rle)


class DatasetMapper:
    """Callable: dataset record (``dict``) -> model input ``dict``.

    Output keys: ``image`` (uint8 ``[3, H', W']`` RGB after augmentation; the model's
    ``input_format`` is the one channel-order setting, it flips the image for BGR weights),
    ``height``/``width`` (the ORIGINAL image size, so predictions can be rescaled to it),
    ``image_id``, ``file_name`` and,
    when ``is_train``, ``instances``: ``Instances((H', W'), gt_boxes=Boxes [N, 4] XYXY,
    gt_classes=long [N], gt_masks=PolygonMasks | BitMasks, gt_keypoints=Keypoints [N, K, 3])``
    plus ``num_dropped_instances`` (instances that the augmentation left with an empty box).

    Args:
        augmentations: a ``torchvision.transforms.v2`` transform taking the sample dict described
            in the module docstring (``None``: no augmentation). Do not put
            ``SanitizeBoundingBoxes`` in it: it would drop boxes without the matching masks and
            keypoints; the mapper drops empty instances itself.
        is_train: build ``instances`` (crowd annotations are left out). At inference the
            annotations are not used.
        use_masks: produce ``gt_masks`` from the ``segmentation`` of each annotation.
        mask_format: "polygon" (``PolygonMasks``; needs polygon annotations), "bitmask"
            (``BitMasks``; accepts polygons and RLE), or "auto" (default): ``PolygonMasks`` when
            every instance of the image has polygons, else ``BitMasks`` -- COCO gives polygons
            (crowd RLEs are not training instances), ``shapes`` gives RLE bitmasks. Both types
            offer ``crop_and_resize``; a dataset that mixes the two per image gives mixed types.
        use_keypoints: produce ``gt_keypoints`` from each annotation's ``keypoints``.
        keypoint_flip_indices: permutation applied to keypoints when the augmentation mirrors the
            image (``lazydet.data.keypoint_flip_indices(names, flip_map)``); required when a
            mirror happens with ``use_keypoints``.
        recompute_boxes: replace the boxes by the tight boxes of the augmented masks (useful after
            a crop, where the clipped original box may be looser than the visible mask).
        filter_empty: return ``None`` (the training loader then skips the image) when no instance
            is left after augmentation.
        skip_unreadable_images: return ``None`` instead of raising when the image file is
            missing or cannot be read (a warning names the file).

    After a call that returned ``None``, ``last_skip_reason`` says why (``SKIP_UNREADABLE`` or
    ``SKIP_NO_INSTANCE``); the loaders count skipped images by it.
    """

    def __init__(
        self,
        *,
        augmentations: Callable[[dict], dict] | None,
        is_train: bool,
        use_masks: bool = False,
        mask_format: str = "auto",
        use_keypoints: bool = False,
        keypoint_flip_indices: Sequence[int] | None = None,
        recompute_boxes: bool = False,
        filter_empty: bool = False,
        skip_unreadable_images: bool = False,
    ) -> None:
        if mask_format not in ("auto", "polygon", "bitmask"):
            raise ValueError(
                f"mask_format must be 'auto', 'polygon' or 'bitmask', got {mask_format!r}"
            )
        if recompute_boxes and not use_masks:
            raise ValueError("recompute_boxes=True needs use_masks=True (boxes come from masks)")
        for transform in iter_transforms(augmentations):
            if isinstance(transform, T.SanitizeBoundingBoxes):
                raise ValueError(
                    "augmentations contain SanitizeBoundingBoxes, which would drop boxes without "
                    "their masks and keypoints; remove it (DatasetMapper drops empty instances)"
                )
        if keypoint_flip_indices is not None:
            indices = [int(i) for i in keypoint_flip_indices]
            if sorted(indices) != list(range(len(indices))):
                raise ValueError(f"keypoint_flip_indices must be a permutation, got {indices}")
            keypoint_flip_indices = indices
        self.augmentations = augmentations
        self.is_train = is_train
        self.use_masks = use_masks
        self.mask_format = mask_format
        self.use_keypoints = use_keypoints
        self.keypoint_flip_indices = keypoint_flip_indices
        self.recompute_boxes = recompute_boxes
        self.filter_empty = filter_empty
        self.skip_unreadable_images = skip_unreadable_images
        # Why the last call returned None (SKIP_*), read by the loaders to count what they skip.
        self.last_skip_reason: str | None = None

    def __repr__(self) -> str:
        return (
            f"DatasetMapper(is_train={self.is_train}, use_masks={self.use_masks}, "
            f"mask_format={self.mask_format!r}, use_keypoints={self.use_keypoints}, "
            f"augmentations={self.augmentations!r})"
        )

    def __call__(self, record: dict) -> dict | None:
        self.last_skip_reason = None
        file_name = record["file_name"]
        image_id = record.get("image_id")
        try:
            image = read_image(file_name, image_id=image_id)
        except (FileNotFoundError, ValueError) as e:
            if self.skip_unreadable_images:
                logger.warning("skipping an unreadable image: %s", e)
                self.last_skip_reason = SKIP_UNREADABLE
                return None
            raise
        height, width = int(image.shape[1]), int(image.shape[2])
        expected = (record.get("height", height), record.get("width", width))
        if expected != (height, width):
            raise ValueError(
                f"image {file_name!r} (image_id={image_id!r}) is {height}x{width} (HxW, after EXIF "
                f"rotation) but its record says {expected[0]}x{expected[1]}; fix the annotation file"
            )
        annotations = (
            [a for a in record.get("annotations", ()) if not a.get("iscrowd", 0)]
            if self.is_train
            else []
        )

        sample, polygon_lengths = self._build_sample(image, annotations, record)
        if self.augmentations is not None:
            sample = self.augmentations(sample)
        out_image = sample["image"].as_subclass(torch.Tensor)
        out: dict[str, Any] = {
            "file_name": file_name,
            "image_id": image_id,
            "height": height,
            "width": width,
            "image": out_image,
        }
        if self.is_train:
            instances, dropped = self._build_instances(sample, annotations, polygon_lengths, record)
            if dropped:
                logger.debug(
                    "%s: dropped %d instances left empty by the augmentation", file_name, dropped
                )
            if self.filter_empty and len(instances) == 0:
                self.last_skip_reason = SKIP_NO_INSTANCE
                return None
            out["instances"] = instances
            out["num_dropped_instances"] = dropped
        return out

    # ------------------------------------------------------------------------------------------
    def _build_sample(
        self, image: torch.Tensor, annotations: list[dict], record: dict
    ) -> tuple[dict, list[list[int]]]:
        """The tv_tensors sample and, per instance, the vertex count of each of its polygons."""
        height, width = int(image.shape[1]), int(image.shape[2])
        boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4)
        sample: dict[str, Any] = {
            "image": tv_tensors.Image(image),
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
        }
        probe = np.array([[0.0, 0.0], [width, 0.0], [0.0, height]])
        points = [probe]
        polygon_lengths: list[list[int]] = []
        if self.use_keypoints:
            for a in annotations:
                if "keypoints" not in a:
                    raise ValueError(
                        f"{record['file_name']}: annotation id={a.get('id')!r} has no keypoints but "
                        "use_keypoints=True; give every instance keypoints (all-zero with v=0 is fine)"
                    )
            for a in annotations:
                points.append(np.asarray(a["keypoints"], dtype=np.float64)[:, :2])
        if self.use_masks:
            for a in annotations:
                if "segmentation" not in a:
                    raise ValueError(
                        f"{record['file_name']}: annotation id={a.get('id')!r} has no segmentation "
                        "but use_masks=True"
                    )
            mask_format = self.mask_format
            if mask_format == "auto":
                has_rle = any(isinstance(a["segmentation"], dict) for a in annotations)
                mask_format = "bitmask" if has_rle else "polygon"
            if mask_format == "polygon":
                for a in annotations:
                    segmentation = a["segmentation"]
                    if isinstance(segmentation, dict):
                        raise ValueError(
                            f"{record['file_name']}: annotation id={a.get('id')!r} has an RLE mask; "
                            "use DatasetMapper(mask_format='bitmask') for datasets with RLE masks"
                        )
                    polygons = [
                        np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segmentation
                    ]
                    polygon_lengths.append([len(p) for p in polygons])
                    points.extend(polygons)
            else:
                masks = np.zeros((len(annotations), height, width), dtype=np.uint8)
                for i, a in enumerate(annotations):
                    try:
                        masks[i] = _segmentation_to_bitmask(a["segmentation"], height, width)
                    except ValueError as e:
                        raise ValueError(
                            f"{record['file_name']}: annotation id={a.get('id')!r} has an "
                            f"invalid mask: {e}"
                        ) from None
                sample["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
        # float64: polygons must rasterise exactly as pycocotools does with the json values.
        xy = torch.from_numpy(np.concatenate(points, axis=0)).to(torch.float64)
        sample["points"] = tv_tensors.BoundingBoxes(
            torch.cat([xy, xy], dim=1),
            format="XYXY",
            canvas_size=(height, width),
            clamping_mode=None,
        )
        return sample, polygon_lengths

    def _build_instances(
        self, sample: dict, annotations: list[dict], polygon_lengths: list[list[int]], record: dict
    ) -> tuple[Instances, int]:
        image = sample["image"]
        height, width = int(image.shape[-2]), int(image.shape[-1])
        num = len(annotations)
        boxes = Boxes(sample["boxes"].as_subclass(torch.Tensor).to(torch.float32).reshape(-1, 4))
        fields: dict[str, Any] = {
            "gt_boxes": boxes,
            "gt_classes": torch.tensor([a["category_id"] for a in annotations], dtype=torch.long),
        }
        xy = sample["points"].as_subclass(torch.Tensor)[:, :2]
        probe, xy = xy[:3], xy[3:]
        edge_x, edge_y = probe[1] - probe[0], probe[2] - probe[0]
        mirrored = bool(edge_x[0] * edge_y[1] - edge_x[1] * edge_y[0] < 0)

        if self.use_keypoints:
            if num:
                num_keypoints = len(annotations[0]["keypoints"])
                kp = torch.from_numpy(
                    np.stack([np.asarray(a["keypoints"], dtype=np.float32) for a in annotations])
                )
                kp[:, :, :2] = xy[: num * num_keypoints].reshape(num, num_keypoints, 2)
                xy = xy[num * num_keypoints :]
                outside = (
                    (kp[..., 0] < 0)
                    | (kp[..., 0] > width)
                    | (kp[..., 1] < 0)
                    | (kp[..., 1] > height)
                )
                kp[..., 2][outside] = 0  # a keypoint cropped away is no longer labelled
                if mirrored:
                    if self.keypoint_flip_indices is None:
                        raise ValueError(
                            "the augmentation mirrored an image with keypoints but DatasetMapper got "
                            "no keypoint_flip_indices; pass keypoint_flip_indices(names, flip_map)"
                        )
                    if len(self.keypoint_flip_indices) != num_keypoints:
                        raise ValueError(
                            f"keypoint_flip_indices has {len(self.keypoint_flip_indices)} entries but "
                            f"{record['file_name']} has {num_keypoints} keypoints per instance"
                        )
                    kp = kp[:, self.keypoint_flip_indices]
            else:
                k = len(self.keypoint_flip_indices or ())
                kp = torch.zeros(0, k, 3)
            fields["gt_keypoints"] = Keypoints(kp)

        if self.use_masks:
            if "masks" not in sample:  # polygons travelled as points
                polygons: list[list[np.ndarray]] = []
                start = 0
                flat = xy.to(torch.float64).numpy()
                for lengths in polygon_lengths:
                    instance = []
                    for n in lengths:
                        instance.append(flat[start : start + n].reshape(-1).copy())
                        start += n
                    polygons.append(instance)
                masks: PolygonMasks | BitMasks = PolygonMasks(polygons)
            else:
                mask_tensor = sample["masks"].as_subclass(torch.Tensor).reshape(num, height, width)
                masks = BitMasks(mask_tensor != 0)
            fields["gt_masks"] = masks
            if self.recompute_boxes:
                recomputed = masks.get_bounding_boxes()
                fields["gt_boxes"] = Boxes(recomputed.tensor.to(torch.float32))
        fields["gt_boxes"].clip((height, width))
        instances = Instances((height, width), **fields)
        keep = instances.gt_boxes.nonempty()
        dropped = int((~keep).sum())
        if dropped:
            instances = instances[keep]
        return instances, dropped
