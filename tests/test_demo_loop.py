"""The demo's loop (``detector/demo/loop.py``): tools/demo.py on a video, a folder, bad sources and outputs; Ctrl-C;
the headless check; frames read and written in threads (the same outputs as in sequence, bounded queues, a camera's
newest frame, errors of either thread reaching the user, q); the demo's tiles, test scales and flip; tracking in the
loop (low-score boxes asked for, continuing a track)."""
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers.checkpoints import CLASS_NAMES, INPUT_SIZE, make_checkpoint
from helpers.commands import InterruptAt, run_demo_tool, run_in_process
from helpers.images import make_image, write_video

from detector import Detector
from detector.cli import run
from detector.demo.loop import (HEADLESS_FIX, READ_AHEAD, DemoOptions, FrameReader, display_problem, open_window,
                                run_demo)
from detector.demo.outputs import open_results, open_sink
from detector.errors import DemoError
from detector.inference.sources import Frame, VideoSource, open_source
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


def test_missing_source_or_a_lone_unreadable_image_fails_clearly(checkpoint, tmp_path, capsys):
    # in this process: tests/e2e/test_commands.py runs a missing source through tools/demo.py
    missing = run_in_process(capsys, "demo.py", "--no-show", "--checkpoint", checkpoint, "--source",
                             tmp_path / "missing.mp4")
    assert missing.returncode != 0 and "missing.mp4 does not exist" in missing.stderr
    (tmp_path / "broken.png").write_bytes(b"\x89PNG truncated")
    broken = run_in_process(capsys, "demo.py", "--no-show", "--checkpoint", checkpoint, "--source",
                            tmp_path / "broken.png")
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


# reading and writing in threads -------------------------------------------------------------------------------------

class ListSource:
    """A source of ``count`` tiny frames (``live``: as a webcam), counting the frames read and whether it was closed;
    ``fail_at``: a frame index at which reading raises (as a reader that breaks)."""

    wait_ms, skipped, left_out = 1, 0, 0

    def __init__(self, count, live=False, fail_at=None):
        self.count, self.live, self.fail_at = count, live, fail_at
        self.length = None if live else count
        self.read = 0
        self.closed = False

    def __iter__(self):
        for index in range(self.count):
            if index == self.fail_at:
                raise DemoError(f"cannot read frame {index} of the test source; check the cable")
            self.read += 1
            yield Frame(np.full((8, 8, 3), index % 256, dtype=np.uint8), index, "clip.mp4", index, f"clip_{index:06d}")

    def close(self):
        self.closed = True


class StubDetector:
    """No network: no detections, so a loop over tiny frames takes milliseconds."""

    input_size = 8

    def predict_frame(self, image, *args, **kwargs):
        empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                           np.zeros(0, str))
        return FrameResult(empty, None, {"preprocess": 0.0, "model": 0.0, "decode": 0.0})


class RecordingSink:
    """A sink keeping the first pixel of each frame written; ``fail_at``: the write that raises; ``delay``: seconds
    per write (a slow disk: frames wait in the queue)."""

    def __init__(self, fail_at=None, delay=0.0):
        self.written, self.fail_at, self.delay, self.closed = [], fail_at, delay, False

    def write(self, name, image):
        time.sleep(self.delay)
        if len(self.written) == self.fail_at:
            raise DemoError("cannot write video out.mp4 (the disk is full)")
        self.written.append(int(image[0, 0, 0]))

    def close(self):
        self.closed = True


def demo_threads():
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("demo-")]


