"""Drawing detections and heatmaps, a grid of predictions for TensorBoard, and the video/image demo loop.

Every image here is ``[H, W, 3]`` uint8 RGB; OpenCV's BGR appears only where frames are read from a capture and
written to a file or a window.
"""
from __future__ import annotations

import colorsys
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from detector.data.common import ImageReadError, read_image
from detector.predictor import BaseDetector, Detections, FrameResult, as_image
from detector.preprocess import letterbox, letterbox_boxes, letterbox_shape

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v"}
GOLDEN_RATIO = 0.618033988749895
# Consecutive failed reads after which a camera or stream (or a video file before its last frame) is given up.
MAX_FAILED_READS = 10
QUIT_KEYS = {ord("q"), 27}  # q and Esc
HEADLESS_FIX = "pip uninstall -y opencv-python-headless opencv-python && pip install opencv-python"


class DemoError(RuntimeError):
    """A demo that cannot start (source, output, display); the message names the culprit."""


# drawing ------------------------------------------------------------------------------------------------------------

def class_color(label: int) -> tuple[int, int, int]:
    """A bright RGB colour for class ``label``, the same on every run (hues spaced by the golden ratio)."""
    r, g, b = colorsys.hsv_to_rgb((label * GOLDEN_RATIO) % 1.0, 0.75, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def draw_label(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    """Write ``text`` on a filled box of ``color`` whose bottom-left corner is at (x, y), in place."""
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
    (w, h), baseline = cv2.getTextSize(text, font, scale, thickness)
    y = max(y, h + baseline)
    cv2.rectangle(image, (x, y - h - baseline), (x + w, y), color, cv2.FILLED)
    ink = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)
    cv2.putText(image, text, (x, y - baseline), font, scale, ink, thickness, cv2.LINE_AA)


def draw_detections(image: np.ndarray, detections: Detections) -> np.ndarray:
    """A copy of the RGB ``image`` with each box (xyxy in the image's pixels), class name and score drawn."""
    out = image.copy()
    thickness = max(1, round(min(image.shape[:2]) / 320))
    for box, score, label, name in zip(detections.boxes, detections.scores, detections.labels, detections.names):
        x1, y1, x2, y2 = (int(round(v)) for v in box.tolist())
        color = class_color(int(label))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        draw_label(out, f"{name} {score:.2f}", x1, y1, color)
    return out


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray, input_size: int, alpha: float = 0.45) -> np.ndarray:
    """Blend the class heatmaps over the RGB ``image`` (max over classes, JET colour map).

    ``heatmap [C, h, w]`` float probabilities on the output grid of ``image`` letterboxed at ``input_size``.
    """
    H, W = image.shape[:2]
    new_w, new_h, input_w, input_h = letterbox_shape(W, H, input_size)
    heat = cv2.resize(heatmap.max(axis=0), (input_w, input_h), interpolation=cv2.INTER_LINEAR)[:new_h, :new_w]
    heat = cv2.resize(heat, (W, H), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 1 - alpha, cv2.cvtColor(colored, cv2.COLOR_BGR2RGB), alpha, 0)


def prediction_grid(images: Sequence[np.ndarray], detections: Sequence[Detections | Mapping],
                    class_names: Sequence[str], max_images: int = 8, conf: float = 0.3,
                    tile: int = 256) -> np.ndarray:
    """Up to ``max_images`` images with their detections, letterboxed into ``tile x tile`` cells of a grid.

    Args:
        images: ``[H, W, 3]`` uint8 RGB arrays (sizes may differ).
        detections: per image, :class:`Detections` or a mapping with ``boxes [K, 4]`` xyxy in that image's pixels,
            ``scores [K]`` and ``labels [K]`` (numpy arrays or tensors); only scores ``>= conf`` are drawn.
        class_names: names by label.
        tile: cell size in pixels (a multiple of 32).

    Returns ``[rows * tile, cols * tile, 3]`` uint8 RGB, ``cols = ceil(sqrt(n))``, for TensorBoard's
    ``add_image(..., dataformats="HWC")``.
    """
    count = min(len(images), len(detections), max_images)
    if count < 1:
        raise ValueError(f"prediction_grid needs at least one image, got {len(images)} images, "
                         f"{len(detections)} detections, max_images={max_images}")
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    grid = np.zeros((rows * tile, cols * tile, 3), dtype=np.uint8)
    for i in range(count):
        row, col = divmod(i, cols)
        grid[row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = _grid_cell(
            as_image(images[i]), _as_detections(detections[i], class_names), conf, tile)
    return grid


def _as_detections(detections: Detections | Mapping, class_names: Sequence[str]) -> Detections:
    if isinstance(detections, Detections):
        return detections
    return Detections.from_arrays(detections["boxes"], detections["scores"], detections["labels"], class_names)


def _grid_cell(image: np.ndarray, detections: Detections, conf: float, tile: int) -> np.ndarray:
    boxed, meta = letterbox(image, tile)
    kept = detections.select(detections.scores >= conf)
    boxes = letterbox_boxes(torch.from_numpy(kept.boxes), torch.from_numpy(meta)).numpy()
    return draw_detections(boxed, Detections(boxes, kept.scores, kept.labels, kept.names))


def annotate(image: np.ndarray, result: FrameResult, input_size: int, fps: float | None = None) -> np.ndarray:
    """The demo's frame: optional heatmap overlay, the detections, and the frame rate in the top-left corner."""
    if result.heatmap is not None:
        image = heatmap_overlay(image, result.heatmap, input_size)
    out = draw_detections(image, result.detections)
    if fps is not None:
        draw_label(out, f"{fps:.1f} FPS", 0, 0, (0, 0, 0))
    return out


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
    """Annotated images written into a folder under their source file names."""

    def __init__(self, folder: Path):
        self.folder = folder

    def write(self, name: str, image: np.ndarray) -> None:
        path = self.folder / name
        if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise DemoError(f"cannot write image {path}")

    def close(self) -> None:
        pass


def open_sink(output: str | Path | None, source: ImageSource | VideoSource) -> VideoSink | ImageSink | None:
    """The output for ``source``: a video file for a video source, a folder for image sources. Checks now that
    it can be written (raises :class:`DemoError`), so that no work is lost at the end."""
    if output is None:
        return None
    output = Path(output)
    if isinstance(source, ImageSource):
        if output.suffix.lower() in VIDEO_SUFFIXES:
            raise DemoError(f"--output {output}: for an image or folder source the output is a folder of images")
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
    """What the demo draws and how: score threshold, class filter (indices; None: all), heatmap overlay, and
    whether to try to show a window."""

    conf: float = 0.3
    classes: list[int] | None = None
    heatmap: bool = False
    show: bool = False


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
    decode, draw, output (write and show).
    """
    options = options or DemoOptions()
    report = DemoReport()
    window = open_window(options.show)
    progress = tqdm(total=source.length, unit="frame", disable=source.live, file=sys.stderr)
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
        result = detector.predict_frame(image, options.conf, options.classes, heatmap=options.heatmap)
        for stage, seconds in result.times.items():
            stages[stage] += seconds
        tick = time.perf_counter()
        annotated = annotate(image, result, detector.input_size, fps.tick())
        stages["draw"] += time.perf_counter() - tick
        tick = time.perf_counter()
        if sink is not None:
            sink.write(name, annotated)
        keep_going = window is None or window.show(annotated, source.wait_ms)
        stages["output"] += time.perf_counter() - tick
        report.frames += 1
        progress.update(report.frames + source.skipped - progress.n)
        if not keep_going:
            report.stopped = "quit"
            return
