"""The readers' base: the sample format, box repair, and the bad-image-tolerant dataset (images decode with
:func:`detector.images.read_image`).

A reader turns a file on disk into a :class:`Sample`:

- ``image``: ``[H, W, 3]`` uint8 RGB (``detector.images.read_image`` converts grayscale, RGBA and 16-bit files);
- ``boxes``: ``[N, 4]`` float32 xyxy in original pixels, inside ``[0, W] x [0, H]``, each with positive area;
- ``labels``: ``[N]`` int64 in ``0..C-1``;
- ``image_id``: the dataset's integer id of the image (the id of the evaluation ground truth);
- ``crowd_boxes``: ``[M, 4]`` float32 xyxy original pixels, regions that are not training targets (COCO
  ``iscrowd=1``, VOC ``difficult``); a trainer may ignore the heatmap loss there; ``crowd_labels`` ``[M]`` int64
  their classes (the evaluation ground truth needs them; the batch carries only the boxes).

Bad input (each case tested):

- A dataset file that cannot be used (malformed json/xml, missing keys, unknown category, empty split) raises
  :class:`DatasetError` naming the file, when the dataset is built.
- A box with no area, a negative size or non-finite values is dropped, and so is a box with a coordinate more than
  one image side outside its image (``1e30``: garbage, not an overshoot); a box reaching a little outside its image
  is clipped to it (and dropped if nothing is left). The counts are reported in one warning when the dataset is
  built, naming the annotation files that needed a repair.
- An image whose pixels have another size than its annotation file declares (VOC ``<size>``, COCO ``width`` /
  ``height``) is trusted: its boxes are rescaled from the declared size to the real one, with a warning naming the
  file (once per file and process).
- An image that cannot be decoded (missing, empty, corrupt, truncated, not an image) is replaced by the next index
  that decodes, with a warning naming the file; across all DataLoader workers (shared memory),
  :attr:`DetectionDataset.bad_image_files` counts the distinct files that failed and
  :attr:`DetectionDataset.bad_image_count` the reads that were replaced (one broken file read every epoch counts
  once and once per epoch). The warning itself is emitted in the worker process.
"""
from __future__ import annotations

import multiprocessing
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from detector.boxes import area_xyxy, clip_xyxy
from detector.errors import DatasetError
from detector.images import ImageReadError, read_image


def note(message: str) -> None:
    """Print one line about how the data was read (the format found, a split held out, a category left out), on
    the first process only (the other DDP ranks stay quiet)."""
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0:
        print(message, flush=True)


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


@dataclass
class BoxRepairs:
    """Counts of the boxes repaired while a dataset was read, and the annotation files they were in."""

    clipped: int = 0
    dropped: int = 0
    files: list[str] = field(default_factory=list)

    def add(self, other: BoxRepairs) -> None:
        self.clipped += other.clipped
        self.dropped += other.dropped
        self.files.extend(other.files)

    def name(self, file: str | Path) -> None:
        """Record ``file`` as the annotation file of these repairs (if there were any), for the warning."""
        if self.clipped or self.dropped:
            self.files.append(str(file))

    def warn(self, source: str | Path) -> None:
        """One warning for the whole dataset, only if something was repaired; it names the files (the first 5)."""
        if self.clipped or self.dropped:
            shown = ", ".join(self.files[:5]) + (f" and {len(self.files) - 5} more" if len(self.files) > 5 else "")
            where = f" in {len(self.files)} files: {shown}" if self.files else ""
            warnings.warn(f"{source}: {self.clipped} boxes clipped to their image, {self.dropped} boxes dropped "
                          f"(no area, negative size, non-finite or far outside the image){where}", stacklevel=3)


def repair_boxes(boxes: torch.Tensor, width: torch.Tensor,
                 height: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, BoxRepairs]:
    """Clip xyxy boxes to their images and find the ones to drop.

    Args:
        boxes: ``[N, 4]`` float32 xyxy original pixels.
        width, height: ``[N]`` float32, the size of each box's image.

    Returns the clipped boxes ``[N, 4]``, a ``[N]`` bool ``keep`` mask (False for a box that had no area, a negative
    size, non-finite values or a coordinate more than one image side outside its image, or that has no area left
    after clipping) and the repair counts.
    """
    side = torch.stack([width, height, width, height], dim=-1).to(boxes.dtype)  # [N, 4]
    finite = (torch.isfinite(boxes) & (boxes >= -side) & (boxes <= 2 * side)).all(dim=-1)
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
    and counted (:attr:`bad_image_files`, :attr:`bad_image_count`); if no image decodes at all,
    :class:`DatasetError` is raised.

    Subclasses set ``class_names`` (``C`` names, index = label) and ``category_ids`` (label -> dataset category id).
    ``replacement_note`` ends the warning: a validation split says its unreadable image is left out of the metric
    (the evaluator scores the image ids it saw, each once, so the replacement's second copy does not count).
    """

    replacement_note = "using the next image instead"

    def __init__(self, annotations: list[Annotation], class_names: list[str], category_ids: list[int],
                 source: str, transform: Callable[[Sample], Any] | None = None):
        if not annotations:
            raise DatasetError(f"{source}: the split has no images")
        self.annotations = annotations
        self.class_names = class_names
        self.category_ids = category_ids
        self.source = source
        self.transform = transform
        context = multiprocessing.get_context()
        self._bad_images = context.Value("q", 0)  # reads replaced
        self._bad_files = context.RawArray("b", len(annotations))  # 1 at the index of each file that failed

    def __len__(self) -> int:
        return len(self.annotations)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def bad_image_count(self) -> int:
        """Reads that failed to decode (each replaced by another image) since the dataset was built (or last
        reset), summed over all workers."""
        return int(self._bad_images.value)

    @property
    def bad_image_files(self) -> int:
        """Distinct image files that failed to decode since the dataset was built (or last reset), all workers."""
        return int(np.frombuffer(self._bad_files, dtype=np.int8).sum())

    def reset_bad_image_count(self) -> None:
        with self._bad_images.get_lock():
            self._bad_images.value = 0
        np.frombuffer(self._bad_files, dtype=np.int8)[:] = 0

    def load(self, index: int) -> Sample:
        """The untransformed sample at ``index``; raises :class:`ImageReadError` if its image cannot be decoded."""
        ann = self.annotations[index]
        image = read_image(ann.file)
        boxes, crowd_boxes = ann.boxes, ann.crowd_boxes
        height, width = image.shape[:2]
        if (width, height) != (ann.width, ann.height) and ann.width > 0 and ann.height > 0:
            warnings.warn(f"{ann.file}: the image is {width}x{height} pixels but its annotation declares "
                          f"{ann.width}x{ann.height}; its boxes are rescaled to the image", stacklevel=2)
            scale = np.array([width / ann.width, height / ann.height] * 2, dtype=np.float32)
            boxes, crowd_boxes = boxes * scale, crowd_boxes * scale
        return Sample(image, boxes, ann.labels, ann.image_id, crowd_boxes, ann.crowd_labels)

    def __getitem__(self, index: int) -> Any:
        for attempt in range(len(self)):
            candidate = (index + attempt) % len(self)
            try:
                sample = self.load(candidate)
            except ImageReadError as error:
                self._count_bad_image(candidate, error)
                continue
            return self.transform(sample) if self.transform is not None else sample
        raise DatasetError(f"{self.source}: no image of the split can be decoded")

    def _count_bad_image(self, index: int, error: ImageReadError) -> None:
        with self._bad_images.get_lock():
            self._bad_images.value += 1
        self._bad_files[index] = 1
        warnings.warn(f"{error}; {self.replacement_note}", stacklevel=3)
