"""``python -m lazydet.export``: a detector to a deployable file (``torch.export`` or ONNX).

Usage::

    python -m lazydet.export conf=EXPERIMENT train.init_checkpoint=WEIGHTS format=torch_export output=DIR
    python -m lazydet.export checkpoint=model_final.pth format=onnx output=DIR [height=800 width=1088]

Options (besides config overrides): ``format=`` ``torch_export`` (``DIR/model.pt2``, an
``ExportedProgram``) or ``onnx`` (``DIR/model.onnx``, for onnxruntime); ``output=`` the folder
(``model.json`` beside the model holds its metadata: class names, input format, sizes);
``height=``/``width=`` the example size (default 800x1088); ``min_size=`` /
``max_size=`` the range of height and width the model accepts (default: from the least the
backbone allows, 96 with P6 or 160 with RetinaNet's P7, to 1344), or
``dynamic=false`` for the example size only; ``checkpoint=`` a lazydet checkpoint to export alone
(no ``conf=``). Run the result with ``python -m lazydet.predict exported=DIR/model.pt2
input=...`` (docs/deploy.md).
"""

from __future__ import annotations

from pathlib import Path

from lazydet.config.command_line import (
    UsageError,
    command_main,
    compose_from_command_line,
    own_flag,
    own_number,
    split_own_options,
)

__all__ = ["main"]

OWN_KEYS = (
    "format",
    "output",
    "height",
    "width",
    "min_size",
    "max_size",
    "dynamic",
    "checkpoint",
)


def parse_arguments(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """``(own options, config overrides)`` from the command line."""
    return split_own_options(
        argv,
        OWN_KEYS,
        unknown=lambda arg: f"Unknown flag {arg!r}; see python -m lazydet.export --help.",
    )


def run(argv: list[str]) -> int:
    from lazydet.deploy.export import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE, FORMATS

    own, overrides = parse_arguments(argv)
    fmt = own.get("format")
    if fmt not in FORMATS:
        raise UsageError(f"Give format= one of {', '.join(FORMATS)} (got {fmt!r}).")
    if "output" not in own:
        raise UsageError("Give output=DIR (where the model goes).")
    output_dir = Path(own["output"])
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"output={own['output']!r} is a file; give a folder.")
    sizes = {
        "height": own_number(own, "height", int, 800, low=1),
        "width": own_number(own, "width", int, 1088, low=1),
        "min_size": own_number(own, "min_size", int, DEFAULT_MIN_SIZE, low=1),
        "max_size": own_number(own, "max_size", int, DEFAULT_MAX_SIZE, low=1),
    }
    dynamic = own_flag(own, "dynamic", True)
    cfg = compose_from_command_line(overrides) if overrides else None
    from lazydet.evaluation.predictor import Predictor

    if "checkpoint" in own:
        if cfg is not None:
            raise UsageError(
                "Give either checkpoint=PATH (alone) or conf=... with train.init_checkpoint."
            )
        predictor = Predictor.from_checkpoint(own["checkpoint"], device="cpu")
    elif cfg is not None:
        predictor = Predictor.from_config(cfg, device="cpu")
    else:
        raise UsageError("Give conf=EXPERIMENT train.init_checkpoint=WEIGHTS, or checkpoint=PATH.")
    from lazydet.deploy import export_detector

    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise UsageError(
                "format=onnx needs onnx and onnxscript: pip install 'lazydet[export]'."
            ) from None
    path = export_detector(
        predictor,
        format=fmt,
        output_dir=output_dir,
        dynamic=dynamic,
        **sizes,
    )
    print(f"lazydet.export: {path} (metadata: {path.with_suffix('.json')})")
    return 0


def main(argv: list[str] | None = None) -> None:
    command_main("lazydet.export", __doc__, run, argv)


if __name__ == "__main__":
    main()
