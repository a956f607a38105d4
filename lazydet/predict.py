"""``python -m lazydet.predict``: images or a video in, pictures or an annotated video (and a
COCO results json) out.

Usage::

    python -m lazydet.predict conf=EXPERIMENT train.init_checkpoint=WEIGHTS input=IMAGE_OR_DIR output=DIR
    python -m lazydet.predict checkpoint=model_final.pth input=photos/ output=out/ results=out/results.json
    python -m lazydet.predict checkpoint=model_final.pth input=clip.mp4 output=out/ [results=r.json]
    python -m lazydet.predict checkpoint=model_final.pth input=webcam:0 output=out/   (a window)
    python -m lazydet.predict exported=export/model.pt2 input=photos/ output=out/
    python -m lazydet.predict conf=EXPERIMENT --show-gt output=DIR [max_images=20]   (dataset viewer)

Options (besides config overrides): ``input=`` an image or a folder of images; ``output=`` the
folder for one PNG per image; ``results=`` a COCO results json of every detection;
``score_threshold=`` the least score drawn (default 0.5; the json keeps all); ``batch_size=``;
``device=``; ``checkpoint=`` a lazydet checkpoint to predict with alone (no ``conf=``);
``exported=`` a ``.pt2`` or ``.onnx`` model from ``python -m lazydet.export`` (alone, CPU);
``--show-gt`` draws the ground truth of the config's test dataset (``dataset.test``), or of any
registered dataset with ``show_gt=NAME``, the same way, to check a newly registered dataset.

A video ``input=`` (.mp4 .avi .mov .mkv .webm) gives ``OUTPUT/<stem>_predictions.mp4``, drawn
the same way, with the input's frame count, size and rate (``results=``: image_id = frame index
+ 1); ``input=webcam:N`` shows camera N's frames with predictions in a window until it is closed
and records them to ``OUTPUT/webcamN_predictions.mp4``. Both need PyAV
(``pip install "lazydet[video]"``); see ``lazydet.evaluation.video``.

Nothing is written over an input: an ``output=`` that is ``input=`` or inside it, or a picture
or ``results=`` file that would replace an input file, is refused (exit 2) before anything is
written. Options are checked first too (``score_threshold`` a number in [0, 1],
``max_images`` / ``batch_size`` positive integers, ``input=`` an image file or a folder,
``show_gt=`` a registered dataset). An image that cannot be read, resized or predicted is
named and skipped; the others are drawn, the results json is still written, and the command
exits 1 at the end.
"""

from __future__ import annotations

import logging
import stat
import sys
from pathlib import Path
from typing import Any

from lazydet.config import select_resolved
from lazydet.config.command_line import (
    UsageError,
    command_main,
    compose_from_command_line,
    own_number,
    split_own_options,
)

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
    show_flags = ("--show-gt", "--show_gt")
    show_gt = any(arg in show_flags for arg in argv)
    own, overrides = split_own_options(
        [arg for arg in argv if arg not in show_flags],
        OWN_KEYS,
        unknown=lambda arg: f"Unknown flag {arg!r}; see python -m lazydet.predict --help.",
    )
    if "show_gt" in own:
        show_gt = True
    return own, overrides, show_gt


def list_images(input_path: str) -> list[Path]:
    path = Path(input_path)
    if not path.exists():
        raise UsageError(f"input={input_path!r} does not exist.")
    mode = path.stat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UsageError(
            f"input={input_path!r} is not a regular file or a folder (a pipe, socket or "
            "device); give an image file or a folder of images."
        )
    if path.is_file():
        return [path]
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise UsageError(
            f"input={input_path!r} is a folder with no image ({', '.join(sorted(IMAGE_SUFFIXES))})."
        )
    return images


def check_outputs_spare_inputs(
    input_path: str, images: list[Path], output_dir: Path, results_json: Path | None
) -> None:
    """UsageError when an output would be written over an input: ``output=`` is ``input=`` (a
    folder) or inside it, or a picture or the results json would replace an input image."""
    source = Path(input_path).resolve()
    target = output_dir.resolve()
    if source.is_dir() and (target == source or source in target.parents):
        raise UsageError(
            f"output={str(output_dir)!r} is {'the' if target == source else 'inside the'} input "
            f"folder input={input_path!r}: the pictures would be written among (or over) the "
            "images. Give an output folder outside the input."
        )
    inputs = {p.resolve() for p in images}
    planned = [target / name for name in _output_names(images)]
    if results_json is not None:
        planned.append(results_json.resolve())
    for path in planned:
        if path in inputs:
            raise UsageError(
                f"{path} is an input image and would be overwritten by an output; give "
                "output= (and results=) outside the input."
            )


