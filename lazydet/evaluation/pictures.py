"""Pictures of detections: a predictor's output or a dataset's ground truth, drawn to PNG.

Used by ``lazydet.predict`` (one picture per image, ``--show-gt``) and by ``lazydet.train`` (the
run's ``val_predictions.png``). Drawing itself is :func:`lazydet.utils.visualizer.draw_instances`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Drawing",
    "all_hidden_message",
    "draw_predictions",
    "save_prediction_grid",
    "show_ground_truth",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Drawing:
    """One picture of predictions and what it leaves out.

    Attributes:
        picture: the PIL image.
        shown: detections drawn (score at or above the threshold).
        hidden: detections left out because they score under the threshold.
        best_score: the highest score among all the image's detections (None: none, or unscored).
    """

    picture: Any
    shown: int
    hidden: int
    best_score: float | None


def draw_predictions(predictor: Any, image: Any, instances: Any, score_threshold: float) -> Drawing:
    """``draw_instances`` with the class names and keypoint skeleton the predictor carries;
    returns the picture with the number of detections drawn and hidden by ``score_threshold``."""
    from lazydet.utils.visualizer import draw_instances

    picture = draw_instances(
        image,
        instances,
        class_names=predictor.class_names,
        keypoint_names=predictor.keypoint_names,
        skeleton=predictor.keypoint_skeleton,
        score_threshold=score_threshold,
    )
    has = getattr(instances, "has", None)
    scores = instances.get("scores") if has is not None and has("scores") else None
    if scores is None or len(scores) == 0:
        return Drawing(picture, shown=len(instances), hidden=0, best_score=None)
    scores = scores.detach().cpu()
    shown = int((scores >= score_threshold).sum())  # draw_instances' own rule
    return Drawing(picture, shown=shown, hidden=len(scores) - shown, best_score=float(scores.max()))


def lower_threshold(best_score: float) -> float:
    """A round threshold at or below ``best_score`` (0.37 -> 0.3, 0.042 -> 0.04), so that at
    least the best detection is drawn; 0 when the best score is under 0.01."""
    for digits in (1, 2):
        value = math.floor(best_score * 10**digits) / 10**digits
        if value > 0:
            return value
    return 0.0


def all_hidden_message(
    drawings: Iterable[Drawing], score_threshold: float, *, how: str = "score_threshold={value}"
) -> str | None:
    """One line when detections exist but every one scores under ``score_threshold`` (the
    pictures then show none: say so, and how to lower it); None otherwise.

    ``how`` is the command-line form that lowers it, with ``{value}`` for a threshold that draws
    at least the best detection.
    """
    drawings = list(drawings)
    shown = sum(d.shown for d in drawings)
    hidden = sum(d.hidden for d in drawings)
    if shown or not hidden:
        return None
    best = max(d.best_score for d in drawings if d.best_score is not None)
    images = sum(1 for d in drawings if d.hidden)
    return (
        f"all {hidden} detections (on {images} of {len(drawings)} images) score under "
        f"score_threshold={score_threshold:g} (the best: {best:.3f}), so the pictures show none; "
        f"lower it to draw them: {how.format(value=f'{lower_threshold(best):g}')}."
    )


def save_prediction_grid(
    predictor: Any,
    images: list[Path],
    output_path: Path,
    *,
    score_threshold: float = 0.5,
    columns: int = 4,
) -> Path:
    """Draw the predictions of ``images`` and tile them into one PNG at ``output_path``.

    Each tile is drawn by :func:`lazydet.utils.visualizer.draw_instances` and scaled to the size
    of the first; the grid has ``columns`` tiles a row. Written atomically (temp file, rename).
    When every detection scores under ``score_threshold`` (an empty-looking picture), a warning
    says so and how to draw them with ``lazydet.predict``.
    """
    from PIL import Image

    from .predictor import to_image_tensor

    if not images:
        raise ValueError("save_prediction_grid: no images to draw.")
    tensors = [to_image_tensor(p, what=f"image {str(p)!r}") for p in images]
    drawings = [
        draw_predictions(predictor, image, instances, score_threshold)
        for image, instances in zip(tensors, predictor.predict(tensors))
    ]
    tiles = [d.picture for d in drawings]
    tile_w, tile_h = tiles[0].size
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    grid = Image.new("RGB", (columns * tile_w, rows * tile_h), "white")
    for i, tile in enumerate(tiles):
        grid.paste(tile.resize((tile_w, tile_h)), ((i % columns) * tile_w, (i // columns) * tile_h))
    output_path = Path(output_path)
    partial = output_path.with_name(f".{output_path.name}.partial")
    grid.save(partial, format="PNG")
    partial.replace(output_path)
    note = all_hidden_message(
        drawings,
        score_threshold,
        how=(
            f"python -m lazydet.predict checkpoint={output_path.parent / 'model_final.pth'} "
            "input=IMAGES output=DIR score_threshold={value}"
        ),
    )
    if note:
        logger.warning("%s: %s", output_path.name, note)
    return output_path


def show_ground_truth(dataset_name: str, output_dir: Path, *, max_images: int = 20) -> int:
    """Draw the first ``max_images`` images of a registered dataset with their annotations."""
    from lazydet.data import DatasetCatalog, MetadataCatalog, read_image
    from lazydet.utils.visualizer import (
        draw_instances,
        instances_from_record,
        skeleton_from_metadata,
    )

    records = DatasetCatalog.get(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    output_dir.mkdir(parents=True, exist_ok=True)
    for record in records[:max_images]:
        image = read_image(record["file_name"], image_id=record.get("image_id"))
        instances = instances_from_record(record, tuple(image.shape[1:]))
        picture = draw_instances(
            image,
            instances,
            class_names=metadata.get("thing_classes"),
            keypoint_names=metadata.get("keypoint_names"),
            skeleton=skeleton_from_metadata(metadata),
        )
        picture.save(output_dir / f"{Path(record['file_name']).stem}_gt.png")
    logger.info(
        "%d ground-truth pictures of %s in %s",
        min(max_images, len(records)),
        dataset_name,
        output_dir,
    )
    return min(max_images, len(records))
