"""Image files -> ``[H, W, 3]`` uint8 RGB arrays: the one decoder, shared by the dataset readers and inference.

OpenCV decodes to BGR (or gray, BGRA, 16-bit); the conversion to RGB uint8 happens once, here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import cv2
import numpy as np

# The files read as images from a folder, and the files opened as videos (the demo, predict_many, outputs).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v"}

from detector.errors import ImageReadError

ImageInput = Union[np.ndarray, str, Path]


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to ``[H, W, 3]`` uint8 RGB; raises :class:`ImageReadError` naming the file.

    Read with ``IMREAD_UNCHANGED`` (so EXIF orientation is not applied: annotations refer to the stored pixels),
    then converted: grayscale -> RGB, BGRA -> RGB (alpha dropped), BGR -> RGB, 16-bit -> 8-bit by ``/ 257``.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise ImageReadError(f"cannot read image {path}: {error}") from error
    if data.size == 0:
        raise ImageReadError(f"cannot read image {path}: the file is empty")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as error:  # a header declaring more pixels than OpenCV's limit (CV_IO_MAX_IMAGE_PIXELS)
        raise ImageReadError(f"cannot decode image {path}: OpenCV refuses it ({_last_line(error)}); a header "
                             "declaring more pixels than OpenCV's limit, or a corrupt file") from error
    if image is None:
        raise ImageReadError(f"cannot decode image {path}: corrupt, truncated or not an image")
    return _to_rgb_uint8(image, path)


def _last_line(error: Exception) -> str:
    """The last non-empty line of an OpenCV error (the one saying what failed), stripped."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _to_rgb_uint8(image: np.ndarray, path: str | Path) -> np.ndarray:
    """OpenCV's decoded array (any of gray, BGR, BGRA; uint8 or uint16) -> ``[H, W, 3]`` uint8 RGB."""
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float32) / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageReadError(f"unsupported pixel type {image.dtype} in image {path}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    conversions = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    if channels not in conversions:
        raise ImageReadError(f"unsupported number of channels {channels} in image {path}")
    return cv2.cvtColor(image, conversions[channels])


def as_image(x: ImageInput) -> np.ndarray:
    """A path (read with :func:`read_image`) or an ``[H, W, 3]`` uint8 RGB array -> ``[H, W, 3]`` uint8 RGB."""
    if isinstance(x, (str, Path)):
        return read_image(x)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"expected an RGB uint8 array [H, W, 3] or an image path, got {type(x).__name__}")
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array [H, W, 3], got {x.dtype} array of shape {x.shape}")
    return x
