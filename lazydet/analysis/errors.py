"""Where a detector goes wrong: PR curves, the COCO error breakdown, a confusion matrix, the
worst images. Input: a COCO ground truth and a COCO results file (what ``lazydet.evaluate``
writes as ``coco_instances_results.json``); boxes (``bbox``) only.

- **PR curves** per class at IoU 0.5 and 0.75: ``lazydet.evaluation.coco_evaluate``'s
  ``precision`` array (``[T, R, K, A, M]``), area "all", 100 detections per image.
- **Error breakdown** (the COCO analysis tool's, after Hoiem et al.; ``CocoEval.analyze`` of the
  COCO API): precision-recall of each class re-evaluated under looser and looser conditions, each
  curve above the last: C75 and C50 (IoU 0.75 / 0.5), Loc (IoU 0.1: localisation errors
  forgiven), Sim (also forgiven: a detection on an object of another class of the same
  supercategory), Oth (also: any other class), BG (also every remaining false positive: precision
  1 wherever Oth recalls anything) and FN (precision 1 up to recall 1: what no detection finds).
  lazydet's evaluator has no "ignore this ground truth" switch, so these re-evaluations run
  pycocotools' ``COCOeval`` directly, with the other classes' objects copied into each class as
  ignored ground truth (a detection matching one is neither a true nor a false positive).
  The same matchings give counts: each ground-truth object in the first bucket where some
  detection finds it (C75, C50, Loc, Sim, Oth, else FN), each detection in the first where it
  finds something (C75 ... Oth, else BG; detections on crowd regions apart as "crowd").
- **Confusion matrix** at IoU >= 0.5 among detections scoring >= ``score_threshold``: per image,
  detections by descending score each take the unmatched object of highest IoU (any class); rows
  are the objects' classes plus "background" (detections that found nothing), columns the
  detections' classes plus "background" (objects nothing found). Detections on crowd regions
  (intersection over the detection's area >= 0.5) are left out, as COCO does.
- **Worst images**: the images with the most missed objects plus false positives of that
  matching, ground truth and predictions side by side.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BREAKDOWN",
    "ErrorAnalysis",
    "analyze_errors",
    "confusion_matrix",
    "plot_breakdown",
    "plot_confusion_matrix",
    "plot_pr_curves",
    "plot_worst_images",
]

BREAKDOWN = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
MAX_DETS = 100


@dataclass
class ErrorAnalysis:
    """The numbers behind the pictures.

    Attributes:
        category_ids / category_names: the classes, in the ground truth's order (K).
        recall: the 101 recall thresholds (R) of every curve.
        precision: ``[T=2, R, K]`` precision at IoU 0.5 (index 0) and 0.75 (1); -1 where a
            class has no ground truth.
        breakdown: ``[7, R, K]`` precision of each ``BREAKDOWN`` stage (-1: no ground truth).
        gt_buckets: ``BREAKDOWN`` stage (less BG) -> ground-truth objects first found there.
        det_buckets: stage (less FN, plus "crowd") -> detections first matching there.
        confusion: ``[K + 1, K + 1]`` counts, rows ground truth, columns detections, last
            index "background".
        per_image: ``image_id -> (missed objects, false positives)`` of the confusion matching.
    """

    category_ids: list[int]
    category_names: list[str]
    recall: np.ndarray
    precision: np.ndarray
    breakdown: np.ndarray
    gt_buckets: dict[str, int]
    det_buckets: dict[str, int]
    confusion: np.ndarray
    per_image: dict[Any, tuple[int, int]]
    score_threshold: float

    def average_precision(self, curves: np.ndarray) -> np.ndarray:
        """Area under ``[..., R, K]`` curves, averaged over the classes that have ground truth."""
        valid = curves[..., 0, :] > -1 if curves.ndim > 2 else curves[0] > -1
        ap = np.where(curves > -1, curves, 0).mean(axis=-2)  # [..., K]
        return (ap * valid).sum(axis=-1) / max(int(valid.sum(axis=-1).max()), 1)


def _load(gt_json: Any, results_json: Any) -> tuple[dict, list[dict]]:
    from lazydet.evaluation.coco_input import check_input, load_ground_truth, load_results

    gt = load_ground_truth(gt_json)
    results = load_results(results_json)
    if not gt["annotations"]:
        raise ValueError("The ground truth has no annotations: nothing to analyse.")
    # The evaluator's own input check: one clear error naming a bad entry, before any work.
    check_input(gt, results, "bbox")
    return gt, results


def _coco_eval(gt: Mapping, results: list[dict], iou_thrs: Sequence[float], copies_into):
    """pycocotools' COCOeval (area "all", 100 detections) with each object also copied, as
    ignored ground truth, into the classes ``copies_into(category_id)`` names. Returns the
    evaluator and ``{copy annotation id: original id}``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    class _IgnoringCOCOeval(COCOeval):
        def _prepare(self) -> None:
            super()._prepare()  # sets ignore = iscrowd; the copies must stay ignored
            for objects in self._gts.values():
                for obj in objects:
                    if obj.get("_copy_of") is not None:
                        obj["ignore"] = 1

    annotations = [dict(a) for a in gt["annotations"]]
    copy_of: dict[int, int] = {}
    if copies_into is not None:
        next_id = max(int(a["id"]) for a in annotations) + 1
        for ann in list(annotations):
            for cat in copies_into(ann["category_id"]):
                copy_of[next_id] = ann["id"]
                annotations.append(
                    {**ann, "id": next_id, "category_id": cat, "_copy_of": ann["id"]}
                )
                next_id += 1
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = {**gt, "annotations": annotations}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(d) for d in results]) if results else None
        if coco_dt is None:
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": gt["images"],
                "categories": gt["categories"],
                "annotations": [],
            }
            coco_dt.createIndex()
        evaluator = _IgnoringCOCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.iouThrs = np.array(iou_thrs, dtype=np.float64)
        evaluator.params.maxDets = [MAX_DETS]
        evaluator.params.areaRng = [[0.0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator, copy_of


def _matched(evaluator, t: int, copy_of: Mapping[int, int]) -> tuple[set, set, set]:
    """(original object ids found, detection ids that matched anything, detection ids ignored)
    at IoU threshold index ``t``."""
    found, matching, ignored = set(), set(), set()
    for e in evaluator.evalImgs:
        if e is None:
            continue
        for gid, m in zip(e["gtIds"], e["gtMatches"][t]):
            if m > 0:
                found.add(copy_of.get(gid, gid))
        for did, m, ign in zip(e["dtIds"], e["dtMatches"][t], e["dtIgnore"][t]):
            if m > 0:
                matching.add(did)
            if ign and not any(
                copy_of.get(g) is not None for g in [m] if m > 0
            ):  # ignored by a crowd region (a match to a copy is not "crowd")
                ignored.add(did)
    return found, matching, ignored


def _xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def _overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and intersection over ``a``'s area, ``[len(a), len(b)]``, of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)[:, None]
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)[None, :]
    union = area_a + area_b - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    ioa = np.divide(inter, area_a, out=np.zeros_like(inter), where=area_a > 0)
    return iou, ioa


def match_image(
    objects: Sequence[Mapping], detections: Sequence[Mapping], *, iou_threshold: float = 0.5
) -> tuple[list[tuple[int, int]], list[int], list[int], list[int]]:
    """Greedy one-to-one matching of one image, classes ignored.

    ``detections`` must be sorted by descending score. Returns ``(pairs (object index,
    detection index), unmatched object indices (non-crowd), unmatched detection indices,
    detection indices on crowd regions)``.
    """
    regular = [i for i, o in enumerate(objects) if not o.get("iscrowd", 0)]
    crowd = [i for i, o in enumerate(objects) if o.get("iscrowd", 0)]
    det_boxes = _xyxy([d["bbox"] for d in detections]) if detections else np.zeros((0, 4))
    iou, _ = _overlaps(
        det_boxes, _xyxy([objects[i]["bbox"] for i in regular]) if regular else np.zeros((0, 4))
    )
    _, ioa = _overlaps(
        det_boxes, _xyxy([objects[i]["bbox"] for i in crowd]) if crowd else np.zeros((0, 4))
    )
    taken = np.zeros(len(regular), dtype=bool)
    pairs, lone, on_crowd = [], [], []
    for d in range(len(detections)):
        candidates = (
            np.where(~taken & (iou[d] >= iou_threshold), iou[d], -1.0) if regular else np.zeros(0)
        )
        if candidates.size and candidates.max() >= 0:
            j = int(candidates.argmax())
            taken[j] = True
            pairs.append((regular[j], d))
        elif ioa.shape[1] and ioa[d].max() >= iou_threshold:
            on_crowd.append(d)
        else:
            lone.append(d)
    missed = [regular[j] for j in np.flatnonzero(~taken)]
    return pairs, missed, lone, on_crowd


def confusion_matrix(
    gt: Mapping,
    results: Sequence[Mapping],
    *,
    score_threshold: float = 0.3,
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, dict[Any, tuple[int, int]], int]:
    """``(matrix [K+1, K+1], {image_id: (missed, false positives)}, detections on crowds)``.

    Rows: ground-truth class (K = background: detections that found nothing); columns: detected
    class (K = background: objects nothing found). Class order: ``gt["categories"]``.
    """
    index = {c["id"]: k for k, c in enumerate(gt["categories"])}
    num = len(index)
    matrix = np.zeros((num + 1, num + 1), dtype=np.int64)
    objects_by_image: dict[Any, list] = {img["id"]: [] for img in gt["images"]}
    for ann in gt["annotations"]:
        objects_by_image.setdefault(ann["image_id"], []).append(ann)
    dets_by_image: dict[Any, list] = {}
    for det in results:
        if det["score"] >= score_threshold:
            dets_by_image.setdefault(det["image_id"], []).append(det)
    per_image, crowd_total = {}, 0
    for image_id, objects in objects_by_image.items():
        dets = sorted(dets_by_image.get(image_id, []), key=lambda d: -d["score"])
        pairs, missed, lone, on_crowd = match_image(objects, dets, iou_threshold=iou_threshold)
        for o, d in pairs:
            matrix[index[objects[o]["category_id"]], index[dets[d]["category_id"]]] += 1
        for o in missed:
            matrix[index[objects[o]["category_id"]], num] += 1
        for d in lone:
            matrix[num, index[dets[d]["category_id"]]] += 1
        wrong_class = sum(objects[o]["category_id"] != dets[d]["category_id"] for o, d in pairs)
        per_image[image_id] = (len(missed) + wrong_class, len(lone) + wrong_class)
        crowd_total += len(on_crowd)
    return matrix, per_image, crowd_total


def analyze_errors(
    gt_json: str | os.PathLike | Mapping,
    results_json: str | os.PathLike | Sequence[Mapping],
    *,
    score_threshold: float = 0.3,
) -> ErrorAnalysis:
    """Compute everything the pictures show (see the module's doc)."""
    from lazydet.evaluation import coco_evaluate

    gt, results = _load(gt_json, results_json)
    categories = gt["categories"]
    cat_ids = [c["id"] for c in categories]
    supercategory = {c["id"]: c.get("supercategory", c["name"]) for c in categories}

    from tqdm import tqdm

    # Four evaluations (seconds each on a COCO-sized set): a bar says how far along it is.
    progress = tqdm(total=4, desc="error analysis", unit="evaluation", leave=False)
    reference = coco_evaluate(gt, results, "bbox", verbose=False)
    # [T, R, K, A, M]: IoU .5 is T=0, .75 is T=5; area "all"; the last maxDets (100).
    precision = reference.precision[[0, 5], :, :, 0, -1]
    progress.update()

    plain, _ = _coco_eval(gt, results, [0.75, 0.5, 0.1], None)
    progress.update()
    similar, sim_copies = _coco_eval(
        gt,
        results,
        [0.1],
        lambda c: [o for o in cat_ids if o != c and supercategory[o] == supercategory[c]],
    )
    progress.update()
    other, oth_copies = _coco_eval(gt, results, [0.1], lambda c: [o for o in cat_ids if o != c])
    progress.update()
    progress.close()

    def curves(evaluator, t):
        return evaluator.eval["precision"][t, :, :, 0, 0]

    stages = [
        curves(plain, 0),
        curves(plain, 1),
        curves(plain, 2),
        curves(similar, 0),
        curves(other, 0),
    ]
    has_gt = stages[0] > -1
    stages.append(np.where(has_gt, (stages[4] > 0).astype(np.float64), -1.0))
    stages.append(np.where(has_gt, 1.0, -1.0))
    breakdown = np.stack(stages)

    steps = [_matched(plain, t, {}) for t in range(3)]
    steps += [_matched(similar, 0, sim_copies), _matched(other, 0, oth_copies)]
    regular_objects = [a["id"] for a in gt["annotations"] if not a.get("iscrowd", 0)]
    gt_buckets = dict.fromkeys(BREAKDOWN[:5], 0) | {"FN": 0}
    for obj in regular_objects:
        stage = next((BREAKDOWN[s] for s in range(5) if obj in steps[s][0]), "FN")
        gt_buckets[stage] += 1
    crowd_dets = steps[0][2]
    evaluated = {d for e in plain.evalImgs if e is not None for d in e["dtIds"]}
    det_buckets = dict.fromkeys(BREAKDOWN[:5], 0) | {"BG": 0, "crowd": 0}
    for det in evaluated:
        if det in crowd_dets:
            det_buckets["crowd"] += 1
            continue
        stage = next((BREAKDOWN[s] for s in range(5) if det in steps[s][1]), "BG")
        det_buckets[stage] += 1

    matrix, per_image, _ = confusion_matrix(gt, results, score_threshold=score_threshold)
    return ErrorAnalysis(
        category_ids=cat_ids,
        category_names=[str(c.get("name", c["id"])) for c in categories],
        recall=np.asarray(plain.params.recThrs),
        precision=precision,
        breakdown=breakdown,
        gt_buckets=gt_buckets,
        det_buckets=det_buckets,
        confusion=matrix,
        per_image=per_image,
        score_threshold=score_threshold,
    )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, output: str | os.PathLike) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    _pyplot().close(fig)
    return output


