"""``python -m lazydet.predict``: images in, pictures (and a COCO results json) out.

Usage::

    python -m lazydet.predict conf=EXPERIMENT train.init_checkpoint=WEIGHTS input=IMAGE_OR_DIR output=DIR
    python -m lazydet.predict checkpoint=model_final.pth input=photos/ output=out/ results=out/results.json
    python -m lazydet.predict exported=export/model.pt2 input=photos/ output=out/
    python -m lazydet.predict conf=EXPERIMENT --show-gt output=DIR [max_images=20]   (dataset viewer)

Options (besides config overrides): ``input=`` an image or a folder of images; ``output=`` the
folder for one PNG per image; ``results=`` a COCO results json of every detection;
``score_threshold=`` the least score drawn (default 0.5; the json keeps all); ``batch_size=``;
``device=``; ``checkpoint=`` a lazydet checkpoint to predict with alone (no ``conf=``);
``exported=`` a ``.pt2`` or ``.onnx`` model from ``python -m lazydet.export`` (alone, CPU);
``--show-gt`` draws the ground truth of the config's test dataset (``dataset.test``), or of any
registered dataset with ``show_gt=NAME``, the same way, to check a newly registered dataset.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from lazydet.config import select_resolved
from lazydet.config.command_line import UsageError, command_main, compose_from_command_line

__all__ = ["main", "predict_images"]

logger = logging.getLogger("lazydet.predict")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
OWN_KEYS = (
    "input",
    "output",
    "results",
    "score_threshold",
    "batch_size",
    "device",
    "checkpoint",
    "exported",
    "show_gt",
    "max_images",
)


def parse_arguments(argv: list[str]) -> tuple[dict[str, str], list[str], bool]:
    """``(own options, config overrides, --show-gt)`` from the command line."""
    own: dict[str, str] = {}
    overrides: list[str] = []
    show_gt = False
    for arg in argv:
        if arg in ("--show-gt", "--show_gt"):
            show_gt = True
            continue
        key, sep, value = arg.partition("=")
        if sep and key in OWN_KEYS:
            if key in own:
                raise UsageError(f"{key}= is given twice.")
            own[key] = value
        elif arg.startswith("-"):
            raise UsageError(f"Unknown flag {arg!r}; see python -m lazydet.predict --help.")
        else:
            overrides.append(arg)
    if "show_gt" in own:
        show_gt = True
    return own, overrides, show_gt


def list_images(input_path: str) -> list[Path]:
    path = Path(input_path)
    if not path.exists():
        raise UsageError(f"input={input_path!r} does not exist.")
    if path.is_file():
        return [path]
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise UsageError(
            f"input={input_path!r} is a folder with no image ({', '.join(sorted(IMAGE_SUFFIXES))})."
        )
    return images


def _output_names(paths: list[Path]) -> list[str]:
    """``stem.png``, or ``name.png`` where two inputs share a stem (a.jpg, a.png)."""
    stems = [p.stem for p in paths]
    return [f"{p.stem if stems.count(p.stem) == 1 else p.name}.png" for p in paths]


def predict_images(
    predictor: Any,
    images: list[Path],
    output_dir: Path,
    *,
    results_json: Path | None = None,
    score_threshold: float = 0.5,
    contiguous_to_dataset_id: dict[int, int] | None = None,
) -> list[str]:
    """Draw the predictions of each image into ``output_dir``; return the inputs that failed.

    A bad image is reported and skipped, so one broken file does not cost the others.
    """
    from lazydet.evaluation.coco_eval import write_results_json
    from lazydet.evaluation.coco_evaluator import instances_to_coco_json
    from lazydet.evaluation.pictures import draw_predictions
    from lazydet.evaluation.predictor import to_image_tensor

    output_dir.mkdir(parents=True, exist_ok=True)
    names = _output_names(images)
    failed: list[str] = []
    results: list[dict] = []
    for start in range(0, len(images), predictor.batch_size):
        batch, tensors, outs = [], [], []
        for i in range(start, min(start + predictor.batch_size, len(images))):
            try:
                tensors.append(to_image_tensor(images[i], what=f"image {str(images[i])!r}"))
                batch.append(i)
            except (OSError, ValueError) as e:
                logger.error("skipping %s: %s", images[i], e)
                failed.append(str(images[i]))
        if not batch:
            continue
        outs = predictor.predict(tensors)
        for i, image, instances in zip(batch, tensors, outs):
            picture = draw_predictions(predictor, image, instances, score_threshold)
            picture.save(output_dir / names[i])
            if results_json is not None:
                for result in instances_to_coco_json(
                    instances, i + 1, contiguous_to_dataset_id=contiguous_to_dataset_id
                ):
                    result["file_name"] = str(images[i])
                    results.append(result)
            logger.info("%s: %d detections -> %s", images[i], len(instances), output_dir / names[i])
    if results_json is not None:
        write_results_json(results, results_json)
        logger.info("COCO results (image_id = position in the input list): %s", results_json)
    return failed


def _number(own: dict[str, str], key: str, kind: type, default: Any) -> Any:
    if key not in own:
        return default
    try:
        return kind(own[key])
    except ValueError:
        raise UsageError(f"{key}={own[key]!r} is not a {kind.__name__}.") from None


def run(argv: list[str]) -> int:
    own, overrides, show_gt = parse_arguments(argv)
    if "output" not in own:
        raise UsageError("Give output=DIR (where the pictures go).")
    output_dir = Path(own["output"])
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"output={own['output']!r} is a file; give a folder.")
    cfg = compose_from_command_line(overrides) if overrides else None
    if show_gt:
        name = own.get("show_gt") or (cfg is not None and select_resolved(cfg, "dataset.test"))
        if not name:
            raise UsageError("--show-gt needs conf=EXPERIMENT (its dataset.test) or show_gt=NAME.")
        from lazydet.evaluation.pictures import show_ground_truth

        show_ground_truth(str(name), output_dir, max_images=_number(own, "max_images", int, 20))
        return 0
    if "input" not in own:
        raise UsageError("Give input=IMAGE_OR_DIR.")
    images = list_images(own["input"])
    from lazydet.evaluation.predictor import Predictor

    batch_size = _number(own, "batch_size", int, 4)
    device = own.get("device")
    mapping = None
    if "exported" in own:  # a .pt2 / .onnx from python -m lazydet.export (docs/deploy.md)
        if cfg is not None or "checkpoint" in own:
            raise UsageError("Give exported=MODEL alone (no conf= or checkpoint=).")
        from lazydet.deploy import ExportedPredictor

        predictor = ExportedPredictor(path=own["exported"], batch_size=batch_size)
    elif "checkpoint" in own:
        if cfg is not None:
            raise UsageError(
                "Give either checkpoint=PATH (alone) or conf=... with train.init_checkpoint."
            )
        predictor = Predictor.from_checkpoint(
            own["checkpoint"], device=device, batch_size=batch_size
        )
    elif cfg is not None:
        predictor = Predictor.from_config(cfg, device=device, batch_size=batch_size)
        test = select_resolved(cfg, "dataset.test")
        if isinstance(test, str):
            from lazydet.data import MetadataCatalog

            if test in MetadataCatalog.names():
                found = MetadataCatalog.get(test).get("thing_contiguous_id_to_dataset_id")
                mapping = {int(k): int(v) for k, v in found.items()} if found else None
    else:
        raise UsageError("Give conf=EXPERIMENT train.init_checkpoint=WEIGHTS, or checkpoint=PATH.")
    failed = predict_images(
        predictor,
        images,
        output_dir,
        results_json=Path(own["results"]) if "results" in own else None,
        score_threshold=_number(own, "score_threshold", float, 0.5),
        contiguous_to_dataset_id=mapping,
    )
    if failed:
        print(
            f"lazydet.predict: {len(failed)} image(s) could not be read: {failed}", file=sys.stderr
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    command_main("lazydet.predict", __doc__, run, argv)


if __name__ == "__main__":
    main()
