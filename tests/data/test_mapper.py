"""DatasetMapper: image reading, and image/boxes/masks/keypoints augmented consistently.

References: torchvision applied to the image alone, hand-computed flips (x -> W - x with the
left/right swap), pycocotools rasterisation, numpy rotations for EXIF orientation."""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
from PIL import Image
from pycocotools import mask as mask_util

from lazydet.data import (
    DatasetMapper,
    large_scale_jitter,
    load_coco_json,
    read_image,
    train_augmentations,
)
from lazydet.data.datasets import generate_shapes
from lazydet.data.mapper import SKIP_UNREADABLE

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

FLIP = [0, 3, 2, 1]  # top, right, bottom, left: right <-> left


@pytest.fixture(scope="module")
def shapes_records(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, num_images=6, image_size=64, seed=11)
    return load_coco_json(root / "annotations.json", root)


def _image_file(tmp_path: Path, array: np.ndarray, name: str = "img.png", **save_kwargs) -> str:
    path = tmp_path / name
    Image.fromarray(array).save(path, **save_kwargs)
    return str(path)


def _polygon_record(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    file_name = _image_file(tmp_path, rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    polygon = np.array([5.0, 5.0, 20.0, 5.0, 20.0, 15.0, 5.0, 15.0])  # x 5..20, y 5..15
    return {
        "file_name": file_name,
        "image_id": 1,
        "height": 30,
        "width": 40,
        "annotations": [
            {
                "id": 1,
                "bbox": (5.0, 5.0, 20.0, 15.0),
                "category_id": 2,
                "iscrowd": 0,
                "segmentation": [polygon],
                "keypoints": np.array(
                    [[12.5, 5.0, 2], [20.0, 10.0, 2], [12.5, 15.0, 1], [5.0, 10.0, 2]],
                    dtype=np.float32,
                ),
            }
        ],
    }


def test_horizontal_flip_hand_computed(tmp_path: Path) -> None:
    record = _polygon_record(tmp_path)
    mapper = DatasetMapper(
        augmentations=T.RandomHorizontalFlip(p=1.0),
        is_train=True,
        use_masks=True,
        mask_format="polygon",
        use_keypoints=True,
        keypoint_flip_indices=FLIP,
    )
    out = mapper(record)
    original = np.asarray(Image.open(record["file_name"]))
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), original[:, ::-1])
    inst = out["instances"]
    # x -> W - x (continuous coordinates), W = 40.
    np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), [[20.0, 5.0, 35.0, 15.0]])
    np.testing.assert_allclose(
        inst.gt_masks.polygons[0][0], [35.0, 5.0, 20.0, 5.0, 20.0, 15.0, 35.0, 15.0]
    )
    # Mirrored points, then right <-> left swapped: the new "right" is the old left point.
    np.testing.assert_allclose(
        inst.gt_keypoints.tensor[0].numpy(),
        [[27.5, 5.0, 2], [35.0, 10.0, 2], [27.5, 15.0, 1], [20.0, 10.0, 2]],
    )
    assert inst.gt_classes.tolist() == [2]
    assert (out["height"], out["width"]) == (30, 40)


def test_flip_twice_is_identity(tmp_path: Path) -> None:
    record = _polygon_record(tmp_path)
    kwargs = dict(is_train=True, use_masks=True, use_keypoints=True, keypoint_flip_indices=FLIP)
    plain = DatasetMapper(augmentations=None, **kwargs)(record)
    twice = DatasetMapper(
        augmentations=T.Compose([T.RandomHorizontalFlip(1.0), T.RandomHorizontalFlip(1.0)]),
        **kwargs,
    )(record)
    torch.testing.assert_close(twice["image"], plain["image"])
    a, b = twice["instances"], plain["instances"]
    torch.testing.assert_close(a.gt_boxes.tensor, b.gt_boxes.tensor)
    torch.testing.assert_close(a.gt_keypoints.tensor, b.gt_keypoints.tensor)
    np.testing.assert_allclose(a.gt_masks.polygons[0][0], b.gt_masks.polygons[0][0])


def test_flip_without_flip_indices_is_an_error(tmp_path: Path) -> None:
    mapper = DatasetMapper(
        augmentations=T.RandomHorizontalFlip(1.0), is_train=True, use_keypoints=True
    )
    with pytest.raises(ValueError, match="no keypoint_flip_indices"):
        mapper(_polygon_record(tmp_path))