def wait_until(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def read_frames(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read())[0]:
        frames.append(frame[1])
    capture.release()
    return frames


def test_threaded_and_sequential_loops_write_the_same_video_json_and_labels(checkpoint, tmp_path):
    detector = Detector.from_checkpoint(checkpoint)
    video = write_video(tmp_path / "in.mp4", frames=6)
    for threads in (True, False):
        out = tmp_path / str(threads)
        source = open_source(str(video))
        results = open_results(source, out / "r.json", out / "labels", detector.category_ids)
        report = run_demo(detector, source, open_sink(out / "out.mp4", source), DemoOptions(), results,
                          threads=threads)
        assert report.frames == 6 and not demo_threads()
    threaded, sequential = read_frames(tmp_path / "True" / "out.mp4"), read_frames(tmp_path / "False" / "out.mp4")
    assert len(threaded) == len(sequential) == 6
    for a, b in zip(threaded, sequential):
        np.testing.assert_array_equal(a, b)
    entries = json.loads((tmp_path / "True" / "r.json").read_text())
    assert entries and entries == json.loads((tmp_path / "False" / "r.json").read_text())
    assert [e["frame"] for e in entries] == sorted(e["frame"] for e in entries)  # in frame order
    labels = sorted((tmp_path / "True" / "labels").iterdir())
    assert [p.name for p in labels] == sorted(p.name for p in (tmp_path / "False" / "labels").iterdir())
    assert len(labels) == 6
    assert all(p.read_text() == (tmp_path / "False" / "labels" / p.name).read_text() for p in labels)


def test_a_file_is_read_at_most_a_few_frames_ahead_and_every_frame_kept_in_order():
    source = ListSource(1000)
    reader = FrameReader(source)
    try:
        wait_until(reader.queue.full)
        time.sleep(0.05)  # an unbounded reader would read on meanwhile
        assert source.read <= READ_AHEAD + 1  # the queue's frames and the one waiting for room
        assert [frame.frame for frame in reader] == list(range(1000))
    finally:
        reader.close()
    assert source.closed and not demo_threads()


def test_a_camera_keeps_only_its_newest_frame_and_counts_the_stale_ones():
    source = ListSource(50, live=True)
    reader = FrameReader(source)
    try:
        wait_until(lambda: reader.dropped == 49)  # all read before the loop takes one: 49 replaced by newer frames
        assert reader.queue.maxsize == 1
        assert [frame.frame for frame in reader] == [49] and reader.dropped == 49
    finally:
        reader.close()
    report = run_demo(StubDetector(), ListSource(50, live=True), RecordingSink())
    assert report.frames + report.dropped == 50


def test_an_error_of_the_reader_stops_the_loop_after_the_frames_before_it():
    source, sink = ListSource(10, fail_at=3), RecordingSink()
    with pytest.raises(DemoError, match="cannot read frame 3 of the test source"):
        run_demo(StubDetector(), source, sink)
    assert sink.written == [0, 1, 2] and sink.closed and source.closed and not demo_threads()


def test_an_error_of_the_reader_reaches_the_user_as_one_error_line(checkpoint, tmp_path, capsys, monkeypatch):
    video = write_video(tmp_path / "in.mp4", frames=6)
    frames = VideoSource.__iter__

    def breaking(self):
        for frame in frames(self):
            if frame.frame == 2:
                raise DemoError(f"cannot decode frame 2 of {self.name}; re-encode the video")
            yield frame

    monkeypatch.setattr(VideoSource, "__iter__", breaking)
    code = run("demo", ["--no-show", "--threads", "1", "--checkpoint", str(checkpoint), "--source", str(video),
                        "--output", str(tmp_path / "out.mp4")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    assert code == 1 and err == [f"error: cannot decode frame 2 of video {video}; re-encode the video"]
    assert read_video(tmp_path / "out.mp4")[0] == 2 and not demo_threads()


def test_an_error_of_the_writer_stops_the_loop_and_reaches_the_caller():
    source, sink = ListSource(100), RecordingSink(fail_at=2)
    with pytest.raises(DemoError, match="cannot write video out.mp4"):
        run_demo(StubDetector(), source, sink)
    assert sink.written == [0, 1] and sink.closed and source.closed and not demo_threads()
    assert source.read < 100  # stopped, not run to the end


def test_quitting_writes_every_frame_shown_and_stops_both_threads(monkeypatch):
    class Window:
        shown = 0

        def show(self, image, wait_ms):
            self.shown += 1
            return self.shown < 3  # q on the third frame

        def close(self):
            pass

    monkeypatch.setattr("detector.demo.loop.open_window", lambda show: Window())
    source, sink = ListSource(100), RecordingSink(delay=0.05)  # frames still queued when q is pressed
    report = run_demo(StubDetector(), source, sink, DemoOptions(show=True))
    assert report.stopped == "quit" and report.frames == 3
    assert sink.written == [0, 1, 2] and sink.closed and source.closed and not demo_threads()


def test_the_demo_runs_its_passes_as_the_detector_does(checkpoint, tmp_path, capsys):
    """``centernet demo --tile --test_scales --flip_test`` in this process: its --save_json holds
    ``Detector.predict`` with the same passes."""
    from detector.cli import run

    image = make_image(100, 150)
    cv2.imwrite(str(tmp_path / "photo.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert run("demo", ["--checkpoint", str(checkpoint), "--source", str(tmp_path / "photo.png"), "--show", "false",
                        "--device", "cpu", "--tile", "96", "--test_scales", "1", "1.25", "--flip_test", "true",
                        "--save_json", str(tmp_path / "found.json")]) == 0
    saved = json.loads((tmp_path / "found.json").read_text())
    # the demo's "auto" runtime keeps the exported network with test scales (it takes any multiple of 32)
    assert re.match(r"device: cpu[^;]*; torch backend, fp32, network run by onnxruntime$",
                    capsys.readouterr().out.splitlines()[0])
    expected = Detector.from_checkpoint(checkpoint, runtime="torch").predict(image, tile=96, scales=[1, 1.25],
                                                                             flip=True)
    assert len(saved) == len(expected) > 0
    np.testing.assert_allclose([d["score"] for d in saved], expected.scores, atol=1e-4)
    np.testing.assert_allclose([d["bbox"][0] for d in saved], expected.boxes[:, 0], atol=1e-2)


# tracks -------------------------------------------------------------------------------------------------------------

class ScriptedDetector:
    """A detector whose frame ``t`` holds one 40 x 40 box moving 5 px a frame, scoring 0.9 for three frames and 0.2
    after (as an object fading behind another), returned above the ``conf`` asked for."""

    input_size = INPUT_SIZE

    def __init__(self):
        self.frame, self.asked = 0, []

    def predict_frame(self, image, conf, classes=None, flip=False, heatmap=False, agnostic=False, passes=None):
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
