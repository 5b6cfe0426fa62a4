"""The demo loop: read frames, detect, draw, write and show them, with the frame rate and a per-stage timing report.

Sources are :mod:`detector.inference.sources`'s, outputs :mod:`detector.demo.outputs`'s, drawing
:mod:`detector.visualize`'s; the detector is any :class:`detector.inference.detectors.BaseDetector` (torch or
ONNX). The window is OpenCV's (BGR shown, RGB everywhere else); without a display or with a headless OpenCV the demo
runs headless and says why. q, Esc or Ctrl-C stop it cleanly.

Frames are read (decoded) in a thread of their own and written (encoded, with their detection files) in another,
each through a bounded queue, so that decoding and encoding overlap the network; the order of the frames and the
files written are those of the sequential loop (``run_demo(threads=False)``). A file or folder keeps every frame
(the reader waits when it is :data:`READ_AHEAD` frames ahead); a live source (a webcam, a stream) keeps only its
newest frame, the stale ones dropped and counted, so that the demo shows what the camera sees now.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from detector.demo.outputs import ImageSink, ResultFiles, VideoSink
from detector.detections import DEFAULT_SCORE_THRESHOLD, Detections
from detector.errors import DemoError
from detector.inference.detectors import BaseDetector
from detector.inference.pipeline import Passes
from detector.inference.sources import Frame, ImageSource, VideoSource, warn
from detector.inference.track import BUFFER_FRAMES, Tracker
from detector.visualize import annotate, draw_fps

QUIT_KEYS = {ord("q"), 27}  # q and Esc
READ_AHEAD = 4  # frames of a file or folder decoded ahead of the network, at most
WRITE_BEHIND = 4  # annotated frames waiting to be encoded and written, at most
STOP_SECONDS = 10.0  # how long closing waits for the reader's last read (a stream can block) before leaving it
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
    dropped: int = 0  # stale frames of a live source left unread for a newer one
    left_out: int = 0  # files of a source folder that are not images (GIFs, text...)
    stopped: str | None = None  # "quit" (q/Esc) or "interrupted" (Ctrl-C)
    elapsed: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def summary(self) -> str:
        lines = [f"{self.frames} frames in {self.elapsed:.1f} s ({self.frames / max(self.elapsed, 1e-9):.1f} FPS)"
                 + (f", {self.skipped} unreadable skipped" if self.skipped else "")
                 + (f", {self.dropped} stale live frames dropped" if self.dropped else "")
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
    chosen classes), whether to try to show a window, class-agnostic suppression of same-place duplicates, the
    test-time passes (flip, test scales, tiles), and tracks (``track``: ids by ``detector.inference.track.Tracker``
    with ``conf`` as its high threshold; boxes from ``track_low`` (None: the tracker's default) up to ``conf``
    continue tracks; a lost track waits ``track_buffer`` frames)."""

    conf: float = DEFAULT_SCORE_THRESHOLD
    classes: list[int] | None = None
    heatmap: bool = False
    show: bool = False
    agnostic: bool = False
    passes: Passes | None = None  # flip, test scales, tiles (``BaseDetector.passes``)
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


# frame plumbing: reading and writing beside the network ------------------------------------------------------------

_END = object()  # the last item of a queue: no more frames


class _Failed(NamedTuple):
    """What the reader raised, queued at its place among the frames."""

    error: BaseException


