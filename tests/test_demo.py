"""The demo (tools/demo.py on a video, a folder, bad sources and outputs) and the drawing functions."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detector import Detector
from detector.demo.loop import HEADLESS_FIX, DemoOptions, display_problem, open_window, run_demo
from detector.demo.outputs import open_sink
from detector.errors import DemoError
from detector.inference.sources import open_source
from detector.detections import Detections
from detector.visualize import class_color, draw_detections, heatmap_overlay, prediction_grid
from test_predictor import CLASS_NAMES, INPUT_SIZE, make_checkpoint, make_image

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # see tests/test_predictor.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt")


def write_video(path, frames=12, size=(160, 120), fps=10.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), 30, dtype=np.uint8)
        cv2.rectangle(frame, (10 + 5 * i, 20), (60 + 5 * i, 80), (0, 200, 255), cv2.FILLED)
        writer.write(frame)
    writer.release()
    return path


def read_video(path):
    """(frame count actually decoded, width, height, fps)."""
    capture = cv2.VideoCapture(str(path))
    size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps, count = capture.get(cv2.CAP_PROP_FPS), 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count, *size, fps


def run_demo_tool(*args):
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--no-show", "--threads", "1", *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


# the tool -----------------------------------------------------------------------------------------------------------

def test_demo_on_a_video_keeps_frame_count_size_and_rate(checkpoint, tmp_path):
    source = write_video(tmp_path / "in.mp4")
    assert read_video(source) == (12, 160, 120, 10.0)
    result = run_demo_tool("--checkpoint", str(checkpoint), "--source", str(source), "--output",
                           str(tmp_path / "out" / "annotated.mp4"), "--heatmap", "--classes", "cat", "1")
    assert result.returncode == 0, result.stderr
    assert read_video(tmp_path / "out" / "annotated.mp4") == (12, 160, 120, 10.0)
    assert "12 frames" in result.stdout
    for stage in ("read", "preprocess", "model", "decode", "draw"):
        assert f"  {stage} " in result.stdout


def test_demo_on_a_folder_skips_a_corrupt_image_with_a_warning(checkpoint, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), make_image(80 + 10 * i, 120, seed=i))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (folder / "notes.txt").write_text("not an image, not a source file")
    result = run_demo_tool("--checkpoint", str(checkpoint), "--source", str(folder), "--output",
                           str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "broken.jpg" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "2.png"]
    assert cv2.imread(str(tmp_path / "out" / "2.png")).shape == (100, 120, 3)
    assert "3 frames" in result.stdout and "1 unreadable skipped" in result.stdout


def test_missing_source_or_a_lone_unreadable_image_fails_clearly(checkpoint, tmp_path):
    missing = run_demo_tool("--checkpoint", str(checkpoint), "--source", str(tmp_path / "missing.mp4"))
    assert missing.returncode != 0 and "missing.mp4 does not exist" in missing.stderr
    (tmp_path / "broken.png").write_bytes(b"\x89PNG truncated")
    broken = run_demo_tool("--checkpoint", str(checkpoint), "--source", str(tmp_path / "broken.png"))
    assert broken.returncode != 0 and "broken.png" in broken.stderr and "no frame" in broken.stderr


def test_empty_folder_bad_webcam_and_unwritable_output_are_refused_before_any_work(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DemoError, match="empty holds no images"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(DemoError, match="cannot open webcam 99"):
        open_source("99")
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where the output folder should be")
    video = open_source(str(write_video(tmp_path / "v.mp4")))
    with pytest.raises(DemoError, match="cannot write to output folder .*file.txt"):
        open_sink(blocker / "out.mp4", video)
    with pytest.raises(DemoError, match="output is a video file"):
        open_sink(tmp_path / "frames", video)
    cv2.imwrite(str(tmp_path / "one.png"), make_image(40, 40))
    with pytest.raises(DemoError, match="output is a folder"):
        open_sink(tmp_path / "out.mp4", open_source(str(tmp_path / "one.png")))


# the loop -----------------------------------------------------------------------------------------------------------

class InterruptAt:
    """A detector that raises KeyboardInterrupt (as Ctrl-C would) at frame ``stop``."""

    def __init__(self, detector, stop):
        self.detector, self.stop, self.seen = detector, stop, 0
        self.input_size = detector.input_size

    def predict_frame(self, *args, **kwargs):
        self.seen += 1
        if self.seen > self.stop:
            raise KeyboardInterrupt
        return self.detector.predict_frame(*args, **kwargs)


def test_ctrl_c_leaves_a_finished_playable_video(checkpoint, tmp_path):
    source = open_source(str(write_video(tmp_path / "in.mp4")))
    sink = open_sink(tmp_path / "out.mp4", source)
    report = run_demo(InterruptAt(Detector.from_checkpoint(checkpoint), 5), source, sink, DemoOptions())
    assert report.stopped == "interrupted" and report.frames == 5
    assert read_video(tmp_path / "out.mp4") == (5, 160, 120, 10.0)


def test_headless_opencv_and_missing_display_are_explained(monkeypatch):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           NONE\n")
    assert HEADLESS_FIX in display_problem() and "opencv-python-headless" in display_problem()
    assert open_window(show=True) is None
    monkeypatch.undo()
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if "GUI:                           NONE" not in cv2.getBuildInformation():
        assert "DISPLAY" in display_problem()
    assert open_window(show=False) is None


# drawing ------------------------------------------------------------------------------------------------------------

def one_detection(label=1, box=(10.0, 20.0, 60.0, 70.0), score=0.9):
    return Detections(np.array([box], dtype=np.float32), np.array([score], dtype=np.float32),
                      np.array([label]), np.array([CLASS_NAMES[label]]))


def test_class_colours_are_stable_and_distinct():
    colours = [class_color(i) for i in range(10)]
    assert colours == [class_color(i) for i in range(10)] and len(set(colours)) == 10
    assert all(0 <= c <= 255 for colour in colours for c in colour)


def test_draw_detections_draws_the_class_colour_on_the_box_and_leaves_the_input(tmp_path):
    image = np.zeros((100, 120, 3), dtype=np.uint8)
    drawn = draw_detections(image, one_detection(label=1))
    assert image.max() == 0
    assert tuple(drawn[45, 10]) == class_color(1) and tuple(drawn[70, 35]) == class_color(1)  # left, bottom edges
    assert drawn[45, 35].max() == 0  # inside the box


def test_heatmap_overlay_maps_the_input_grid_back_to_the_image():
    image = np.zeros((60, 120, 3), dtype=np.uint8)
    heat = np.zeros((3, INPUT_SIZE // 4, INPUT_SIZE // 4), dtype=np.float32)
    heat[2, 7, 31] = 1.0  # cell of the right end of the 120x60 image letterboxed to 128x64 (rows 16.. are padding)
    overlay = heatmap_overlay(image, heat, INPUT_SIZE)
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    hot = np.unravel_index(np.argmax(overlay[..., 0].astype(int) - overlay[..., 2]), overlay.shape[:2])
    assert abs(hot[0] - 30) <= 3 and hot[1] >= 112


def test_prediction_grid_tiles_images_with_their_detections():
    images = [make_image(90, 140), make_image(120, 100, seed=1), make_image(64, 64, seed=2)]
    detections = [one_detection(0), {"boxes": torch.tensor([[5.0, 5.0, 50.0, 40.0]]), "scores": torch.tensor([0.8]),
                                     "labels": torch.tensor([2])}, one_detection(1, score=0.1)]
    grid = prediction_grid(images, detections, CLASS_NAMES, tile=128)
    assert grid.shape == (256, 256, 3) and grid.dtype == np.uint8
    assert (grid[128:, 128:] == 0).all()  # the fourth cell is empty
    colours = {tuple(p) for p in grid.reshape(-1, 3)}
    assert class_color(0) in colours and class_color(2) in colours and class_color(1) not in colours  # 0.1 < conf
    assert prediction_grid(images * 4, detections * 4, CLASS_NAMES, max_images=8, tile=64).shape == (192, 192, 3)
    with pytest.raises(ValueError, match="at least one image"):
        prediction_grid([], [], CLASS_NAMES)