def _ap(curve: np.ndarray) -> float:
    return float(curve.mean()) if curve[0] > -1 else float("nan")


def plot_pr_curves(analysis: ErrorAnalysis, output: str | os.PathLike, *, columns: int = 8) -> Path:
    """One panel per class with ground truth: precision-recall at IoU 0.5 and 0.75, AP in the legend."""
    plt = _pyplot()
    shown = [k for k in range(len(analysis.category_ids)) if analysis.precision[0, 0, k] > -1]
    rows = math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.0 * columns, 1.9 * rows), squeeze=False, dpi=48
    )
    for ax, k in zip(axes.flat, shown):
        for t, (iou, color) in enumerate(((0.5, "tab:blue"), (0.75, "tab:orange"))):
            curve = analysis.precision[t, :, k]
            ax.plot(analysis.recall, curve, color=color, label=f"{iou}: {_ap(curve):.2f}")
        ax.set_title(analysis.category_names[k], fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6, loc="lower left", title="IoU: AP", title_fontsize=6)
    for ax in axes.flat[len(shown) :]:
        ax.axis("off")
    fig.suptitle(
        "precision (y) against recall (x) per class, 100 detections per image", fontsize=10
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, output)


def plot_breakdown(analysis: ErrorAnalysis, output: str | os.PathLike) -> Path:
    """The stacked PR plot of the error breakdown, averaged over the classes with ground truth."""
    plt = _pyplot()
    valid = analysis.breakdown[0, 0] > -1
    mean = analysis.breakdown[:, :, valid].mean(axis=2)  # [7, R]
    colors = ["#ffffff", "#3b75af", "#519e3e", "#c6dbef", "#ef8636", "#c53a32", "#8d69b8"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=80)
    previous = np.zeros_like(analysis.recall)
    for s, name in enumerate(BREAKDOWN):
        ax.fill_between(
            analysis.recall,
            previous,
            mean[s],
            color=colors[s],
            edgecolor="black" if s == 0 else None,
            linewidth=0.5,
            label=f"[{mean[s].mean():.3f}] {name}",
        )
        ax.plot(analysis.recall, mean[s], color="black", linewidth=0.5)
        previous = mean[s]
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("COCO error breakdown (all classes, area all, 100 det.)", fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="[AP] stage")
    fig.tight_layout()
    return _save(fig, output)


