"""The demo loop: read frames, detect, draw, write and show them, with the frame rate and a per-stage timing report.

Sources are :mod:`detector.inference.sources`'s, outputs :mod:`detector.demo.outputs`'s, drawing
:mod:`detector.visualize`'s; the detector is any :class:`detector.inference.detectors.BaseDetector` (torch or
ONNX). The window is OpenCV's (BGR shown, RGB everywhere else); without a display or with a headless OpenCV the demo
runs headless and says why. q, Esc or Ctrl-C stop it cleanly.
"""
from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

from detector.demo.outputs import ImageSink, ResultFiles, VideoSink
from detector.detections import DEFAULT_SCORE_THRESHOLD
from detector.errors import DemoError
from detector.inference.detectors import BaseDetector
from detector.inference.sources import ImageSource, VideoSource, warn
from detector.inference.track import BUFFER_FRAMES, Tracker
from detector.visualize import annotate, draw_fps

QUIT_KEYS = {ord("q"), 27}  # q and Esc
HEADLESS_FIX = "pip uninstall -y opencv-python-headless opencv-python && pip install opencv-python"


# display ------------------------------------------------------------------------------------------------------------

def cv2_has_gui() -> bool:
    """False when this OpenCV build has no GUI backend (``opencv-python-headless``)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() != "NONE"
    return True


def display_problem() -> str | None:
    """Why a window cannot be shown (a message for the user), or None when it can."""
    if not cv2_has_gui():
        return (f"OpenCV has no GUI support here (opencv-python-headless is installed), so nothing is shown; "
                f"running headless. To see the video: {HEADLESS_FIX}")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set): running headless"
    return None


class Window:
    """An OpenCV window; ``show`` returns False when the user quits (q, Esc, or closing the window)."""

    def __init__(self, title: str = "detector"):
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as error:
            raise DemoError(f"cannot open a window ({error}); to fix a headless OpenCV: {HEADLESS_FIX}") from error

    def show(self, image: np.ndarray, wait_ms: int) -> bool:
        cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(wait_ms) & 0xFF
        return key not in QUIT_KEYS and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        cv2.destroyWindow(self.title)


def open_window(show: bool) -> Window | None:
    """A window if ``show`` and a display can be used; otherwise None, with a message saying why."""
    if not show:
        return None
    problem = display_problem()
    if problem is None:
        try:
            return Window()
        except DemoError as error:
            problem = f"{error}; running headless"
    warn(problem)
    return None


# the loop -----------------------------------------------------------------------------------------------------------

@dataclass
class DemoReport:
    """What a demo run did: frames processed and skipped, whether it was stopped, seconds per stage."""

    frames: int = 0
    skipped: int = 0
    left_out: int = 0  # files of a source folder that are not images (GIFs, text...)
    stopped: str | None = None  # "quit" (q/Esc) or "interrupted" (Ctrl-C)
    elapsed: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def summary(self) -> str:
        lines = [f"{self.frames} frames in {self.elapsed:.1f} s ({self.frames / max(self.elapsed, 1e-9):.1f} FPS)"
                 + (f", {self.skipped} unreadable skipped" if self.skipped else "")
                 + (f", {self.left_out} non-image file{'s' * (self.left_out != 1)} left out" if self.left_out else "")
                 + (f", stopped ({self.stopped})" if self.stopped else "")]
        total = sum(self.stages.values()) or 1.0
        for stage, seconds in self.stages.items():
            lines.append(f"  {stage:<10} {1000 * seconds / max(self.frames, 1):8.2f} ms/frame "
                         f"{100 * seconds / total:5.1f}%")
        return "\n".join(lines)


@dataclass
class DemoOptions:
    """What the demo draws and how: score threshold, class filter (indices; None: all), heatmap overlay (of the
    chosen classes), whether to try to show a window, class-agnostic suppression of same-place duplicates, and
    tracks (``track``: ids by ``detector.inference.track.Tracker`` with ``conf`` as its high threshold; boxes from
    ``track_low`` (None: the tracker's default) up to ``conf`` continue tracks; a lost track waits ``track_buffer``
    frames)."""

    conf: float = DEFAULT_SCORE_THRESHOLD
    classes: list[int] | None = None
    heatmap: bool = False
    show: bool = False
    agnostic: bool = False
    track: bool = False
    track_low: float | None = None
    track_buffer: int = BUFFER_FRAMES


class FpsMeter:
    """Frames per second from the time between calls, smoothed (exponential moving average)."""

    def __init__(self, smoothing: float = 0.9):
        self.smoothing = smoothing
        self.last: float | None = None
        self.fps: float | None = None

    def tick(self) -> float | None:
        now = time.perf_counter()
        if self.last is not None:
            current = 1.0 / max(now - self.last, 1e-9)
            self.fps = current if self.fps is None else self.smoothing * self.fps + (1 - self.smoothing) * current
        self.last = now
        return self.fps


def run_demo(detector: BaseDetector, source: ImageSource | VideoSource, sink: VideoSink | ImageSink | None = None,
             options: DemoOptions | None = None, results: ResultFiles | None = None) -> DemoReport:
    """Detect, draw and write/show every frame of ``source``, and write its detections to ``results`` (the ones
    drawn: thresholded and filtered as ``options`` say); stops cleanly on q/Esc or Ctrl-C.

    The outputs are always closed (a playable video and a valid json even after Ctrl-C). Stages timed: read,
    preprocess, model, decode, draw, output (write and show). The frame rate is shown in the window and the
    progress line, never written into the output. With ``options.track``, one tracker follows the frames in order
    (its time is the stage ``track``).
    """
    options = options or DemoOptions()
    report = DemoReport()
    window = open_window(options.show)
    progress = tqdm(total=source.length, unit="frame", file=sys.stderr)
    start = time.perf_counter()
    try:
        _loop(detector, source, sink, window, progress, report, options, results)
    except KeyboardInterrupt:
        report.stopped = "interrupted"
    finally:
        report.elapsed = time.perf_counter() - start
        report.skipped = source.skipped
        report.left_out = getattr(source, "left_out", 0)
        for resource in (progress, source, sink, results, window):
            if resource is not None:
                resource.close()
    return report


def _loop(detector: BaseDetector, source, sink, window: Window | None, progress: tqdm, report: DemoReport,
          options: DemoOptions, results: ResultFiles | None) -> None:
    stages, fps = report.stages, FpsMeter()
    frames = iter(source)
    tracker = Tracker(options.conf, options.track_low, buffer=options.track_buffer) if options.track else None
    conf = tracker.low if tracker is not None else options.conf
    while True:
        tick = time.perf_counter()
        item = next(frames, None)
        if item is None:
            return
        image = item.image
        stages["read"] += time.perf_counter() - tick
        result = detector.predict_frame(image, conf, options.classes, heatmap=options.heatmap,
                                        agnostic=options.agnostic)
        for stage, seconds in result.times.items():
            stages[stage] += seconds
        if tracker is not None:
            tick = time.perf_counter()
            result.detections = tracker.update(result.detections)
            stages["track"] += time.perf_counter() - tick
        tick = time.perf_counter()
        annotated = annotate(image, result, detector.input_size, options.classes)
        rate = fps.tick()
        stages["draw"] += time.perf_counter() - tick
        tick = time.perf_counter()
        if sink is not None:
            sink.write(item.file_name, annotated)
        if results is not None:
            results.write(item, result.detections)
        keep_going = window is None or window.show(annotated if rate is None else draw_fps(annotated, rate),
                                                   source.wait_ms)
        stages["output"] += time.perf_counter() - tick
        report.frames += 1
        if rate is not None:
            progress.set_postfix_str(f"{rate:.1f} FPS", refresh=False)
        progress.update(report.frames + source.skipped - progress.n)
        if not keep_going:
            report.stopped = "quit"
            return