def plan_video(source: str, output_dir: Path, results_json: Path | None) -> Path | None:
    """The annotated video's path for a video file (by suffix) or ``webcam:N`` input; None for
    images. Checked like images: PyAV installed, the input a regular file, and neither the video
    nor ``results=`` written over the input."""
    from lazydet.evaluation import video

    try:
        camera = video.webcam_index(source)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if camera is None and Path(source).suffix.lower() not in video.VIDEO_SUFFIXES:
        return None
    try:
        video.require_av()
    except video.MissingVideoLibrary as e:
        raise UsageError(f"input={source!r}: {e}") from None
    target = video.output_video_path(source, output_dir)
    if camera is not None:
        if results_json is not None:
            raise UsageError(f"results= is for images and video files, not input={source!r}.")
        return target
    path = Path(source)
    if not path.exists():
        raise UsageError(f"input={source!r} does not exist.")
    if not stat.S_ISREG(path.stat().st_mode):
        raise UsageError(f"input={source!r} is not a regular file; give a video file.")
    for planned in (target, results_json):
        if planned is not None and planned.resolve() == path.resolve():
            raise UsageError(
                f"{planned} is the input video and would be overwritten by an output; give "
                "output= (and results=) elsewhere."
            )
    video.check_video(path)  # not a video: refused before the model is loaded
    return target


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
    from lazydet.evaluation.pictures import all_hidden_message, draw_predictions
    from lazydet.evaluation.predictor import to_image_tensor

    output_dir.mkdir(parents=True, exist_ok=True)
    names = _output_names(images)
    failed: list[str] = []
    results: list[dict] = []
    drawings = []
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
        try:
            outs = predictor.predict(tensors)
        except _IMAGE_ERRORS:
            # One image the model cannot take (20000x2: resized to nothing) must not cost the
            # others: predict them one by one and skip the one(s) that fail.
            batch, tensors, outs = _predict_one_by_one(predictor, batch, tensors, images, failed)
        for i, image, instances in zip(batch, tensors, outs):
            try:
                drawing = draw_predictions(predictor, image, instances, score_threshold)
                drawing.picture.save(output_dir / names[i])
            except _IMAGE_ERRORS as e:
                logger.error("skipping %s: cannot draw its predictions: %s", images[i], e)
                failed.append(str(images[i]))
                continue
            drawings.append(drawing)
            if results_json is not None:
                for result in instances_to_coco_json(
                    instances, i + 1, contiguous_to_dataset_id=contiguous_to_dataset_id
                ):
                    result["file_name"] = str(images[i])
                    results.append(result)
            logger.info("%s: %d detections -> %s", images[i], len(instances), output_dir / names[i])
    note = all_hidden_message(drawings, score_threshold)  # every picture empty: say why
    if note:
        logger.warning("%s", note)
    if results_json is not None:
        write_results_json(results, results_json)
        logger.info("COCO results (image_id = position in the input list): %s", results_json)
    return failed


# What predicting or drawing one unusable image raises (torch's errors are RuntimeErrors).
_IMAGE_ERRORS = (RuntimeError, ValueError, OSError, MemoryError, ZeroDivisionError)


def _predict_one_by_one(
    predictor: Any, batch: list[int], tensors: list[Any], images: list[Path], failed: list[str]
) -> tuple[list[int], list[Any], list[Any]]:
    kept, kept_tensors, outs = [], [], []
    for i, tensor in zip(batch, tensors):
        try:
            (instances,) = predictor.predict([tensor])
        except _IMAGE_ERRORS as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            logger.error(
                "skipping %s (%s px): cannot resize or predict it: %s",
                images[i],
                "x".join(str(n) for n in tensor.shape[-2:][::-1]),
                first,
            )
            failed.append(str(images[i]))
            continue
        kept.append(i)
        kept_tensors.append(tensor)
        outs.append(instances)
    return kept, kept_tensors, outs


