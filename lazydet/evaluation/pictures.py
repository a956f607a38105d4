"""Pictures of detections: a predictor's output or a dataset's ground truth, drawn to PNG.

Used by ``lazydet.predict`` (one picture per image, ``--show-gt``) and by ``lazydet.train`` (the
run's ``val_predictions.png``). Drawing itself is :func:`lazydet.utils.visualizer.draw_instances`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["draw_predictions", "save_prediction_grid", "show_ground_truth"]

logger = logging.getLogger(__name__)


def draw_predictions(predictor: Any, image: Any, instances: Any, score_threshold: float) -> Any:
    """``draw_instances`` with the class names and keypoint skeleton the predictor carries."""
    from lazydet.utils.visualizer import draw_instances

    return draw_instances(
        image,
        instances,
        class_names=predictor.class_names,
        keypoint_names=predictor.keypoint_names,
        skeleton=predictor.keypoint_skeleton,
        score_threshold=score_threshold,
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
    """
    from PIL import Image

    from .predictor import to_image_tensor

    if not images:
        raise ValueError("save_prediction_grid: no images to draw.")
    tensors = [to_image_tensor(p, what=f"image {str(p)!r}") for p in images]
    tiles = [
        draw_predictions(predictor, image, instances, score_threshold)
        for image, instances in zip(tensors, predictor.predict(tensors))
    ]
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
