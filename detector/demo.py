"""The demo: read frames from a webcam, a video, a stream, an image or a folder, detect, draw, and write them to a
video or a folder and/or show them in a window, with the frame rate and a per-stage timing report; optionally the
detections as files a program reads (a COCO-style results json, YOLO label txt files: :mod:`detector.results`).
No output may overwrite a source file.

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
from typing import Iterator, NamedTuple, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from detector.detections import DEFAULT_SCORE_THRESHOLD, Detections
from detector.errors import DemoError
from detector.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, ImageReadError, read_image
from detector.predictor import BaseDetector
from detector.results import CocoResultsWriter, YoloTxtWriter
from detector.visualize import annotate, draw_fps

# Consecutive failed reads after which a camera or stream (or a video file before its last frame) is given up.
MAX_FAILED_READS = 10
QUIT_KEYS = {ord("q"), 27}  # q and Esc
HEADLESS_FIX = "pip uninstall -y opencv-python-headless opencv-python && pip install opencv-python"


# sources ------------------------------------------------------------------------------------------------------------

def _warn(message: str) -> None:
    """Print to stderr without breaking the progress bar."""
    tqdm.write(message, file=sys.stderr)


class Frame(NamedTuple):
    """One image of a source. ``image``: ``[H, W, 3]`` uint8 RGB. ``image_id``: its index in the source (in the
    sorted file list, unreadable files counted; or the frame index). ``file_name``: the image's file name, or the
    video's (``webcam<N>``, or a stream's URL). ``frame``: the frame index of a video, webcam or stream (None for an
    image file). ``stem``: its name for per-image files (the image's stem, or ``<video stem>_<frame:06d>``)."""

    image: np.ndarray
    image_id: int
    file_name: str
    frame: int | None
    stem: str


class ImageSource:
    """Image files, read in order with ``read_image``; an unreadable file is reported and skipped."""

    live = False
    wait_ms = 0  # a shown image stays until a key is pressed

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.length = len(paths)
        self.skipped = 0

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            try:
                yield Frame(read_image(path), index, path.name, None, path.stem)
            except ImageReadError as error:
                self.skipped += 1
                _warn(f"warning: {error}; skipped")

    def close(self) -> None:
        pass


class VideoSource:
    """A ``cv2.VideoCapture`` (webcam index, video file or stream URL) yielding :class:`Frame` s; ``name``
    describes it in messages, ``file_name`` and ``stem`` name its frames, ``path`` is the video file (or None)."""

    wait_ms = 1

    def __init__(self, capture: cv2.VideoCapture, name: str, is_file: bool, file_name: str = "video",
                 stem: str = "video", path: Path | None = None):
        self.capture = capture
        self.name = name
        self.file_name, self.stem, self.path = file_name, stem, path
        self.is_file = is_file
        self.live = not is_file
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.length = count if is_file and count > 0 else None
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and fps > 0 else 30.0
        self.skipped = 0

    def __iter__(self) -> Iterator[Frame]:
        index, failures = 0, 0
        while failures < MAX_FAILED_READS:
            ok, frame = self.capture.read()
            if ok and frame is not None:
                failures = 0
                yield Frame(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), index, self.file_name, index,
                            f"{self.stem}_{index:06d}")
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
        return _open_capture(cv2.VideoCapture(int(spec)), f"webcam {spec}", False, f"webcam{spec}", f"webcam{spec}")
    if "://" in spec:
        return _open_capture(cv2.VideoCapture(spec), f"stream {spec}", False, spec, "stream")
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
    return _open_capture(cv2.VideoCapture(str(path)), f"video {path}", True, path.name, path.stem, path)


def _open_capture(capture: cv2.VideoCapture, name: str, is_file: bool, file_name: str, stem: str,
                  path: Path | None = None) -> VideoSource:
    if not capture.isOpened():
        capture.release()
        raise DemoError(f"cannot open {name}")
    return VideoSource(capture, name, is_file, file_name, stem, path)


def source_files(source: ImageSource | VideoSource) -> list[Path]:
    """The files ``source`` reads (none for a webcam or stream): what no output may overwrite."""
    if isinstance(source, ImageSource):
        return list(source.paths)
    return [source.path] if source.path is not None else []


def _file_ids(source: ImageSource | VideoSource) -> dict[tuple[int, int], Path]:
    """The source's files by identity (device, inode), as ``os.path.samefile`` compares them: stat once each."""
    ids = {}
    for file in source_files(source):
        try:
            info = file.stat()
        except OSError:
            continue
        ids[(info.st_dev, info.st_ino)] = file
    return ids


def _overwritten(path: Path, sources: dict[tuple[int, int], Path]) -> Path | None:
    """The source file (of :func:`_file_ids`) that writing ``path`` would overwrite, or None."""
    try:
        info = path.stat()
    except OSError:  # nothing there yet
        return None
    return sources.get((info.st_dev, info.st_ino))


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
    _refuse_overwrite(output, source)
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