def test_image_matches_torchvision_resize(tmp_path: Path) -> None:
    record = _polygon_record(tmp_path)
    resize = T.Resize(20, max_size=25)
    out = DatasetMapper(augmentations=resize, is_train=True, use_masks=True)(record)
    original = torch.from_numpy(np.array(Image.open(record["file_name"]))).permute(2, 0, 1)
    torch.testing.assert_close(out["image"], resize(original))
    h, w = out["image"].shape[1:]
    scale_x, scale_y = w / 40, h / 30
    np.testing.assert_allclose(
        out["instances"].gt_boxes.tensor[0].numpy(),
        [5 * scale_x, 5 * scale_y, 20 * scale_x, 15 * scale_y],
        rtol=1e-6,
    )


def test_keypoints_stay_on_shapes_and_boxes_bound_masks(shapes_records) -> None:
    """After flip + LSJ (scale + crop with padding), keypoints sit on their shape, and with
    recompute_boxes each box is the tight box of its mask (checked with pycocotools)."""
    torch.manual_seed(0)
    augmentations = T.Compose([T.RandomHorizontalFlip(0.5), large_scale_jitter(64, (0.5, 1.5))])
    mapper = DatasetMapper(
        augmentations=augmentations,
        is_train=True,
        use_masks=True,
        mask_format="bitmask",
        use_keypoints=True,
        keypoint_flip_indices=FLIP,
        recompute_boxes=True,
    )
    checked = 0
    for _ in range(3):
        for record in shapes_records:
            out = mapper(record)
            inst = out["instances"]
            assert out["image"].shape == (3, 64, 64)
            for i in range(len(inst)):
                mask = inst.gt_masks.tensor[i].numpy()
                rows, cols = np.nonzero(mask)
                expected = mask_util.toBbox(
                    mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                )
                x, y, w, h = expected
                np.testing.assert_allclose(
                    inst.gt_boxes.tensor[i].numpy(), [x, y, x + w, y + h], atol=1e-4
                )
                kp = inst.gt_keypoints.tensor[i]
                right, left = kp[1, :2], kp[3, :2]
                labelled = kp[:, 2] > 0
                if labelled[1] and labelled[3]:
                    assert right[0] >= left[0]  # the swap keeps "right" on the right
                for (px, py), v in zip(kp[:, :2].tolist(), kp[:, 2].tolist()):
                    if v == 2:
                        centres = np.stack([cols + 0.5, rows + 0.5], 1)
                        assert np.sqrt(((centres - [px, py]) ** 2).sum(1)).min() <= 3.0
                checked += 1
    assert checked > 10


def test_polygon_box_bounds_mask_after_crop(tmp_path: Path) -> None:
    record = _polygon_record(tmp_path)
    torch.manual_seed(1)
    mapper = DatasetMapper(
        augmentations=T.Compose([T.Resize(60), T.RandomCrop((32, 32))]),
        is_train=True,
        use_masks=True,
        recompute_boxes=True,
    )
    for _ in range(10):
        out = mapper(record)
        inst = out["instances"]
        for i in range(len(inst)):
            bitmask = inst.gt_masks.to_bitmasks(32, 32).tensor[i].numpy()
            rows, cols = np.nonzero(bitmask)
            x0, y0, x1, y1 = inst.gt_boxes.tensor[i].tolist()
            assert x0 <= cols.min() and cols.max() + 1 <= x1 + 1e-4
            assert y0 <= rows.min() and rows.max() + 1 <= y1 + 1e-4


def test_empty_instances_dropped_with_count(tmp_path: Path, caplog) -> None:
    record = _polygon_record(tmp_path)
    record["annotations"].append(
        {"id": 2, "bbox": (3.0, 3.0, 3.0, 9.0), "category_id": 0, "iscrowd": 0}  # zero width
    )
    record["annotations"].append(
        {"id": 3, "bbox": (0.0, 0.0, 9.0, 9.0), "category_id": 1, "iscrowd": 1}
    )
    with caplog.at_level(logging.DEBUG, logger="lazydet.data.mapper"):
        out = DatasetMapper(augmentations=None, is_train=True)(record)
    assert out["num_dropped_instances"] == 1
    assert out["instances"].gt_classes.tolist() == [2]  # crowd left out, empty box dropped
    assert "dropped 1 instances" in caplog.text
    crop_all_away = DatasetMapper(
        augmentations=T.CenterCrop((3, 3)), is_train=True, filter_empty=True
    )
    record["annotations"] = record["annotations"][:1]
    record["annotations"][0]["bbox"] = (0.0, 0.0, 2.0, 2.0)
    assert crop_all_away(record) is None


