"""Export a detector: ``torch.export`` (``.pt2``) or ONNX (``.onnx``), with its metadata.

``export_detector(predictor, format=..., output_dir=...)`` exports ``predictor.model`` (an eager
``lazydet.evaluation.Predictor``'s, which also carries the class names and the test resize)
wrapped in ``DetectionGraph`` (one RGB 0-255 image in, detections in that image's pixels
out) and writes ``model.pt2`` or ``model.onnx`` plus ``model.json`` (the metadata, also inside
the model file). ``ExportedPredictor`` (``lazydet.deploy.runtime``) runs the result.

Sizes: the graph's height and width are any in ``[min_size, max_size]`` (``dynamic=True``, the
default; ``min_size`` at least one pixel above the coarsest feature stride), or exactly the
example's size.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lazydet.deploy.graph import DetectionGraph, output_names
from lazydet.deploy.metadata import EXTRA_FILE, FORMAT_VERSION, METADATA_KEY, sidecar_path

__all__ = [
    "FORMATS",
    "build_metadata",
    "capture_data_dependent_shapes",
    "export_detector",
    "export_onnx",
    "export_program",
]

logger = logging.getLogger("lazydet.deploy")

FORMATS = {"torch_export": ".pt2", "onnx": ".onnx"}
# None: the least size the model allows (DetectionGraph.min_size: 96 with P6, 160 with P7).
DEFAULT_MIN_SIZE = None
DEFAULT_MAX_SIZE = 1344


def capture_data_dependent_shapes() -> None:
    """The two dynamo flags that let it trace NMS, ``nonzero`` and score thresholds
    (docs/ops.md, "torch.compile"); ``torch.export`` traces through dynamo too."""
    torch._dynamo.config.capture_dynamic_output_shape_ops = True
    torch._dynamo.config.capture_scalar_outputs = True


def _check_size_range(min_size: int, max_size: int, least: int) -> None:
    if not least <= min_size <= max_size:
        raise ValueError(
            f"min_size={min_size}, max_size={max_size}: need {least} <= min_size <= max_size "
            "(below the coarsest feature stride the pyramid's top level is empty)."
        )


def _example(height: int, width: int, min_size: int, max_size: int) -> torch.Tensor:
    for name, value in (("height", height), ("width", width)):
        if not min_size <= value <= max_size:
            raise ValueError(
                f"{name}={value}: the export size must be within [{min_size}, {max_size}]."
            )
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(3, height, width, generator=generator) * 255).round()


def _dynamic_shapes(min_size: int, max_size: int) -> tuple[dict[int, Any]]:
    height = torch.export.Dim("height", min=min_size, max=max_size)
    width = torch.export.Dim("width", min=min_size, max=max_size)
    return ({1: height, 2: width},)


def build_metadata(
    predictor: Any,
    graph: DetectionGraph,
    *,
    dynamic: bool,
    export_size: tuple[int, int],
    min_size: int,
    max_size: int,
) -> dict[str, Any]:
    """The JSON object of ``lazydet.deploy.metadata`` for ``predictor``'s model."""
    from lazydet.data.augmentation import iter_transforms

    model = graph.model
    resize = None
    if predictor.augmentations is not None:
        from torchvision.transforms import v2

        transforms = [t for t in iter_transforms(predictor.augmentations)]
        resizes = [t for t in transforms if isinstance(t, v2.Resize)]
        others = [t for t in transforms if not isinstance(t, (v2.Resize, v2.Compose))]
        if len(resizes) != 1 or others:
            raise ValueError(
                f"dataloader.test.mapper.augmentations is {predictor.augmentations!r}; export "
                "supports one deterministic resize (v2.Resize, as test_augmentations gives)."
            )
        resize = {"size": resizes[0].size, "max_size": resizes[0].max_size}
        if isinstance(resize["size"], (list, tuple)) and len(resize["size"]) == 1:
            resize["size"] = int(resize["size"][0])
    return {
        "format_version": FORMAT_VERSION,
        "detector": type(model).__name__,
        "class_names": predictor.class_names,
        "keypoint_names": predictor.keypoint_names,
        "keypoint_skeleton": [list(p) for p in predictor.keypoint_skeleton or []] or None,
        "input_format": getattr(model, "input_format", "RGB"),
        "pixel_mean": [float(v) for v in model.pixel_mean.flatten()],
        "size_divisibility": graph.size_divisibility,
        "min_size": min_size if dynamic else None,
        "max_size": max_size if dynamic else None,
        "dynamic": dynamic,
        "export_size": list(export_size),
        "resize": resize,
        "outputs": output_names(has_masks=graph.has_masks, has_keypoints=graph.has_keypoints),
        "mask_threshold": getattr(model, "mask_threshold", 0.5),
        "mask_paste": getattr(model, "mask_paste", "torchvision"),
        "keypoint_score_type": getattr(
            getattr(getattr(model, "roi_heads", None), "keypoint_head", None), "score_type", "logit"
        ),
    }


