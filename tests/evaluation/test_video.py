"""``lazydet.predict input=clip.mp4``: an annotated video with the input's frame count, size and
rate, whose frames are the pictures ``draw_predictions`` makes of each frame's predictions, and
a results json with each frame's detections (issue #21 point 5). The clip is written here."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from lazydet.config.command_line import UsageError  # noqa: E402
from lazydet.predict import main, run  # noqa: E402

FRAMES, HEIGHT, WIDTH, FPS = 8, 96, 128, 10


def _write_clip(path: Path) -> list[np.ndarray]:
    """A white 24 px square moving right on black; returns the frames as decoded back."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(FRAMES):
            rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            rgb[30:54, 8 + 8 * i : 32 + 8 * i] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return _read(path)[0]


def _read(path: Path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.average_rate


@pytest.fixture
def clip(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    path = tmp_path / "clip.mp4"
    return path, _write_clip(path)


def test_predict_writes_the_annotated_video_and_each_frames_results(
    tmp_path, clip, monkeypatch
) -> None:
    from lazydet.evaluation.pictures import draw_predictions
    from lazydet.evaluation.predictor import Predictor

    path, frames = clip
    # Record what the command's predictor was given and gave back: the expected pictures.
    calls = []
    original = Predictor.predict

    def recording(self, images):
        outputs = original(self, images)
        calls.append((self, [torch.as_tensor(i).clone() for i in images], outputs))
        return outputs

    monkeypatch.setattr(Predictor, "predict", recording)
    out = tmp_path / "out"
    argv = [
        *("conf=quickstart", "train.init_checkpoint=random", "device=cpu", "batch_size=3"),
        # Three detections a frame keep the drawing quick (random weights: 100 otherwise).
        "+model.roi_heads.box_predictor.test_topk_per_image=3",
        *(f"input={path}", f"output={out}", f"results={out}/r.json", "score_threshold=0"),
    ]
    torch.manual_seed(0)
    assert run(argv) == 0

    written, rate = _read(out / "clip_predictions.mp4")
    assert len(written) == FRAMES and rate == FPS
    assert all(frame.shape == (HEIGHT, WIDTH, 3) for frame in written)
    assert not list(out.glob(".*partial"))

    assert [len(images) for _, images, _ in calls] == [3, 3, 2]  # batches of batch_size
    predictor = calls[0][0]
    inputs = [image for _, images, _ in calls for image in images]
    instances = [found for _, _, outputs in calls for found in outputs]
    for image, frame in zip(inputs, frames):  # the predictor saw the decoded frames
        assert torch.equal(image, torch.from_numpy(frame).permute(2, 0, 1))

    results = json.loads((out / "r.json").read_text())
    assert {r["image_id"] for r in results} == set(range(1, FRAMES + 1))
    for index, expected in enumerate(instances):
        mine = [r for r in results if r["image_id"] == index + 1]
        assert len(mine) == len(expected) > 0
        assert all(r["file_name"] == str(path) for r in mine)
        torch.testing.assert_close(
            torch.tensor([r["score"] for r in mine]), expected.scores, rtol=1e-4, atol=1e-4
        )

    # Each frame is its drawing (up to the codec's loss): where the drawing changed the input
    # (boxes, masks, labels), the video has the drawing, not the input.
    for frame, image, found, drawn in zip(frames, inputs, instances, written):
        picture = draw_predictions(predictor, image, found, 0.0).picture.convert("RGB")
        expected = np.asarray(picture.resize((WIDTH, HEIGHT), resample=1)).astype(float)
        drawn, frame = drawn.astype(float), frame.astype(float)
        changed = np.abs(expected - frame).max(axis=2) > 60
        assert changed.sum() > 100
        to_drawing = np.abs(drawn - expected)[changed].mean()
        to_input = np.abs(drawn - frame)[changed].mean()
        assert to_drawing < to_input / 3, (to_drawing, to_input)
        assert np.abs(drawn - expected).mean() < 4


def test_video_outputs_never_replace_the_input(tmp_path, clip) -> None:
    path, _ = clip
    before = path.read_bytes()
    with pytest.raises(UsageError, match="input video and would be overwritten"):
        run([f"input={path}", f"output={tmp_path}/out", f"results={path}", "checkpoint=x.pth"])
    assert path.read_bytes() == before
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_a_video_is_refused_before_the_model_loads(tmp_path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(ValueError, match=r"notes.mp4.* cannot be read as a video"):
        run([f"input={bad}", f"output={tmp_path}/out", "checkpoint=/nonexistent.pth"])
    assert not (tmp_path / "out").exists()


def test_missing_pyav_names_the_extra(tmp_path, clip, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    with pytest.raises(UsageError, match=r'pip install "lazydet\[video\]"'):
        run([f"input={clip[0]}", f"output={tmp_path}/out", "checkpoint=x.pth"])


def test_webcam_without_a_camera_is_one_line_exit_1(tmp_path, capsys) -> None:
    if Path("/dev/video0").exists() and "v4l2" in av.formats_available:
        pytest.skip("this machine has a camera that PyAV can open")
    with pytest.raises(SystemExit) as exited:
        main(["input=webcam:0", f"output={tmp_path}/out", "checkpoint=/nonexistent.pth"])
    assert exited.value.code == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("lazydet.predict: input=webcam:0:") and "\n" not in error
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="webcam:N"):
        run(["input=webcam:front", f"output={tmp_path}/out"])


def test_webcam_loop_shows_frames_until_the_window_closes_and_keeps_the_recording(
    tmp_path, clip, monkeypatch
) -> None:
    # No camera here: a video file stands in for it (the same PyAV container type), and a
    # window stand-in that the "user" closes after 3 frames.
    from lazydet.config import compose
    from lazydet.evaluation import video
    from lazydet.evaluation.predictor import Predictor

    shown = []

    class ClosedAfterThree:
        def __init__(self, title: str) -> None:
            pass

        def show(self, rgb: np.ndarray) -> bool:
            shown.append(rgb)
            return len(shown) < 3

    cfg = compose(
        "quickstart",
        ["train.init_checkpoint=random", "+model.roi_heads.box_predictor.test_topk_per_image=1"],
    )
    predictor = Predictor.from_config(cfg, device="cpu", batch_size=4)
    monkeypatch.setattr(video, "_Window", ClosedAfterThree)
    summary = video.show_webcam(predictor, av.open(str(clip[0])), tmp_path / "cam.mp4")
    assert summary.frames == 3 and len(shown) == 3
    written, rate = _read(tmp_path / "cam.mp4")
    assert len(written) == 3 and rate == FPS and written[0].shape == (HEIGHT, WIDTH, 3)
    assert all(frame.shape == (HEIGHT, WIDTH, 3) for frame in shown)


def test_webcam_without_a_display_is_one_line(tmp_path, clip) -> None:
    import matplotlib

    from lazydet.evaluation import video

    matplotlib.use("Agg")
    with pytest.raises(OSError, match="needs a display") as raised:
        video.show_webcam(None, av.open(str(clip[0])), tmp_path / "cam.mp4")
    assert "\n" not in str(raised.value) and not (tmp_path / "cam.mp4").exists()