def plot_confusion_matrix(
    analysis: ErrorAnalysis, output: str | os.PathLike, *, all_classes: bool = False
) -> Path:
    """The confusion matrix, rows normalised (colour) with the counts written where it fits.

    Classes with neither objects nor detections are left out unless ``all_classes``.
    """
    plt = _pyplot()
    matrix = analysis.confusion
    names = [*analysis.category_names, "background"]
    keep = np.arange(len(names))
    if not all_classes:
        used = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
        used[-1] = True
        keep = np.flatnonzero(used)
    shown = matrix[np.ix_(keep, keep)]
    rows = shown.sum(axis=1, keepdims=True)
    normalised = np.divide(shown, rows, out=np.zeros(shown.shape), where=rows > 0)
    size = max(4.0, 0.22 * len(keep) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=70)
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    labels = [names[i] for i in keep]
    ax.set_xticks(range(len(keep)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(keep)), labels, fontsize=6)
    ax.set_xlabel("detected class")
    ax.set_ylabel("ground-truth class")
    if len(keep) <= 25:
        for i in range(len(keep)):
            for j in range(len(keep)):
                if shown[i, j]:
                    ax.text(j, i, str(shown[i, j]), ha="center", va="center", fontsize=6)
    ax.set_title(
        f"confusion at IoU >= 0.5, score >= {analysis.score_threshold} (colour: share of the row)",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, output)