def run(argv: list[str]) -> int:
    own, overrides, show_gt = parse_arguments(argv)
    if "output" not in own:
        raise UsageError("Give output=DIR (where the pictures go).")
    output_dir = Path(own["output"])
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"output={own['output']!r} is a file; give a folder.")
    # Every option is checked before anything is composed, loaded or written.
    max_images = own_number(own, "max_images", int, 20, low=1)
    batch_size = own_number(own, "batch_size", int, 4, low=1)
    score_threshold = own_number(own, "score_threshold", float, 0.5, low=0.0, high=1.0)
    results_json = Path(own["results"]) if "results" in own else None
    video_output = None
    if not show_gt:
        if "input" not in own:
            raise UsageError("Give input=IMAGE_OR_DIR (or a video file, or webcam:N).")
        video_output = plan_video(own["input"], output_dir, results_json)
        if video_output is None:
            images = list_images(own["input"])
            check_outputs_spare_inputs(own["input"], images, output_dir, results_json)
    camera = _open_camera(own["input"]) if video_output is not None else None
    cfg = compose_from_command_line(overrides) if overrides else None
    if show_gt:
        name = own.get("show_gt") or (cfg is not None and select_resolved(cfg, "dataset.test"))
        if not name:
            raise UsageError("--show-gt needs conf=EXPERIMENT (its dataset.test) or show_gt=NAME.")
        from lazydet.data import DatasetCatalog
        from lazydet.evaluation.pictures import show_ground_truth

        if str(name) not in DatasetCatalog.names():
            raise UsageError(
                f"show_gt={name!r} is not a registered dataset. Registered: "
                f"{', '.join(DatasetCatalog.names())}. Register yours with "
                "lazydet.data.register_coco(name, json_file, image_root)."
            )
        show_ground_truth(str(name), output_dir, max_images=max_images)
        return 0
    from lazydet.evaluation.predictor import Predictor

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
        from lazydet.checkpoint import CheckpointError

        try:
            predictor = Predictor.from_checkpoint(
                own["checkpoint"], device=device, batch_size=batch_size
            )
        except CheckpointError as e:
            if "untrusted config" not in str(e) and "trusted=True" not in str(e):
                raise
            # The stored config is read as data; a project's own classes are not on the
            # allow-list. The command's way out is the experiment's own config.
            raise CheckpointError(
                f"{e} With lazydet.predict, give the experiment instead: conf=EXPERIMENT "
                f"train.init_checkpoint={own['checkpoint']} (no checkpoint=)."
            ) from e
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
    if video_output is not None:
        return _predict_video(
            predictor, own["input"], video_output, camera, results_json, score_threshold, mapping
        )
    failed = predict_images(
        predictor,
        images,
        output_dir,
        results_json=results_json,
        score_threshold=score_threshold,
        contiguous_to_dataset_id=mapping,
    )
    if failed:
        print(
            f"lazydet.predict: {len(failed)} image(s) could not be read, resized or predicted "
            f"(skipped; the others were written): {failed}",
            file=sys.stderr,
        )
        return 1
    return 0


def _open_camera(source: str) -> Any:
    """For ``webcam:N``, the open camera (before the model is loaded: no camera, one line and
    exit 1); None for a video file."""
    from lazydet.evaluation import video

    index = video.webcam_index(source)
    return None if index is None else video.open_webcam(index)


def _predict_video(
    predictor: Any,
    source: str,
    output: Path,
    camera: Any,
    results_json: Path | None,
    score_threshold: float,
    mapping: dict[int, int] | None,
) -> int:
    from lazydet.evaluation import video

    if camera is not None:
        summary = video.show_webcam(
            predictor, camera, output, title=f"input={source}", score_threshold=score_threshold
        )
    else:
        summary = video.predict_video(
            predictor,
            source,
            output,
            results_json=results_json,
            score_threshold=score_threshold,
            contiguous_to_dataset_id=mapping,
        )
    print(
        f"{source}: {summary.frames} frames ({summary.width}x{summary.height}, "
        f"{float(summary.fps):g} fps) in {summary.seconds:.1f} s: "
        f"{summary.frames_per_second:.2f} frames/s -> {summary.output}"
    )
    return 0


def main(argv: list[str] | None = None) -> None:
    command_main("lazydet.predict", __doc__, run, argv)


if __name__ == "__main__":
    main()