def _refuse_overwrite(output: Path, source: ImageSource | VideoSource) -> None:
    """A :class:`DemoError` when ``--output`` is a source file, or the folder of source images it would write over."""
    sources = _file_ids(source)
    if (file := _overwritten(output, sources)) is not None:
        raise DemoError(f"--output {output} is the source {file}: writing it would destroy the original; give "
                        f"another file, e.g. --output {file.with_stem(file.stem + '_annotated').name}")
    if isinstance(source, ImageSource) and output.suffix.lower() not in IMAGE_SUFFIXES:
        hits = [file for file in source.paths if _overwritten(output / file.name, sources) is not None]
        if hits:
            raise DemoError(f"--output {output} is the source folder: the annotated images would overwrite "
                            f"{len(hits)} source image(s) such as {hits[0]}; give another folder, e.g. "
                            f"--output {output.resolve().name or 'annotated'}_annotated")


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise DemoError(f"cannot write to output folder {folder}: {error}") from error


class ResultFiles:
    """The detections of each frame as files, written as the frames come: ``json`` (one COCO-style results file)
    and/or ``txt`` (one YOLO label file per frame, named by :attr:`Frame.stem`)."""

    def __init__(self, json: CocoResultsWriter | None = None, txt: YoloTxtWriter | None = None):
        self.json = json
        self.txt = txt

    def write(self, frame: Frame, detections: Detections) -> None:
        if self.json is not None:
            self.json.write(detections, frame.image_id, frame.file_name, frame.frame)
        if self.txt is not None:
            H, W = frame.image.shape[:2]
            self.txt.write(detections, frame.stem, W, H)

    def close(self) -> None:
        for writer in (self.json, self.txt):
            if writer is not None:
                writer.close()


def open_results(source: ImageSource | VideoSource, save_json: str | Path | None = None,
                 save_txt: str | Path | None = None, category_ids: Sequence[int] | None = None,
                 txt_scores: bool = True) -> ResultFiles | None:
    """The ``--save_json`` file and ``--save_txt`` folder, checked and opened now (raises :class:`DemoError`
    naming the flag) so that no work is lost at the end; None when neither is asked for. ``category_ids``: the
    dataset's id of each label (the detector's), required for the json."""
    if save_json is None and save_txt is None:
        return None
    json_writer = txt_writer = None
    if save_json is not None:
        save_json = Path(save_json)
        if category_ids is None:
            raise DemoError(f"--save_json {save_json}: the model does not record the dataset's category ids (an "
                            f"ONNX file exported before 2026-12-01); export it again with centernet export")
        if (file := _overwritten(save_json, _file_ids(source))) is not None:
            raise DemoError(f"--save_json {save_json} is the source {file}; give another file, e.g. "
                            f"--save_json results.json")
        json_writer = _open_writer("--save_json", save_json, lambda: CocoResultsWriter(save_json, category_ids))
    if save_txt is not None:
        _refuse_shared_stems(source)
        txt_writer = _open_writer("--save_txt", save_txt, lambda: YoloTxtWriter(save_txt, txt_scores))
    return ResultFiles(json_writer, txt_writer)


def _open_writer(flag: str, path: str | Path, make):
    try:
        return make()
    except OSError as error:
        raise DemoError(f"{flag} {path}: cannot write there ({error}); give a writable path") from error


def _refuse_shared_stems(source: ImageSource | VideoSource) -> None:
    """Two images with one stem (``a.jpg``, ``a.png``) would write one ``a.txt``."""
    if isinstance(source, ImageSource):
        seen: dict[str, Path] = {}
        for path in source.paths:
            if path.stem in seen:
                raise DemoError(f"--save_txt: {seen[path.stem]} and {path} would both write {path.stem}.txt; "
                                f"rename one of them")
            seen[path.stem] = path


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
             options: DemoOptions | None = None, results: ResultFiles | None = None) -> DemoReport:
    """Detect, draw and write/show every frame of ``source``, and write its detections to ``results`` (the ones
    drawn: thresholded and filtered as ``options`` say); stops cleanly on q/Esc or Ctrl-C.

    The outputs are always closed (a playable video and a valid json even after Ctrl-C). Stages timed: read,
    preprocess, model, decode, draw, output (write and show). The frame rate is shown in the window and the
    progress line, never written into the output.
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
        for resource in (progress, source, sink, results, window):
            if resource is not None:
                resource.close()
    return report


def _loop(detector: BaseDetector, source, sink, window: Window | None, progress: tqdm, report: DemoReport,
          options: DemoOptions, results: ResultFiles | None) -> None:
    stages, fps = report.stages, FpsMeter()
    frames = iter(source)
    while True:
        tick = time.perf_counter()
        item = next(frames, None)
        if item is None:
            return
        image = item.image
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
