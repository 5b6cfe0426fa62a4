"""The demo: read frames from a webcam, a video, a stream, an image or a folder, detect, draw, and write them to a
video or a folder and/or show them in a window, with the frame rate and a per-stage timing report.

Every image is ``[H, W, 3]`` uint8 RGB; OpenCV's BGR appears only where frames are read from a capture and
written to a file or a window. Drawing is :mod:`detector.visualize`; the detector is any
:class:`detector.predictor.BaseDetector` (torch or ONNX).
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm import tqdm

from detector.detections import DEFAULT_SCORE_THRESHOLD
from detector.errors import DetectorError
from detector.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, ImageReadError, read_image
from detector.predictor import BaseDetector
from detector.visualize import annotate, draw_fps

# Consecutive failed reads after which a camera or stream (or a video file before its last frame) is given up.
MAX_FAILED_READS = 10
QUIT_KEYS = {ord("q"), 27}  # q and Esc
HEADLESS_FIX = "pip uninstall -y opencv-python-headless opencv-python && pip install opencv-python"


class DemoError(DetectorError, RuntimeError):
    """A demo that cannot start (source, output, display); the message names the culprit."""


# sources ------------------------------------------------------------------------------------------------------------

def _warn(message: str) -> None:
    """Print to stderr without breaking the progress bar."""
    tqdm.write(message, file=sys.stderr)


class ImageSource:
    """Image files, read in order with ``read_image``; an unreadable file is reported and skipped."""

    live = False
    wait_ms = 0  # a shown image stays until a key is pressed

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.length = len(paths)
        self.skipped = 0

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for path in self.paths:
            try:
                yield path.name, read_image(path)
            except ImageReadError as error:
                self.skipped += 1
                _warn(f"warning: {error}; skipped")

    def close(self) -> None:
        pass


class VideoSource:
    """A ``cv2.VideoCapture`` (webcam index, video file or stream URL) yielding ``(frame name, RGB frame)``."""

    wait_ms = 1

    def __init__(self, capture: cv2.VideoCapture, name: str, is_file: bool):
        self.capture = capture
        self.name = name
        self.is_file = is_file
        self.live = not is_file
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.length = count if is_file and count > 0 else None
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and fps > 0 else 30.0
        self.skipped = 0

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        index, failures = 0, 0
        while failures < MAX_FAILED_READS:
            ok, frame = self.capture.read()
            if ok and frame is not None:
                failures = 0
                yield f"{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                index += 1
            elif self._ended():
                return
            else:
                failures += 1
                self.skipped += 1
                _warn(f"warning: cannot read frame {index} of {self.name}; trying the next one")
        _warn(f"warning: {MAX_FAILED_READS} failed reads in a row from {self.name}; stopping")

    def _ended(self) -> bool:
        """A failed read of a file at (or past) its last frame is its end."""
        if not self.is_file:
            return False
        return self.length is None or self.capture.get(cv2.CAP_PROP_POS_FRAMES) >= self.length

    def close(self) -> None:
        self.capture.release()


def open_source(spec: str) -> ImageSource | VideoSource:
    """``spec``: a webcam index (``"0"``), a stream URL (``scheme://...``), a video file, an image file or a folder
    of images. Raises :class:`DemoError` when it cannot be opened (missing, bad index, empty folder)."""
    if spec.isdigit():
        return _open_capture(cv2.VideoCapture(int(spec)), f"webcam {spec}", is_file=False)
    if "://" in spec:
        return _open_capture(cv2.VideoCapture(spec), f"stream {spec}", is_file=False)
    path = Path(spec)
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DemoError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImageSource(paths)
    if not path.is_file():
        raise DemoError(f"source {spec} does not exist (expected a webcam index, a URL, a video, an image or a "
                        f"folder of images)")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource([path])
    return _open_capture(cv2.VideoCapture(str(path)), f"video {path}", is_file=True)


def _open_capture(capture: cv2.VideoCapture, name: str, is_file: bool) -> VideoSource:
    if not capture.isOpened():
        capture.release()
        raise DemoError(f"cannot open {name}")
    return VideoSource(capture, name, is_file)


# outputs ------------------------------------------------------------------------------------------------------------

class VideoSink:
    """An mp4v video at the source's frame rate; opened at the first frame, with that frame's size."""

    def __init__(self, path: Path, fps: float):
        self.path = path
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None

    def write(self, name: str, image: np.ndarray) -> None:
        if self.writer is None:
            H, W = image.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (W, H))
            if not self.writer.isOpened():
                raise DemoError(f"cannot write video {self.path} (mp4v, {W}x{H}, {self.fps:g} fps)")
        self.writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


class ImageSink:
    """Annotated images written into a folder under their source file names, or, with ``file``, the one image of a
    single-image source written to that file."""

    def __init__(self, folder: Path, file: Path | None = None):
        self.folder = folder
        self.file = file

    def write(self, name: str, image: np.ndarray) -> None:
        path = self.file or self.folder / name
        if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise DemoError(f"cannot write image {path}")

    def close(self) -> None:
        pass


def open_sink(output: str | Path | None, source: ImageSource | VideoSource) -> VideoSink | ImageSink | None:
    """The output for ``source``: a video file for a video source; for image sources a folder, or an image file
    (a name with an image suffix) for a single image. Checks now that it can be written (raises
    :class:`DemoError`), so that no work is lost at the end."""
    if output is None:
        return None
    output = Path(output)
    if isinstance(source, ImageSource):
        if output.suffix.lower() in VIDEO_SUFFIXES:
            raise DemoError(f"--output {output}: for an image or folder source the output is a folder of images")
        if output.suffix.lower() in IMAGE_SUFFIXES:
            if source.length != 1:
                raise DemoError(f"--output {output}: an image file holds one image, the source has "
                                f"{source.length}; give a folder")
            _check_writable(output.parent)
            return ImageSink(output.parent, file=output)
        _check_writable(output)
        return ImageSink(output)
    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise DemoError(f"--output {output}: for a video source the output is a video file "
                        f"({', '.join(sorted(VIDEO_SUFFIXES))})")
    _check_writable(output.parent)
    return VideoSink(output, source.fps)


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise DemoError(f"cannot write to output folder {folder}: {error}") from error


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
    _warn(problem)
    return None


# the loop -----------------------------------------------------------------------------------------------------------

@dataclass
class DemoReport:
    """What a demo run did: frames processed and skipped, whether it was stopped, seconds per stage."""

    frames: int = 0
    skipped: int = 0
    stopped: str | None = None  # "quit" (q/Esc) or "interrupted" (Ctrl-C)
    elapsed: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def summary(self) -> str:
        lines = [f"{self.frames} frames in {self.elapsed:.1f} s ({self.frames / max(self.elapsed, 1e-9):.1f} FPS)"
                 + (f", {self.skipped} unreadable skipped" if self.skipped else "")
                 + (f", stopped ({self.stopped})" if self.stopped else "")]
        total = sum(self.stages.values()) or 1.0
        for stage, seconds in self.stages.items():
            lines.append(f"  {stage:<10} {1000 * seconds / max(self.frames, 1):8.2f} ms/frame "
                         f"{100 * seconds / total:5.1f}%")
        return "\n".join(lines)


@dataclass
class DemoOptions:
    """What the demo draws and how: score threshold, class filter (indices; None: all), heatmap overlay (of the
    chosen classes), whether to try to show a window, and class-agnostic suppression of same-place duplicates."""

    conf: float = DEFAULT_SCORE_THRESHOLD
    classes: list[int] | None = None
    heatmap: bool = False
    show: bool = False
    agnostic: bool = False


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
             options: DemoOptions | None = None) -> DemoReport:
    """Detect, draw and write/show every frame of ``source``; stops cleanly on q/Esc or Ctrl-C.

    The output is always closed (a playable video even after Ctrl-C). Stages timed: read, preprocess, model,
    decode, draw, output (write and show). The frame rate is shown in the window and the progress line, never
    written into the output.
    """
    options = options or DemoOptions()
    report = DemoReport()
    window = open_window(options.show)
    progress = tqdm(total=source.length, unit="frame", file=sys.stderr)
    start = time.perf_counter()
    try:
        _loop(detector, source, sink, window, progress, report, options)
    except KeyboardInterrupt:
        report.stopped = "interrupted"
    finally:
        report.elapsed = time.perf_counter() - start
        report.skipped = source.skipped
        for resource in (progress, source, sink, window):
            if resource is not None:
                resource.close()
    return report


def _loop(detector: BaseDetector, source, sink, window: Window | None, progress: tqdm, report: DemoReport,
          options: DemoOptions) -> None:
    stages, fps = report.stages, FpsMeter()
    frames = iter(source)
    while True:
        tick = time.perf_counter()
        item = next(frames, None)
        if item is None:
            return
        name, image = item
        stages["read"] += time.perf_counter() - tick
        result = detector.predict_frame(image, options.conf, options.classes, heatmap=options.heatmap,
                                        agnostic=options.agnostic)
        for stage, seconds in result.times.items():
            stages[stage] += seconds
        tick = time.perf_counter()
        annotated = annotate(image, result, detector.input_size, options.classes)
        rate = fps.tick()
        stages["draw"] += time.perf_counter() - tick
        tick = time.perf_counter()
        if sink is not None:
            sink.write(name, annotated)
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