def export_program(
    model: nn.Module,
    *,
    height: int = 800,
    width: int = 1088,
    dynamic: bool = True,
    min_size: int | None = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``DetectionGraph(model)`` on a ``3 x height x width`` example
    (CPU, float32), height and width dynamic in ``[min_size, max_size]``."""
    graph = DetectionGraph(model=model.to("cpu").eval())
    min_size = graph.min_size if min_size is None else min_size
    _check_size_range(min_size, max_size, graph.min_size)
    example = _example(height, width, min_size, max_size)
    capture_data_dependent_shapes()
    # strict (dynamo) tracing: len() of a data-dependent tensor stays symbolic, where the
    # non-strict tracer needs a Python int and fails in Instances.set.
    with torch.no_grad():
        return torch.export.export(
            graph,
            (example,),
            dynamic_shapes=_dynamic_shapes(min_size, max_size) if dynamic else None,
            strict=True,
        )


def drop_runtime_asserts(program: torch.export.ExportedProgram) -> None:
    """Remove the shape assertions ``torch.export`` puts in the graph (``_assert_scalar`` of
    ``u <= 2**63-ish`` on the data-dependent sizes of NMS and ``nonzero``, and the comparisons
    they read), in place: the ONNX exporter cannot write their 64-bit-overflowing constants, and
    ONNX Runtime checks shapes itself."""
    import operator

    asserts = {
        torch.ops.aten._assert_scalar.default,
        torch.ops.aten._assert_async.msg,
        torch.ops.aten.sym_constrain_range_for_size.default,
        torch.ops.aten.sym_constrain_range.default,
    }
    symbolic = {
        operator.le,
        operator.lt,
        operator.ge,
        operator.gt,
        operator.eq,
        operator.ne,
        operator.and_,
        operator.or_,
        operator.not_,
        torch.sym_not,
    }
    graph = program.graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in asserts:
            graph.erase_node(node)
    changed = True
    while changed:
        changed = False
        for node in reversed(list(graph.nodes)):
            if node.op == "call_function" and node.target in symbolic and not node.users:
                graph.erase_node(node)
                changed = True
    program.graph_module.recompile()


def export_onnx(program: torch.export.ExportedProgram, path: Path, metadata: dict) -> None:
    """The ONNX model of an exported program, with the lazydet ops translated
    (``lazydet.deploy.onnx_ops``), ``metadata`` in its ``metadata_props``. The program's shape
    assertions are removed first (``drop_runtime_asserts``)."""
    import onnx

    from lazydet.deploy.onnx_ops import custom_translation_table

    drop_runtime_asserts(program)
    onnx_program = torch.onnx.export(
        program,
        dynamo=True,
        custom_translation_table=custom_translation_table(),
        input_names=["image"],
        output_names=metadata["outputs"],
        optimize=True,
    )
    onnx_program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.save(proto, str(path))


def export_detector(
    predictor: Any,
    *,
    format: str,
    output_dir: str | Path,
    height: int = 800,
    width: int = 1088,
    dynamic: bool = True,
    min_size: int | None = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
    name: str = "model",
) -> Path:
    """Export ``predictor.model``; return the path of ``<output_dir>/<name>.pt2`` or ``.onnx``
    (the metadata also goes to ``<name>.json``).

    Raises:
        ValueError: an unknown ``format``, a size out of range, or a file that would be written
            over (nothing is written then).
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r}; choose one of {', '.join(FORMATS)}.")
    output_dir = Path(output_dir)
    path = output_dir / f"{name}{FORMATS[format]}"
    for target in (path, sidecar_path(path)):
        if target.exists():
            raise ValueError(f"{target} exists; remove it or give another output=.")
    program = export_program(
        predictor.model,
        height=height,
        width=width,
        dynamic=dynamic,
        min_size=min_size,
        max_size=max_size,
    )
    graph = DetectionGraph(model=predictor.model)
    min_size = graph.min_size if min_size is None else min_size
    metadata = build_metadata(
        predictor,
        graph,
        dynamic=dynamic,
        export_size=(height, width),
        min_size=min_size,
        max_size=max_size,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        if format == "torch_export":
            torch.export.save(program, str(partial), extra_files={EXTRA_FILE: json.dumps(metadata)})
        else:
            export_onnx(program, partial, metadata)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    sidecar_path(path).write_text(json.dumps(metadata, indent=2) + "\n")
    logger.info("exported %s (%s) -> %s", metadata["detector"], format, path)
    return path
