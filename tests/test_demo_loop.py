"""The demo's loop (``detector/demo/loop.py``): tools/demo.py on a video, a folder, bad sources and outputs; Ctrl-C;
the headless check; tracking in the loop (low-score boxes asked for, continuing a track)."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers.checkpoints import CLASS_NAMES, INPUT_SIZE, make_checkpoint
from helpers.commands import InterruptAt, run_demo_tool
from helpers.images import make_image, write_video

from detector import Detector
from detector.demo.loop import HEADLESS_FIX, DemoOptions, display_problem, open_window, run_demo
from detector.demo.outputs import open_results, open_sink
from detector.errors import DemoError
from detector.inference.sources import open_source
from detector.detections import Detections, FrameResult
from detector.visualize import class_color, draw_detections, heatmap_overlay, prediction_grid

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt")


def read_video(path):
    """(frame count actually decoded, width, height, fps)."""
    capture = cv2.VideoCapture(str(path))
    size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps, count = capture.get(cv2.CAP_PROP_FPS), 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count, *size, fps


# the tool -----------------------------------------------------------------------------------------------------------

@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# tracks -------------------------------------------------------------------------------------------------------------

class ScriptedDetector:
    """A detector whose frame ``t`` holds one 40 x 40 box moving 5 px a frame, scoring 0.9 for three frames and 0.2
    after (as an object fading behind another), returned above the ``conf`` asked for."""

    input_size = INPUT_SIZE

    def __init__(self):
        self.frame, self.asked = 0, []

    def predict_frame(self, image, conf, classes=None, flip=False, heatmap=False, agnostic=False):
        x = 5.0 * self.frame
        score = 0.9 if self.frame < 3 else 0.2
        self.frame += 1
        self.asked.append(conf)
        found = Detections(np.array([[x, 10, x + 40, 50]], dtype=np.float32), np.array([score], dtype=np.float32),
                           np.array([0]), np.array(["cat"]))
        return FrameResult(found.select(found.scores >= conf), None, {"model": 0.0})


def test_tracking_asks_for_low_score_boxes_and_they_continue_the_track(tmp_path):
    source = open_source(str(write_video(tmp_path / "in.mp4", frames=6)))
    detector = ScriptedDetector()
    results = open_results(source, None, None, save_mot=tmp_path / "tracks.txt")
    report = run_demo(detector, source, None, DemoOptions(conf=0.5, track=True), results)
    assert report.frames == 6 and "track" in report.stages
    assert detector.asked == [0.1] * 6  # ByteTrack's low threshold, not --conf
    rows = [line.split(",") for line in (tmp_path / "tracks.txt").read_text().splitlines()]
    assert [(row[0], row[1], row[6]) for row in rows] == [
        (str(t + 1), "1", "0.90000" if t < 3 else "0.20000") for t in range(6)]
