"""What the demo writes, and what it must not: the annotated video or images (sinks), the detections as files, and
the refusal to overwrite a source file.

Sinks take ``[H, W, 3]`` uint8 RGB images (written as BGR by OpenCV). The detection files are
:mod:`detector.results`'s (a COCO-style results json, YOLO label txt files, a MOTChallenge tracks file). Every
output is checked when it is opened (a :class:`DemoError` naming the flag) so that no work is lost at the end, and
against the overwrite rule of :mod:`detector.overwrite` (:func:`output_guard`: never a source, the checkpoint, a
checkpoint, annotation or label file; an existing output only with ``--exist_ok true``). Every file is written
through a temporary file renamed over it when complete.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from detector.detections import Detections
from detector.errors import DemoError
from detector.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from detector.inference.sources import Frame, ImageSource, VideoSource, source_files
from detector.overwrite import Outputs, temporary_beside, write_bytes
from detector.results import CocoResultsWriter, MotWriter, YoloTxtWriter


# the overwrite refusal ----------------------------------------------------------------------------------------------

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


def output_guard(source: ImageSource | VideoSource, inputs: Iterable[str | Path | None] = (),
                 exist_ok: bool = False) -> Outputs:
    """The demo's overwrite check (:class:`detector.overwrite.Outputs`): the source's files and ``inputs`` (the
    checkpoint, the ONNX file) are what it reads; ``exist_ok``: ``--exist_ok``."""
    return Outputs([*source_files(source), *(path for path in inputs if path)], exist_ok, DemoError)


# sinks --------------------------------------------------------------------------------------------------------------

class VideoSink:
    """An mp4v video at the source's frame rate; opened at the first frame, with that frame's size."""

    def __init__(self, path: Path, fps: float):
        self.path = path
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None
        self.temporary: Path | None = None  # written, then renamed over path by close

    def write(self, name: str, image: np.ndarray) -> None:
        if self.writer is None:
            H, W = image.shape[:2]
            self.temporary = temporary_beside(self.path)
            self.writer = cv2.VideoWriter(str(self.temporary), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (W, H))
            if not self.writer.isOpened():
                self.temporary.unlink(missing_ok=True)
                raise DemoError(f"cannot write video {self.path} (mp4v, {W}x{H}, {self.fps:g} fps)")
        self.writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
            os.replace(self.temporary, self.path)


class ImageSink:
    """Annotated images written into a folder under their source file names, or, with ``file``, the one image of a
    single-image source written to that file."""

    def __init__(self, folder: Path, file: Path | None = None):
        self.folder = folder
        self.file = file

    def write(self, name: str, image: np.ndarray) -> None:
        path = self.file or self.folder / name
        encoded, data = cv2.imencode(path.suffix or ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not encoded:
            raise DemoError(f"cannot write image {path}")
        try:
            write_bytes(path, data.tobytes())
        except OSError as error:
            raise DemoError(f"cannot write image {path}: {error}") from error

    def close(self) -> None:
        pass


def open_sink(output: str | Path | None, source: ImageSource | VideoSource,
              guard: Outputs | None = None) -> VideoSink | ImageSink | None:
    """The output for ``source``: a video file for a video source; for image sources a folder, or an image file
    (a name with an image suffix) for a single image. Checks now that it can be written and that it replaces
    nothing the overwrite rule keeps (``guard``, by default :func:`output_guard` of the source; raises
    :class:`DemoError`), so that no work is lost at the end."""
    if output is None:
        return None
    output = Path(output)
    guard = guard or output_guard(source)
    _refuse_overwrite(output, source)
    if isinstance(source, ImageSource):
        if output.suffix.lower() in VIDEO_SUFFIXES:
            raise DemoError(f"--output {output}: for an image or folder source the output is a folder of images")
        if output.suffix.lower() in IMAGE_SUFFIXES:
            if source.length != 1:
                raise DemoError(f"--output {output}: an image file holds one image, the source has "
                                f"{source.length}; give a folder")
            guard.check("--output", output)
            _check_writable(output.parent)
            return ImageSink(output.parent, file=output)
        guard.check_all("--output", [output / path.name for path in source.paths], output)
        _check_writable(output)
        return ImageSink(output)
    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise DemoError(f"--output {output}: for a video source the output is a video file "
                        f"({', '.join(sorted(VIDEO_SUFFIXES))})")
    guard.check("--output", output)
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


# detection files ----------------------------------------------------------------------------------------------------

class ResultFiles:
    """The detections of each frame as files, written as the frames come: ``json`` (one COCO-style results file),
    ``txt`` (one YOLO label file per frame, named by :attr:`Frame.stem`) and/or ``mot`` (the tracks, MOTChallenge's
    frame number being :attr:`Frame.image_id` + 1)."""

    def __init__(self, json: CocoResultsWriter | None = None, txt: YoloTxtWriter | None = None,
                 mot: MotWriter | None = None):
        self.json = json
        self.txt = txt
        self.mot = mot

    def write(self, frame: Frame, detections: Detections) -> None:
        if self.json is not None:
            self.json.write(detections, frame.image_id, frame.file_name, frame.frame)
        if self.txt is not None:
            H, W = frame.image.shape[:2]
            self.txt.write(detections, frame.stem, W, H)
        if self.mot is not None:
            self.mot.write(detections, frame.image_id + 1)

    def close(self) -> None:
        for writer in (self.json, self.txt, self.mot):
            if writer is not None:
                writer.close()


def check_results(source: ImageSource | VideoSource, save_json: str | Path | None = None,
                  save_txt: str | Path | None = None, guard: Outputs | None = None,
                  save_mot: str | Path | None = None) -> None:
    """Refuse (:class:`DemoError`) a ``--save_json``, ``--save_txt`` or ``--save_mot`` that would replace a source,
    a checkpoint, an annotation or label file, or (without ``--exist_ok true``) an existing file, or a folder given
    for a file; nothing is written."""
    guard = guard or output_guard(source)
    if save_mot is not None:
        guard.check("--save_mot", save_mot)
    if save_json is not None:
        save_json = Path(save_json)
        if (file := _overwritten(save_json, _file_ids(source))) is not None:
            raise DemoError(f"--save_json {save_json} is the source {file}; give another file, e.g. "
                            f"--save_json results.json")
        guard.check("--save_json", save_json)
    if save_txt is not None:
        _refuse_shared_stems(source)
        folder = Path(save_txt)
        if folder.exists() and not folder.is_dir():
            raise DemoError(f"--save_txt {folder} is a file; give a folder for the label files")
        if isinstance(source, ImageSource):
            names = [folder / f"{path.stem}.txt" for path in source.paths]
        else:  # <video stem>_<frame>.txt: the frames are not counted yet
            names = sorted(folder.glob(f"{source.stem}_*.txt")) if folder.is_dir() else []
        guard.check_all("--save_txt", names, folder)


def open_results(source: ImageSource | VideoSource, save_json: str | Path | None = None,
                 save_txt: str | Path | None = None, category_ids: Sequence[int] | None = None,
                 txt_scores: bool = True, guard: Outputs | None = None,
                 save_mot: str | Path | None = None) -> ResultFiles | None:
    """The ``--save_json`` file, ``--save_txt`` folder and ``--save_mot`` file, checked (:func:`check_results`, all
    before any is opened) and opened now (raises :class:`DemoError` naming the flag) so that no work is lost at the
    end; None when none is asked for. ``category_ids``: the dataset's id of each label (the detector's), required
    for the json. ``save_mot`` needs tracked detections (the demo's ``--track``)."""
    if save_json is None and save_txt is None and save_mot is None:
        return None
    if save_json is not None and category_ids is None:
        raise DemoError(f"--save_json {save_json}: the model does not record the dataset's category ids (an "
                        f"ONNX file exported before 2026-12-01); export it again with centernet export")
    check_results(source, save_json, save_txt, guard, save_mot)
    json_writer = txt_writer = mot_writer = None
    if save_txt is not None:
        txt_writer = _open_writer("--save_txt", save_txt, lambda: YoloTxtWriter(save_txt, txt_scores))
    if save_json is not None:
        json_writer = _open_writer("--save_json", save_json, lambda: CocoResultsWriter(save_json, category_ids))
    if save_mot is not None:
        mot_writer = _open_writer("--save_mot", save_mot, lambda: MotWriter(save_mot))
    return ResultFiles(json_writer, txt_writer, mot_writer)


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
