"""What a detector can be fed: an image path or array, a folder, a glob, a video, a stream, a webcam, an iterable.

Two readers over one set of rules (a folder is its image files, sorted by name; a video file is its frames):

- :func:`iter_images` yields ``(name, image or path)`` lazily, for ``Detector.predict_many`` and int8 calibration
  (images, a folder, a glob, a video file, or any iterable of arrays and paths);
- :func:`open_source` opens what the demo reads (a webcam index, a stream URL, a video file, an image or a folder)
  as an :class:`ImageSource` or :class:`VideoSource` of :class:`Frame` s, tolerating unreadable files and frames.

Every image is ``[H, W, 3]`` uint8 RGB; OpenCV's BGR appears only where a capture's frames are read.
"""
from __future__ import annotations

import glob
import math
import sys
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

from detector.errors import DemoError
from detector.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, ImageInput, ImageReadError, read_image

# Consecutive failed reads after which a camera or stream (or a video file before its last frame) is given up.
MAX_FAILED_READS = 10


def warn(message: str) -> None:
    """Print to stderr without breaking a progress bar."""
    tqdm.write(message, file=sys.stderr)


def image_files(folder: Path) -> list[Path]:
    """The image files of ``folder`` (by suffix, ``images.IMAGE_SUFFIXES``), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def other_files(folder: Path) -> list[Path]:
    """The files of ``folder`` that :func:`image_files` leaves out (GIFs, videos, text), hidden files excepted."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in IMAGE_SUFFIXES)


def describe_files(files: list[Path]) -> str:
    """``3 files (a.gif, b.gif, notes.txt)``: a count and the first names."""
    shown = ", ".join(p.name for p in files[:3]) + (", ..." if len(files) > 3 else "")
    return f"{len(files)} file{'s' if len(files) != 1 else ''} ({shown})"


# predict_many and calibration ---------------------------------------------------------------------------------------

def iter_images(source: str | Path | Iterable[ImageInput]) -> Iterator[tuple[str | int, ImageInput]]:
    """``(name, image or path)`` for each image of ``source`` (see ``BaseDetector.predict_many``), lazily; a path
    is named by itself, an array or a video frame by its index."""
    if isinstance(source, np.ndarray):
        return iter([(0, source)])
    if not isinstance(source, (str, Path)):
        return ((str(item), item) if isinstance(item, (str, Path)) else (i, item) for i, item in enumerate(source))
    path = Path(source)
    if path.is_dir():
        files = [str(p) for p in image_files(path)]
    elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return _video_frames(path)
    elif path.exists():
        files = [str(path)]
    else:
        files = sorted(glob.glob(str(source)))
    if not files:
        raise ImageReadError(f"{source}: no such image, video, folder of images or files matching the pattern")
    return ((file, file) for file in files)


def _video_frames(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame index, frame)`` of a video file (read as the demo reads it), the capture released at the end."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ImageReadError(f"cannot open video {path}")
    source = VideoSource(capture, f"video {path}", True, path.name, path.stem, path)
    try:
        for frame in source:
            yield frame.frame, frame.image
    finally:
        source.close()


# the demo's sources -------------------------------------------------------------------------------------------------

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

    def __init__(self, paths: list[Path], left_out: int = 0):
        self.paths = paths
        self.length = len(paths)
        self.skipped = 0
        self.left_out = left_out  # files of the folder that are not images (GIFs, text...), never read

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            try:
                yield Frame(read_image(path), index, path.name, None, path.stem)
            except ImageReadError as error:
                self.skipped += 1
                warn(f"warning: {error}; skipped")

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
                warn(f"warning: cannot read frame {index} of {self.name}; trying the next one")
        warn(f"warning: {MAX_FAILED_READS} failed reads in a row from {self.name}; stopping")

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
        paths, others = image_files(path), other_files(path)
        left_out = f"; {describe_files(others)} left out" if others else ""
        if not paths:
            raise DemoError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}){left_out}")
        if others:
            warn(f"note: folder {path}: {describe_files(others)} left out, not images the demo reads "
                 f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImageSource(paths, len(others))
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