def test_exif_orientation_grayscale_and_rgba(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.png"
    Image.fromarray(array).save(path, exif=exif)
    mapper = DatasetMapper(augmentations=None, is_train=False)
    out = mapper({"file_name": str(path), "image_id": 0})
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), np.rot90(array, k=-1))
    assert "instances" not in out
    gray = _image_file(tmp_path, np.full((4, 5), 7, dtype=np.uint8), "gray.png")
    assert mapper({"file_name": gray})["image"].shape == (3, 4, 5)
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    # The mapper always gives RGB (the model's input_format is the one channel-order setting);
    # read_image can still read BGR for other uses.
    rgba_file = _image_file(tmp_path, rgba, "rgba.png")
    assert mapper({"file_name": rgba_file})["image"][0].eq(200).all()  # RGB: red first
    bgr = read_image(rgba_file, image_format="BGR")
    assert bgr.shape == (3, 4, 5) and bgr[2].eq(200).all()  # BGR: red last


def test_bad_images_name_the_file(tmp_path: Path, caplog) -> None:
    mapper = DatasetMapper(augmentations=None, is_train=True)
    missing = {"file_name": str(tmp_path / "nope.jpg"), "image_id": 42, "annotations": []}
    with pytest.raises(FileNotFoundError, match=r"nope\.jpg.*image_id=42"):
        mapper(missing)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ValueError, match=r"cannot read image .*corrupt\.jpg"):
        mapper({"file_name": str(corrupt), "image_id": 43})
    wrong_size = {
        "file_name": _image_file(tmp_path, np.zeros((4, 5, 3), np.uint8)),
        "height": 5,
        "width": 4,
    }
    with pytest.raises(ValueError, match="is 4x5 .* record says 5x4"):
        mapper(wrong_size)
    skipping = DatasetMapper(augmentations=None, is_train=True, skip_unreadable_images=True)
    with caplog.at_level(logging.WARNING):
        assert skipping(missing) is None
    assert "nope.jpg" in caplog.text


def _png_48bit(path: Path, rgb16: np.ndarray) -> None:
    """Write a 16-bit-per-channel RGB PNG (Pillow can read but not write one)."""
    height, width, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, truecolour
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )  # fmt: skip


def test_16bit_and_float_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 255, 256, 4095, 32768, 65535]], dtype=np.uint16)
    expected = np.array([0, 0, 1, 15, 128, 255], dtype=np.uint8)  # the high byte
    gray16 = _image_file(tmp_path, values, "gray16.png")
    assert Image.open(gray16).mode == "I;16"
    image = read_image(gray16)
    assert image.dtype == torch.uint8 and image.shape == (3, 1, 6)
    np.testing.assert_array_equal(image.numpy(), np.broadcast_to(expected, (3, 1, 6)))
    # The same scaling as Pillow's own for 16-bit RGB PNGs.
    _png_48bit(tmp_path / "rgb48.png", np.repeat(values[..., None], 3, axis=2))
    torch.testing.assert_close(read_image(str(tmp_path / "rgb48.png")), image)
    # 32-bit integer ("I") images holding 16-bit values (older Pillow opens 16-bit PNGs so).
    int32 = _image_file(tmp_path, values.astype(np.int32), "int32.tiff")
    assert Image.open(int32).mode == "I"
    torch.testing.assert_close(read_image(int32), image)
    too_wide = _image_file(tmp_path, np.array([[0, 70000]], dtype=np.int32), "wide.tiff")
    with pytest.raises(ValueError, match=r"wide\.tiff.*values in \[0, 70000\].*16-bit"):
        read_image(too_wide)
    # Float images: [0, 1] -> [0, 255] with torchvision's to_dtype (x * 255.999, truncated).
    floats = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    image = read_image(_image_file(tmp_path, floats, "float.tiff"))
    np.testing.assert_array_equal(image[0, 0].numpy(), [0, 63, 127, 255])
    for bad, message in ((2.0, r"values in \[0, 2\]"), (np.nan, "NaN or infinite")):
        path = _image_file(tmp_path, np.array([[0.0, bad]], dtype=np.float32), "bad.tiff")
        with pytest.raises(ValueError, match=rf"bad\.tiff.*{message}"):
            read_image(path)


