"""Generated COCO ground truth and detections, for parity tests and ``scripts/bench_eval.py``.

``synthetic_coco(num_images=5000)`` returns a COCO dataset dict (about 7 instances per image in 80
categories, polygon masks, a few crowd regions as RLE, 17 keypoints on persons) and 100
detections per image (RLE masks; person detections carry keypoints). Detections are a mix a real
detector produces: jittered copies of ground-truth instances (mostly the right class), duplicates,
and background boxes, with random scores, so every branch of COCO matching is exercised.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

PERSON_KEYPOINTS = [
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
]
# COCO's person skeleton, 1-based keypoint indices as in person_keypoints_*.json.
PERSON_SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
    [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]  # fmt: skip


def _polygon(rng: np.random.Generator, x: float, y: float, w: float, h: float) -> list[float]:
    """A star-shaped polygon inscribed in the box, ``[x0, y0, x1, y1, ...]``."""
    n = int(rng.integers(6, 16))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = rng.uniform(0.6, 1.0, n)
    px = x + w / 2 + np.cos(angles) * radius * w / 2
    py = y + h / 2 + np.sin(angles) * radius * h / 2
    return np.stack([px, py], axis=1).round(2).ravel().tolist()


def _keypoints(rng: np.random.Generator, x: float, y: float, w: float, h: float) -> np.ndarray:
    """17 ``(x, y, v)`` in the box; v in {0, 1, 2}, invisible ones at (0, 0) as in COCO."""
    kp = np.zeros((17, 3))
    kp[:, 0] = np.floor(x + rng.uniform(0, 1, 17) * w)
    kp[:, 1] = np.floor(y + rng.uniform(0, 1, 17) * h)
    kp[:, 2] = rng.choice([0, 1, 2], size=17, p=[0.3, 0.2, 0.5])
    kp[kp[:, 2] == 0, :2] = 0
    return kp


def synthetic_coco(
    num_images: int = 5000,
    *,
    objects_per_image: float = 7.0,
    detections_per_image: int = 100,
    num_categories: int = 80,
    seed: int = 0,
) -> tuple[dict, list[dict]]:
    """``(ground truth dataset dict, detections list)`` in COCO json format.

    Category 1 is "person" with COCO's 17 keypoints and skeleton; ~30% of instances are persons.
    Ground truth masks are polygons (crowd regions: uncompressed RLE, as in COCO); detection
    masks are compressed RLE with ``counts`` as text. Person detections carry keypoints.
    """
    rng = np.random.default_rng(seed)
    categories = [
        {"id": 1, "name": "person", "supercategory": "person", "keypoints": PERSON_KEYPOINTS}
        | {"skeleton": PERSON_SKELETON}
    ] + [
        {"id": c, "name": f"class_{c}", "supercategory": "thing"}
        for c in range(2, num_categories + 1)
    ]
    images, annotations, detections = [], [], []
    for image_id in range(1, num_images + 1):
        width, height = int(rng.integers(320, 641)), int(rng.integers(240, 481))
        images.append(
            {"id": image_id, "width": width, "height": height, "file_name": f"{image_id:06d}.jpg"}
        )
        n = max(1, int(rng.poisson(objects_per_image)))
        gts = []
        for _ in range(n):
            # Log-uniform sizes: small, medium and large COCO areas all occur.
            w = float(np.exp(rng.uniform(np.log(6), np.log(width * 0.9))))
            h = float(np.exp(rng.uniform(np.log(6), np.log(height * 0.9))))
            x, y = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
            category = 1 if rng.random() < 0.3 else int(rng.integers(2, num_categories + 1))
            crowd = rng.random() < 0.02
            poly = _polygon(rng, x, y, w, h)
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], height, width))
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category,
                "bbox": [round(v, 2) for v in mask_utils.toBbox(rle).tolist()],
                "area": float(mask_utils.area(rle)),
                "iscrowd": int(crowd),
            }
            if crowd:
                # COCO stores crowd regions as uncompressed RLE (counts as a list of ints).
                binary = mask_utils.decode(rle)
                flat = binary.ravel(order="F")
                change = np.flatnonzero(np.diff(flat)) + 1
                runs = np.diff(np.concatenate([[0], change, [flat.size]]))
                counts = ([0] if flat[0] else []) + runs.tolist()
                ann["segmentation"] = {"size": [height, width], "counts": counts}
            else:
                ann["segmentation"] = [poly]
            kp = None
            if category == 1:
                kp = _keypoints(rng, x, y, w, h)
                ann["keypoints"] = kp.astype(int).ravel().tolist()
                ann["num_keypoints"] = int((kp[:, 2] > 0).sum())
            annotations.append(ann)
            bx, by, bw, bh = ann["bbox"]  # detections jitter the tight box of the mask
            gts.append((bx, by, max(bw, 1.0), max(bh, 1.0), category, kp, poly))
        detections += _detections(
            rng, image_id, width, height, gts, detections_per_image, num_categories
        )
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, detections


def _detections(rng, image_id, width, height, gts, count, num_categories) -> list[dict]:
    boxes = []
    shapes = []
    for x, y, w, h, category, kp, poly in gts:
        for _ in range(int(rng.integers(1, 4))):  # true positives and duplicates
            jitter = rng.normal(0, 0.05, 4) * [w, h, w, h]
            dw, dh = max(2.0, w + jitter[2]), max(2.0, h + jitter[3])
            cat = category if rng.random() < 0.85 else int(rng.integers(1, num_categories + 1))
            det_kp = None
            if kp is not None:  # the ground truth's keypoints, a few pixels off
                det_kp = kp.copy()
                det_kp[:, :2] += rng.normal(0, 0.05 * np.sqrt(w * h) + 1, (17, 2))
            boxes.append((x + jitter[0], y + jitter[1], dw, dh, cat, det_kp))
            # The ground truth's polygon, moved and scaled like the box.
            p = np.asarray(poly).reshape(-1, 2)
            p = (p - [x, y]) * [dw / w, dh / h] + [x + jitter[0], y + jitter[1]]
            shapes.append(p.round(2).ravel().tolist())
    while len(boxes) < count:  # background detections
        w = float(np.exp(rng.uniform(np.log(4), np.log(width * 0.8))))
        h = float(np.exp(rng.uniform(np.log(4), np.log(height * 0.8))))
        cat = 1 if rng.random() < 0.3 else int(rng.integers(2, num_categories + 1))
        boxes.append((rng.uniform(0, width - w), rng.uniform(0, height - h), w, h, cat, None))
    boxes = boxes[:count]
    polys = (shapes + [_polygon(rng, *b[:4]) for b in boxes[len(shapes) :]])[:count]
    rles = mask_utils.frPyObjects(polys, height, width)
    # Matches score higher than background on average, with overlap, as a trained detector.
    scores = np.concatenate(
        [rng.uniform(0.2, 1.0, len(shapes)), rng.uniform(0.01, 0.7, len(boxes) - len(shapes))]
    )[: len(boxes)].round(4)
    out = []
    for (x, y, w, h, cat, kp), rle, score in zip(boxes, rles, scores):
        x0, y0 = max(0.0, x), max(0.0, y)
        det = {
            "image_id": image_id,
            "category_id": cat,
            "bbox": [
                round(x0, 2),
                round(y0, 2),
                round(min(w, width - x0), 2),
                round(min(h, height - y0), 2),
            ],
            "score": float(score),
            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
        }
        if cat == 1:
            kp = _keypoints(rng, x0, y0, w, h) if kp is None else kp
            kp[:, 2] = 1  # detectors predict every keypoint; v is ignored for detections
            det["keypoints"] = kp.round(2).ravel().tolist()
        out.append(det)
    return out


def keypoints_subset(gt: dict, detections: list[dict]) -> tuple[dict, list[dict]]:
    """The person category only, as in COCO's person_keypoints files (keypoint evaluation)."""
    return (
        {
            "images": gt["images"],
            "annotations": [a for a in gt["annotations"] if "keypoints" in a],
            "categories": [c for c in gt["categories"] if c.get("keypoints")],
        },
        [d for d in detections if "keypoints" in d],
    )
