"""What every reader shares: the sample format, the image decoder, box repair, and the bad-image-tolerant dataset.

A reader turns a file on disk into a :class:`Sample`:

- ``image``: ``[H, W, 3]`` uint8 RGB (converted once, here, from OpenCV's BGR; grayscale, RGBA and 16-bit files
  are converted to that);
- ``boxes``: ``[N, 4]`` float32 xyxy in original pixels, inside ``[0, W] x [0, H]``, each with positive area;
- ``labels``: ``[N]`` int64 in ``0..C-1``;
- ``image_id``: the dataset's integer id of the image (the id of the evaluation ground truth);
- ``crowd_boxes``: ``[M, 4]`` float32 xyxy original pixels, regions that are not training targets (COCO
  ``iscrowd=1``, VOC ``difficult``); a trainer may ignore the heatmap loss there; ``crowd_labels`` ``[M]`` int64
  their classes (the evaluation ground truth needs them; the batch carries only the boxes).

Bad input (each case tested):

- A dataset file that cannot be used (malformed json/xml, missing keys, unknown category, empty split) raises
  :class:`DatasetError` naming the file, when the dataset is built.
- A box with no area, a negative size or non-finite values is dropped; a box reaching outside its image is clipped
  to it (and dropped if nothing is left). The counts are reported per file in one warning when the dataset is built.
- An image that cannot be decoded (missing, empty, corrupt, truncated, not an image) is replaced by the next index
  that decodes, with a warning naming the file; :attr:`DetectionDataset.bad_image_count` counts the failures
  across all DataLoader workers (a shared counter), and the warning itself is emitted in the worker process.
"""
from __future__ import annotations

import multiprocessing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from detector.boxes import area_xyxy, clip_xyxy


class DatasetError(ValueError):
    """A dataset file cannot be used; the message names the file and what is wrong."""


class ImageReadError(OSError):
    """One image file cannot be decoded; the message names the file."""


@dataclass
class Sample:
    """One image and its objects, in original pixels (contract in the module docstring)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image_id: int
    crowd_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.float32))
    crowd_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))


@dataclass
class Annotation:
    """The objects of one image as read from its annotation file, before the pixels are decoded."""

    file: Path
    image_id: int
    boxes: np.ndarray  # [N, 4] float32 xyxy original pixels
    labels: np.ndarray  # [N] int64
    crowd_boxes: np.ndarray  # [M, 4] float32 xyxy original pixels
    crowd_labels: np.ndarray  # [M] int64
    width: int  # of the image, as the annotation file states it
    height: int


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
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(f"cannot decode image {path}: corrupt, truncated or not an image")
    return _to_rgb_uint8(image, path)


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


@dataclass
class BoxRepairs:
    """Counts of the boxes repaired while a dataset file was read."""

    clipped: int = 0
    dropped: int = 0

    def add(self, other: BoxRepairs) -> None:
        self.clipped += other.clipped
        self.dropped += other.dropped

    def warn(self, file: str | Path) -> None:
        """One warning for the whole file, only if something was repaired."""
        if self.clipped or self.dropped:
            warnings.warn(f"{file}: {self.clipped} boxes clipped to their image, {self.dropped} boxes dropped "
                          "(no area, negative size, non-finite or outside the image)", stacklevel=3)


def repair_boxes(boxes: torch.Tensor, width: torch.Tensor,
                 height: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, BoxRepairs]:
    """Clip xyxy boxes to their images and find the ones to drop.

    Args:
        boxes: ``[N, 4]`` float32 xyxy original pixels.
        width, height: ``[N]`` float32, the size of each box's image.

    Returns the clipped boxes ``[N, 4]``, a ``[N]`` bool ``keep`` mask (False for a box that had no area, a negative
    size or non-finite values, or that has no area left after clipping) and the repair counts.
    """
    finite = torch.isfinite(boxes).all(dim=-1)
    boxes = torch.where(finite[:, None], boxes, torch.zeros_like(boxes))
    positive = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    clipped = clip_xyxy(boxes, width, height)
    keep = positive & (area_xyxy(clipped) > 0)
    changed = keep & (clipped != boxes).any(dim=-1)
    repairs = BoxRepairs(clipped=int(changed.sum()), dropped=int((~keep).sum()))
    return clipped, keep, repairs


class DetectionDataset(torch.utils.data.Dataset):
    """A list of :class:`Annotation` whose images are decoded on access, with an optional transform.

    ``dataset[i]`` is ``transform(sample)`` (or the :class:`Sample` itself without a transform). An image that
    cannot be decoded is replaced by the next index that decodes (wrapping around), with a warning naming the file
    and one count in :attr:`bad_image_count`; if no image decodes at all, :class:`DatasetError` is raised.

    Subclasses set ``class_names`` (``C`` names, index = label) and ``category_ids`` (label -> dataset category id).
    """

    def __init__(self, annotations: list[Annotation], class_names: list[str], category_ids: list[int],
                 source: str, transform: Callable[[Sample], Any] | None = None):
        if not annotations:
            raise DatasetError(f"{source}: the split has no images")
        self.annotations = annotations
        self.class_names = class_names
        self.category_ids = category_ids
        self.source = source
        self.transform = transform
        self._bad_images = multiprocessing.get_context().Value("q", 0)

    def __len__(self) -> int:
        return len(self.annotations)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def bad_image_count(self) -> int:
        """Images that failed to decode since the dataset was built (or last reset), summed over all workers."""
        return int(self._bad_images.value)

    def reset_bad_image_count(self) -> None:
        with self._bad_images.get_lock():
            self._bad_images.value = 0

    def load(self, index: int) -> Sample:
        """The untransformed sample at ``index``; raises :class:`ImageReadError` if its image cannot be decoded."""
        ann = self.annotations[index]
        return Sample(read_image(ann.file), ann.boxes, ann.labels, ann.image_id, ann.crowd_boxes, ann.crowd_labels)

    def __getitem__(self, index: int) -> Any:
        for attempt in range(len(self)):
            candidate = (index + attempt) % len(self)
            try:
                sample = self.load(candidate)
            except ImageReadError as error:
                self._count_bad_image(error)
                continue
            return self.transform(sample) if self.transform is not None else sample
        raise DatasetError(f"{self.source}: no image of the split can be decoded")

    def _count_bad_image(self, error: ImageReadError) -> None:
        with self._bad_images.get_lock():
            self._bad_images.value += 1
        warnings.warn(f"{error}; using the next image instead", stacklevel=3)
