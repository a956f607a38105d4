"""Video in, annotated video out: ``lazydet.predict input=clip.mp4`` and ``input=webcam:N``.

Frames are decoded with PyAV (FFmpeg's libraries, ``pip install "lazydet[video]"``) as
``[3, H, W]`` uint8 RGB tensors, predicted in batches of ``predictor.batch_size``, drawn exactly
as ``lazydet.predict`` draws pictures (:func:`lazydet.evaluation.pictures.draw_predictions`) and
encoded at the source's frame rate and frame size: H.264 (``libx264``, yuv420p) when the frame
size is even, MPEG-4 part 2 otherwise (yuv420p H.264 needs even sizes). Pictures that
``draw_instances`` upscales for legible labels (short side under 512 px) are scaled back to the
frame size, so the output video has the input's size and frame count.

The output is written to a hidden ``.NAME.partial`` file beside it and renamed when complete, so
a failed run leaves no half-written video under the final name.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "VIDEO_SUFFIXES",
    "VideoSummary",
    "check_video",
    "open_webcam",
    "output_video_path",
    "predict_video",
    "require_av",
    "show_webcam",
    "webcam_index",
]

logger = logging.getLogger("lazydet.video")

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
INSTALL_HINT = 'pip install "lazydet[video]"'
DEFAULT_FPS = Fraction(30)  # when a stream does not state its rate (some cameras, raw streams)


class MissingVideoLibrary(ImportError):
    """PyAV is not installed; the message says how to install it."""


def require_av() -> Any:
    """The ``av`` module, or :class:`MissingVideoLibrary` naming the extra that installs it."""
    try:
        import av
    except ImportError:
        raise MissingVideoLibrary(
            f"reading and writing video needs PyAV, which is not installed: {INSTALL_HINT}"
        ) from None
    return av


def webcam_index(spec: str) -> int | None:
    """``"webcam:N"`` -> N; None for anything that does not start with ``webcam:``.

    Raises:
        ValueError: ``webcam:`` followed by something other than a camera number.
    """
    prefix, sep, number = spec.partition(":")
    if not sep or prefix != "webcam":
        return None
    if not number.isdigit():
        raise ValueError(f"input={spec!r}: give webcam:N with N a camera number (0: the first).")
    return int(number)


def output_video_path(source: str, output_dir: Path) -> Path:
    """``OUTPUT/<stem>_predictions.mp4`` (``webcam<N>_predictions.mp4`` for ``webcam:N``)."""
    index = webcam_index(source)
    stem = f"webcam{index}" if index is not None else Path(source).stem
    return Path(output_dir) / f"{stem}_predictions.mp4"


@dataclass(frozen=True)
class VideoSummary:
    """What a video run did.

    Attributes:
        frames: frames read, predicted, drawn and written.
        seconds: wall time from the first frame read to the video closed.
        width, height: the frame size (input and output alike).
        fps: the frame rate the video was written at (the source's).
        output: the annotated video.
    """

    frames: int
    seconds: float
    width: int
    height: int
    fps: Fraction
    output: Path

    @property
    def frames_per_second(self) -> float:
        """Processing speed: frames decoded, predicted, drawn and encoded per second."""
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


class _VideoWriter:
    """Encodes RGB frames of one size into ``path`` through a ``.partial`` file."""

    def __init__(self, av: Any, path: Path, *, width: int, height: int, fps: Fraction) -> None:
        self.path = path
        self.partial = path.with_name(f".{path.name}.partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        even = width % 2 == 0 and height % 2 == 0
        codec = "libx264" if even and "libx264" in av.codecs_available else "mpeg4"
        self.container = av.open(str(self.partial), mode="w", format="mp4")
        self.stream = self.container.add_stream(codec, rate=fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.av = av

    def write(self, rgb: np.ndarray) -> None:
        frame = self.av.VideoFrame.from_ndarray(rgb, format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def finish(self) -> None:
        for packet in self.stream.encode():  # flush the frames the encoder holds back
            self.container.mux(packet)
        self.container.close()
        self.partial.replace(self.path)

    def abandon(self) -> None:
        try:
            self.container.close()
        finally:
            self.partial.unlink(missing_ok=True)


def _frame_rate(stream: Any) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate) if rate else DEFAULT_FPS


def _decoded_frames(av: Any, container: Any, stream: Any, what: str) -> Iterator[torch.Tensor]:
    """``[3, H, W]`` uint8 RGB tensors, in order; a decoding error names ``what`` and the frame."""
    index = 0
    try:
        for frame in container.decode(stream):
            yield torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
            index += 1
    except av.error.FFmpegError as e:
        raise ValueError(f"{what}: cannot decode frame {index}: {e}") from None


def _annotated(
    predictor: Any,
    frames: Iterable[torch.Tensor],
    *,
    score_threshold: float,
    batch_size: int,
) -> Iterator[tuple[int, Any, Any, np.ndarray]]:
    """``(index, instances, drawing, rgb)`` per frame: predictions in batches of ``batch_size``,
    drawn by ``draw_predictions`` and scaled back to the frame size (``[H, W, 3]`` uint8)."""
    from PIL import Image

    from lazydet.evaluation.pictures import draw_predictions

    def flush(batch: list[torch.Tensor], first: int):
        for offset, (frame, instances) in enumerate(zip(batch, predictor.predict(batch))):
            drawing = draw_predictions(predictor, frame, instances, score_threshold)
            picture = drawing.picture.convert("RGB")
            size = (int(frame.shape[2]), int(frame.shape[1]))
            if picture.size != size:  # upscaled for legible labels: back to the frame size
                picture = picture.resize(size, Image.Resampling.LANCZOS)
            yield first + offset, instances, drawing, np.asarray(picture)

    batch: list[torch.Tensor] = []
    first = 0
    for index, frame in enumerate(frames):
        if not batch:
            first = index
        batch.append(frame)
        if len(batch) == batch_size:
            yield from flush(batch, first)
            batch = []
    if batch:
        yield from flush(batch, first)


def _run(
    predictor: Any,
    frames: Iterable[torch.Tensor],
    writer_for: Callable[[int, int], _VideoWriter],
    *,
    what: str,
    total: int | None,
    score_threshold: float,
    batch_size: int,
    results_json: Path | None,
    contiguous_to_dataset_id: dict[int, int] | None,
    log_every: int,
    show: Callable[[np.ndarray], bool] | None = None,
) -> tuple[int, float, Any]:
    """Predict, draw and encode every frame; returns ``(frames, seconds, writer)``.

    ``show(rgb)`` (the webcam window) is called on each drawn frame and stops the run by
    returning False. On any error the partial video is removed and nothing is written.
    """
    from lazydet.evaluation.coco_eval import write_results_json
    from lazydet.evaluation.coco_evaluator import instances_to_coco_json
    from lazydet.evaluation.pictures import Drawing, all_hidden_message

    writer = None
    results: list[dict] = []
    drawings: list[Drawing] = []
    count = 0
    start = time.perf_counter()
    try:
        for index, instances, drawing, rgb in _annotated(
            predictor, frames, score_threshold=score_threshold, batch_size=batch_size
        ):
            if writer is None:
                writer = writer_for(rgb.shape[1], rgb.shape[0])
            writer.write(rgb)
            count = index + 1
            # Keep the counts for the "every detection under the threshold" note, not the picture.
            drawings.append(Drawing(None, drawing.shown, drawing.hidden, drawing.best_score))
            if results_json is not None:
                for result in instances_to_coco_json(
                    instances, index + 1, contiguous_to_dataset_id=contiguous_to_dataset_id
                ):
                    result["file_name"] = what
                    results.append(result)
            if log_every and count % log_every == 0:
                elapsed = time.perf_counter() - start
                of = f"/{total}" if total else ""
                logger.info("%s: frame %d%s (%.1f frames/s)", what, count, of, count / elapsed)
            if show is not None and not show(rgb):
                break
        if writer is None:
            raise ValueError(f"{what} has no frame to predict.")
        writer.finish()
    except BaseException:
        if writer is not None:
            writer.abandon()
        raise
    seconds = time.perf_counter() - start
    note = all_hidden_message(drawings, score_threshold)
    if note:
        logger.warning(
            "%s", note.replace("images", "frames").replace("the pictures show", "the video shows")
        )
    if results_json is not None:
        write_results_json(results, results_json)
        logger.info("COCO results (image_id = frame index + 1): %s", results_json)
    return count, seconds, writer


def predict_video(
    predictor: Any,
    video: str | Path,
    output: str | Path,
    *,
    results_json: Path | None = None,
    score_threshold: float = 0.5,
    contiguous_to_dataset_id: dict[int, int] | None = None,
    log_every: int = 100,
) -> VideoSummary:
    """Write ``video`` with its predictions drawn to ``output`` (an .mp4 path).

    Same frame count, frame size and frame rate as ``video``. With ``results_json``, every
    detection of every frame goes into a COCO results json with ``image_id`` = frame index + 1
    and ``file_name`` = ``video``. Progress is logged every ``log_every`` frames.

    Raises:
        MissingVideoLibrary: PyAV is not installed.
        ValueError: ``video`` cannot be opened or decoded, or has no video stream or no frame.
    """
    av = require_av()
    what = str(video)
    with _open_video(av, what) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # decode with several threads: frames come out in order
        fps = _frame_rate(stream)
        output = Path(output)
        frames, seconds, _ = _run(
            predictor,
            _decoded_frames(av, container, stream, f"input={what!r}"),
            lambda w, h: _VideoWriter(av, output, width=w, height=h, fps=fps),
            what=what,
            total=stream.frames or None,
            score_threshold=score_threshold,
            batch_size=predictor.batch_size,
            results_json=results_json,
            contiguous_to_dataset_id=contiguous_to_dataset_id,
            log_every=log_every,
        )
        width, height = stream.codec_context.width, stream.codec_context.height
    return VideoSummary(frames, seconds, width, height, fps, output)


def check_video(video: str | Path) -> None:
    """Open ``video`` and look for a video stream, so that a file that is not a video is
    refused before a model is loaded.

    Raises:
        MissingVideoLibrary: PyAV is not installed.
        ValueError: ``video`` cannot be opened as a video or has no video stream.
    """
    av = require_av()
    with _open_video(av, str(video)):
        pass


def _open_video(av: Any, what: str) -> Any:
    try:
        container = av.open(what)
    except av.error.FFmpegError as e:
        raise ValueError(f"input={what!r} cannot be read as a video: {e}") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"input={what!r} has no video stream.")
    return container


def open_webcam(index: int) -> Any:
    """An open PyAV container on camera ``index`` (``/dev/videoN`` through v4l2 on Linux, device
    N through avfoundation on macOS).

    Raises:
        MissingVideoLibrary: PyAV is not installed.
        OSError: one line: no such camera, a PyAV build without camera input, or the camera
            cannot be opened.
    """
    av = require_av()
    name = f"input=webcam:{index}"
    if sys.platform.startswith("linux"):
        device, input_format = f"/dev/video{index}", "v4l2"
        if not Path(device).exists():
            raise OSError(
                f"{name}: no camera at {device} (see ls /dev/video*); connect one or give a "
                "video file, input=clip.mp4."
            )
    elif sys.platform == "darwin":
        device, input_format = str(index), "avfoundation"
    else:
        raise OSError(
            f"{name}: cameras are read on Linux (v4l2) and macOS (avfoundation) only; record a "
            "video and give input=clip.mp4."
        )
    if input_format not in av.formats_available:
        raise OSError(
            f"{name}: this PyAV build has no {input_format} camera input (the PyPI wheels leave "
            "it out); install PyAV built on your system's FFmpeg (pip install --no-binary av av) "
            "or give a video file, input=clip.mp4."
        )
    try:
        return av.open(device, format=input_format)
    except av.error.FFmpegError as e:
        raise OSError(f"{name}: cannot open the camera {device}: {e}") from None


class _Window:
    """A matplotlib window that shows RGB frames; closed by the user to stop."""

    NON_INTERACTIVE = frozenset({"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"})

    def __init__(self, title: str) -> None:
        import matplotlib.pyplot as plt

        backend = plt.get_backend().lower()
        if backend in self.NON_INTERACTIVE or backend.startswith("module://matplotlib_inline"):
            raise OSError(
                f"{title}: showing frames needs a display, and matplotlib's backend is {backend!r} "
                "(no display found); run where a display is, or set MPLBACKEND=TkAgg (or QtAgg)."
            )
        self.plt = plt
        self.figure = plt.figure(title)
        self.axes = self.figure.add_axes((0, 0, 1, 1))
        self.axes.set_axis_off()
        self.image = None
        plt.ion()
        plt.show()

    def show(self, rgb: np.ndarray) -> bool:
        if not self.plt.fignum_exists(self.figure.number):
            return False  # the window was closed: stop
        if self.image is None:
            self.image = self.axes.imshow(rgb)
        else:
            self.image.set_data(rgb)
        self.plt.pause(0.001)  # let the GUI draw and handle events
        return True


def show_webcam(
    predictor: Any,
    camera: Any,
    output: str | Path,
    *,
    title: str = "lazydet webcam",
    score_threshold: float = 0.5,
) -> VideoSummary:
    """Show the camera's frames with their predictions in a window until it is closed (or
    Ctrl-C), and record them to ``output`` (an .mp4 path) at the camera's frame rate.

    ``camera`` is an :func:`open_webcam` container. Frames are predicted one at a time, so the
    window lags the camera by one frame's prediction, not a batch's.

    Raises:
        OSError: no display to show frames on.
    """
    av = require_av()
    with camera:  # closed on every way out, a missing display included
        window = _Window(title)
        stream = camera.streams.video[0]
        fps = _frame_rate(stream)
        output = Path(output)

        def frames() -> Iterator[torch.Tensor]:
            try:
                yield from _decoded_frames(av, camera, stream, title)
            except KeyboardInterrupt:  # Ctrl-C ends the recording, which is kept
                return

        frames_done, seconds, _ = _run(
            predictor,
            frames(),
            lambda w, h: _VideoWriter(av, output, width=w, height=h, fps=fps),
            what=title,
            total=None,
            score_threshold=score_threshold,
            batch_size=1,
            results_json=None,
            contiguous_to_dataset_id=None,
            log_every=0,
            show=window.show,
        )
        width, height = stream.codec_context.width, stream.codec_context.height
    return VideoSummary(frames_done, seconds, width, height, fps, output)