def plot_worst_images(
    analysis: ErrorAnalysis,
    gt_json: str | os.PathLike | Mapping,
    results_json: str | os.PathLike | Sequence[Mapping],
    output: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    count: int = 6,
    height: int = 240,
) -> tuple[Path, list[Any]]:
    """A page of the ``count`` images with the most (missed + false-positive) of the matching:
    ground truth left (green; missed red), predictions right (green found an object of its class,
    orange found another class, red found nothing). Without ``image_root`` the boxes are drawn on
    grey canvases of each image's size. Returns the PNG and the image ids shown, worst first."""
    import torch
    from PIL import Image, ImageDraw
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.functional import resize
    from torchvision.utils import draw_bounding_boxes

    gt, results = _load(gt_json, results_json)
    images = {img["id"]: img for img in gt["images"]}
    names = {c["id"]: str(c.get("name", c["id"])) for c in gt["categories"]}
    ranked = sorted(analysis.per_image.items(), key=lambda kv: (-sum(kv[1]), str(kv[0])))
    worst = [image_id for image_id, errors in ranked[:count] if sum(errors) > 0]
    panels = []
    for image_id in worst:
        info = images[image_id]
        if image_root is not None:
            path = Path(image_root) / info["file_name"]
            if not path.is_file():
                raise ValueError(f"image {image_id}: {path} does not exist (check image_root=).")
            canvas = decode_image(str(path), mode=ImageReadMode.RGB)
        else:
            canvas = torch.full(
                (3, int(info["height"]), int(info["width"])), 200, dtype=torch.uint8
            )
        objects = [a for a in gt["annotations"] if a["image_id"] == image_id]
        dets = sorted(
            (
                d
                for d in results
                if d["image_id"] == image_id and d["score"] >= analysis.score_threshold
            ),
            key=lambda d: -d["score"],
        )
        pairs, missed, _, _ = match_image(objects, dets)
        found_by = {d: o for o, d in pairs}
        sides = []
        for boxes, labels, colors in (
            (
                [o["bbox"] for o in objects],
                [names.get(o["category_id"], str(o["category_id"])) for o in objects],
                ["red" if i in missed else "lime" for i in range(len(objects))],
            ),
            (
                [d["bbox"] for d in dets],
                [f"{names.get(d['category_id'], d['category_id'])} {d['score']:.2f}" for d in dets],
                [
                    "red"
                    if i not in found_by
                    else (
                        "lime"
                        if objects[found_by[i]]["category_id"] == d["category_id"]
                        else "orange"
                    )
                    for i, d in enumerate(dets)
                ],
            ),
        ):
            scale = height / canvas.shape[1]
            small = resize(canvas, [height, max(1, round(canvas.shape[2] * scale))], antialias=True)
            if boxes:
                xyxy = torch.tensor(_xyxy(boxes) * scale, dtype=torch.float32)
                small = draw_bounding_boxes(small, xyxy, labels=labels, colors=colors, width=2)
            sides.append(Image.fromarray(small.permute(1, 2, 0).numpy()))
        missed_n, fp_n = analysis.per_image[image_id]
        row = Image.new("RGB", (sides[0].width + sides[1].width + 8, height + 16), "white")
        row.paste(sides[0], (0, 16))
        row.paste(sides[1], (sides[0].width + 8, 16))
        ImageDraw.Draw(row).text(
            (2, 2), f"image {image_id}: {missed_n} missed, {fp_n} false positive(s)", fill="black"
        )
        panels.append(row)
    if not panels:
        raise ValueError("No image has a missed object or a false positive: nothing to show.")
    page = Image.new(
        "RGB", (max(p.width for p in panels), sum(p.height + 6 for p in panels)), "white"
    )
    y = 0
    for panel in panels:
        page.paste(panel, (0, y))
        y += panel.height + 6
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    page.save(output, optimize=True)
    return output, worst