def test_decompression_bomb_is_a_skippable_error(tmp_path: Path, monkeypatch, caplog) -> None:
    record = {"file_name": _image_file(tmp_path, np.zeros((20, 20, 3), np.uint8)), "image_id": 5}
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 400 pixels > 2 x the limit
    with pytest.raises(ValueError, match=r"img\.png.*image_id=5.*MAX_IMAGE_PIXELS"):
        DatasetMapper(augmentations=None, is_train=True)(record)
    mapper = DatasetMapper(augmentations=None, is_train=True, skip_unreadable_images=True)
    with caplog.at_level(logging.WARNING):
        assert mapper(record) is None
    assert mapper.last_skip_reason == SKIP_UNREADABLE and "img.png" in caplog.text


def test_fifo_directory_and_device_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            read_image(str(fifo), image_id=7)
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():  # blocked in open(): release it before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_image blocked on a FIFO")
    [error] = outcome
    assert isinstance(error, ValueError)
    assert re.search(r"fifo\.jpg.*image_id=7.*FIFO.*not a regular file", str(error))
    with pytest.raises(ValueError, match="is a directory, not a regular file"):
        read_image(str(tmp_path))
    with pytest.raises(ValueError, match="is a device or special file, not a regular file"):
        read_image("/dev/zero")  # would otherwise be read until memory runs out


def test_rle_of_a_custom_record_is_checked_before_decoding(tmp_path: Path) -> None:
    """Records from a user's own loader bypass load_coco_json's checks; the mapper checks RLEs
    again (pycocotools would decode a short one from uninitialised memory)."""
    mask = np.zeros((4, 5), dtype=np.uint8)
    mask[1:3, 2:5] = 1
    runs = [9, 2, 2, 2, 2, 2, 1]  # column-major runs of `mask`, starting with zeros
    record = {
        "file_name": _image_file(tmp_path, np.zeros((4, 5, 3), np.uint8)),
        "image_id": 3,
        "annotations": [
            {"id": 8, "bbox": (2.0, 1.0, 5.0, 3.0), "category_id": 0, "iscrowd": 0,
             "segmentation": {"size": [4, 5], "counts": runs}}
        ],
    }  # fmt: skip
    mapper = DatasetMapper(augmentations=None, is_train=True, use_masks=True)
    reference = mask_util.decode(mask_util.frPyObjects({"size": [4, 5], "counts": runs}, 4, 5))
    np.testing.assert_array_equal(reference, mask)
    np.testing.assert_array_equal(mapper(record)["instances"].gt_masks.tensor[0].numpy(), mask)
    record["annotations"][0]["segmentation"]["counts"] = runs[:-1]  # 19 of 20 pixels
    with pytest.raises(
        ValueError, match=r"img\.png: annotation id=8 has an invalid mask: .*sum to 19"
    ):
        mapper(record)


def test_mask_formats_and_sanitize_refused(shapes_records, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mask_format='bitmask'"):
        DatasetMapper(augmentations=None, is_train=True, use_masks=True, mask_format="polygon")(
            shapes_records[0]
        )
    auto = DatasetMapper(augmentations=None, is_train=True, use_masks=True)  # "auto" by default
    assert type(auto(shapes_records[0])["instances"].gt_masks).__name__ == "BitMasks"
    assert type(auto(_polygon_record(tmp_path))["instances"].gt_masks).__name__ == "PolygonMasks"
    with pytest.raises(ValueError, match="SanitizeBoundingBoxes"):
        DatasetMapper(augmentations=T.Compose([T.SanitizeBoundingBoxes()]), is_train=True)


def test_train_augmentations_recipe(shapes_records) -> None:
    torch.manual_seed(0)
    aug = train_augmentations(short_edge_length=(32, 48), max_size=100, color_jitter=0.2)
    mapper = DatasetMapper(
        augmentations=aug, is_train=True, use_masks=True, mask_format="bitmask",
        use_keypoints=True, keypoint_flip_indices=FLIP,
    )  # fmt: skip
    sizes = {tuple(mapper(r)["image"].shape[1:]) for r in shapes_records for _ in range(2)}
    assert sizes <= {(32, 32), (48, 48)} and len(sizes) == 2