class FrameReader:
    """A source's frames read in a thread of their own through a bounded queue: up to ``ahead`` frames of a file or
    folder wait, every one kept in order; a live source (webcam, stream) keeps only its newest frame, a stale one
    replaced and counted in ``dropped``. What the reader raises is raised where the frames are taken, after the
    frames read before it. ``close`` stops the reader, then closes the source."""

    def __init__(self, source: ImageSource | VideoSource, ahead: int = READ_AHEAD):
        self.source = source
        self.live = bool(getattr(source, "live", False))
        self.queue: queue.Queue = queue.Queue(maxsize=1 if self.live else ahead)
        self.dropped = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, name="demo-reader", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for frame in self.source:
                if not self._put(frame, newest=self.live):
                    return
            self._put(_END)
        except BaseException as error:  # raised again in the loop's thread
            self._put(_Failed(error))

    def _put(self, item, newest: bool = False) -> bool:
        """Queue ``item``, waiting for room; ``newest``: at once, in place of the frame not taken yet (a live
        source's). False when the reader is being stopped."""
        if newest:
            try:
                self.queue.get_nowait()
                self.dropped += 1
            except queue.Empty:
                pass
            self.queue.put_nowait(item)  # the only producer: the queue has room now
            return not self.stopping.is_set()
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self) -> Iterator[Frame]:
        while (item := self.queue.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(STOP_SECONDS)
        if self.thread.is_alive():  # blocked in a read: releasing the capture under it could crash OpenCV
            warn(f"warning: reading {getattr(self.source, 'name', 'the source')} did not stop within "
                 f"{STOP_SECONDS:g} s; left open until the program ends")
            return
        self.source.close()


class FrameOutputs:
    """Where a frame goes once drawn: the annotated image to the sink, its detections to the result files, each
    written when handed over (``run_demo(threads=False)``); ``close`` closes both."""

    def __init__(self, sink: VideoSink | ImageSink | None, results: ResultFiles | None):
        self.sink, self.results = sink, results

    def write(self, frame: Frame, annotated: np.ndarray, detections: Detections) -> None:
        if self.sink is not None:
            self.sink.write(frame.file_name, annotated)
        if self.results is not None:
            self.results.write(frame, detections)

    def finish(self) -> None:
        """Every frame handed over is written (raises what writing raised)."""

    def close(self) -> None:
        for resource in (self.sink, self.results):
            if resource is not None:
                resource.close()


class ThreadedOutputs(FrameOutputs):
    """:class:`FrameOutputs` written in a thread of their own, in order, through a bounded queue (up to ``behind``
    frames wait; then ``write`` waits). What writing raises is raised by the next ``write`` or by ``finish``; the
    frames handed over before it are written, none after it. ``finish`` and ``close`` write what is queued first."""

    def __init__(self, sink: VideoSink | ImageSink | None, results: ResultFiles | None, behind: int = WRITE_BEHIND):
        super().__init__(sink, results)
        self.queue: queue.Queue = queue.Queue(maxsize=behind)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._write, name="demo-writer", daemon=True)
        self.thread.start()

    def _write(self) -> None:
        while (job := self.queue.get()) is not _END:
            if self.error is None:  # after an error the queue is only emptied
                try:
                    super().write(*job)
                except BaseException as error:  # raised again in the loop's thread
                    self.error = error

    def write(self, frame: Frame, annotated: np.ndarray, detections: Detections) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((frame, annotated, detections))

    def _drain(self) -> None:
        if self.thread.is_alive():
            self.queue.put(_END)
            self.thread.join()

    def finish(self) -> None:
        self._drain()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self._drain()
        super().close()


# run_demo -----------------------------------------------------------------------------------------------------------

def run_demo(detector: BaseDetector, source: ImageSource | VideoSource, sink: VideoSink | ImageSink | None = None,
             options: DemoOptions | None = None, results: ResultFiles | None = None,
             threads: bool = True) -> DemoReport:
    """Detect, draw and write/show every frame of ``source``, and write its detections to ``results`` (the ones
    drawn: thresholded and filtered as ``options`` say); stops cleanly on q/Esc or Ctrl-C.

    ``threads``: read the frames in a thread of their own (:class:`FrameReader`) and write them in another
    (:class:`ThreadedOutputs`); False: everything in this thread, one step after the other (the same frames and
    files; for comparison). The outputs are always closed, with every frame processed written (a playable video and
    a valid json even after Ctrl-C). Stages timed: read, preprocess, model, decode, draw, output (write and show);
    with threads, read and output are the time the loop waited for a frame and to hand one over. The frame rate is
    shown in the window and the progress line, never written into the output.
    With ``options.track``, one tracker follows the frames in order (its time is the stage ``track``).
    """
    options = options or DemoOptions()
    report = DemoReport()
    window = open_window(options.show)
    progress = tqdm(total=source.length, unit="frame", file=sys.stderr)
    start = time.perf_counter()
    frames = FrameReader(source) if threads else source
    outputs = (ThreadedOutputs if threads else FrameOutputs)(sink, results)
    try:
        try:
            _loop(detector, source, frames, window, progress, report, options, outputs)
        except KeyboardInterrupt:
            report.stopped = "interrupted"
        outputs.finish()
    finally:
        report.elapsed = time.perf_counter() - start
        report.skipped = source.skipped
        report.dropped = getattr(frames, "dropped", 0)
        report.left_out = getattr(source, "left_out", 0)
        for resource in (progress, frames, outputs, window):
            if resource is not None:
                resource.close()
    return report


def _loop(detector: BaseDetector, source, frames, window: Window | None, progress: tqdm, report: DemoReport,
          options: DemoOptions, outputs: FrameOutputs) -> None:
    stages, fps = report.stages, FpsMeter()
    frames = iter(frames)
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
                                        agnostic=options.agnostic, passes=options.passes)
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
        outputs.write(item, annotated, result.detections)
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
