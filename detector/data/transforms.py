"""Sample -> network input: the train augmentation, the eval letterbox, and the collate into the batch contract.

Both transforms take a :class:`detector.data.dataset.Sample` (original pixels) and return a dict:

- ``image``: ``[3, S, S]`` uint8 RGB tensor (eval at original resolution: ``[3, H', W']``, sides multiples of 32);
  ImageNet normalisation is NOT applied here: ``detector.preprocess.normalize`` does it on the device, batched;
- ``boxes``: ``[N, 4]`` float32 xyxy in input pixels; ``labels``: ``[N]`` int64;
- ``crowd_boxes``: ``[M, 4]`` float32 xyxy in input pixels (ignore regions);
- ``image_id``: int; ``meta``: ``[4]`` float32 ``(scale_x, scale_y, orig_w, orig_h)`` as in ``detector.preprocess``
  (for a train sample: the letterbox of the original image to ``S``, which is what evaluation would use).

Train geometry: the longer side is resized to ``S * scale`` (``scale`` uniform in ``scale_range``, in steps of
1 px), then the image is placed at a random position in (padded with ``PAD_VALUE``) or randomly cropped to the
``S x S`` canvas, flipped horizontally with ``flip_prob``, colour-jittered. Boxes are clipped to the canvas; a box
is dropped when less than ``min_visibility`` of its area remains or it is narrower or shorter than
``min_box_size`` input pixels.
"""
from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from detector.data.dataset import Sample
from detector.preprocess import PAD_VALUE, letterbox, letterbox_boxes, letterbox_shape, to_chw_tensor


class TrainTransform:
    """Random scale, placement/crop to ``size x size``, horizontal flip and colour jitter (module docstring).

    Args:
        size: input side ``S`` in pixels.
        scale_range: range of the random scale of the longer side relative to ``S``.
        flip_prob: probability of a horizontal flip.
        colour_jitter: strength of the brightness, contrast and saturation jitter (0 disables it; hue gets a tenth).
        min_visibility: smallest kept fraction of a box's area after cropping.
        min_box_size: smallest width and height, in input pixels, of a kept box.
        seed: seed of the augmentation stream (DataLoader workers reseed with :meth:`set_random_seed`).
    """

    def __init__(self, size: int, scale_range: tuple[float, float] = (0.6, 1.4), flip_prob: float = 0.5,
                 colour_jitter: float = 0.3, min_visibility: float = 0.3, min_box_size: float = 2.0,
                 seed: int | None = None):
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be increasing and positive, got {scale_range}")
        self.size = size
        longest = range(max(1, round(size * scale_range[0])), round(size * scale_range[1]) + 1)
        jitter = (max(0.0, 1 - colour_jitter), 1 + colour_jitter)
        self.pipeline = A.Compose([
            A.LongestMaxSize(max_size=list(longest)),
            A.PadIfNeeded(size, size, position="random", border_mode=cv2.BORDER_CONSTANT, fill=PAD_VALUE),
            A.RandomCrop(size, size),
            A.HorizontalFlip(p=flip_prob),
            A.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=colour_jitter / 10,
                          p=0.8 if colour_jitter > 0 else 0.0),
        ], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "crowd"], clip=True,
                                    min_visibility=min_visibility, min_width=min_box_size,
                                    min_height=min_box_size))
        self.set_random_seed(seed)

    def set_random_seed(self, seed: int | None) -> None:
        """Restart the augmentation stream; each albumentations transform gets its own derived seed."""
        self.pipeline.set_random_seed(seed)
        if seed is None:
            return
        states = np.random.SeedSequence(seed).generate_state(len(self.pipeline.transforms))
        for transform, state in zip(self.pipeline.transforms, states):
            transform.set_random_seed(int(state))

    def __call__(self, sample: Sample) -> dict[str, Any]:
        objects, crowd = len(sample.boxes), len(sample.crowd_boxes)
        out = self.pipeline(image=sample.image, bboxes=np.concatenate([sample.boxes, sample.crowd_boxes]),
                            labels=np.concatenate([sample.labels, np.zeros(crowd, dtype=np.int64)]),
                            crowd=np.repeat([False, True], [objects, crowd]))
        boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        is_crowd = np.asarray(out["crowd"], dtype=bool)
        height, width = sample.image.shape[:2]
        new_w, new_h, _, _ = letterbox_shape(width, height, self.size)
        return {
            "image": to_chw_tensor(out["image"]),
            "boxes": torch.from_numpy(boxes[~is_crowd]),
            "labels": torch.from_numpy(np.asarray(out["labels"], dtype=np.int64)[~is_crowd]),
            "crowd_boxes": torch.from_numpy(boxes[is_crowd]),
            "image_id": int(sample.image_id),
            "meta": torch.tensor([new_w / width, new_h / height, width, height], dtype=torch.float32),
        }


class EvalTransform:
    """``detector.preprocess.letterbox`` to ``size`` (None: original resolution padded to a multiple of 32)."""

    def __init__(self, size: int | None):
        self.size = size

    def __call__(self, sample: Sample) -> dict[str, Any]:
        image, meta = letterbox(sample.image, self.size)
        meta = torch.from_numpy(meta)
        return {
            "image": to_chw_tensor(image),
            "boxes": letterbox_boxes(torch.from_numpy(sample.boxes), meta),
            "labels": torch.from_numpy(sample.labels),
            "crowd_boxes": letterbox_boxes(torch.from_numpy(sample.crowd_boxes), meta),
            "image_id": int(sample.image_id),
            "meta": meta,
        }


def collate_detection(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack transformed samples into the batch contract (B samples, Nmax objects, Mmax crowd boxes):

    ``images`` uint8 ``[B, 3, H, W]`` (H, W the batch's largest; smaller images padded bottom/right with
    ``PAD_VALUE``, exact for the top-left letterbox), ``boxes`` float32 ``[B, Nmax, 4]`` xyxy input pixels,
    ``labels`` int64 ``[B, Nmax]``, ``mask`` bool ``[B, Nmax]`` (True for real objects), ``image_ids`` int64 ``[B]``,
    ``meta`` float32 ``[B, 4]``, ``crowd_boxes`` float32 ``[B, Mmax, 4]``, ``crowd_mask`` bool ``[B, Mmax]``.
    Padding rows hold zeros. Nmax and Mmax may be 0.
    """
    boxes, mask = _pad_rows([s["boxes"] for s in samples])
    labels, _ = _pad_rows([s["labels"] for s in samples])
    crowd_boxes, crowd_mask = _pad_rows([s["crowd_boxes"] for s in samples])
    return {
        "images": _pad_images([s["image"] for s in samples]),
        "boxes": boxes,
        "labels": labels,
        "mask": mask,
        "image_ids": torch.tensor([s["image_id"] for s in samples], dtype=torch.int64),
        "meta": torch.stack([s["meta"] for s in samples]),
        "crowd_boxes": crowd_boxes,
        "crowd_mask": crowd_mask,
    }


def _pad_images(images: list[torch.Tensor]) -> torch.Tensor:
    """``[3, H_i, W_i]`` uint8 -> ``[B, 3, H, W]`` uint8, each image at the top-left, the rest ``PAD_VALUE``.

    Copies with NumPy: torch's multi-threaded copy of large uint8 tensors is many times slower on a busy CPU.
    """
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    batch = np.empty((len(images), 3, height, width), dtype=np.uint8)
    batch[:] = np.array(PAD_VALUE, dtype=np.uint8)[None, :, None, None]
    for i, image in enumerate(images):
        batch[i, :, :image.shape[1], :image.shape[2]] = image.numpy()
    return torch.from_numpy(batch)


def _pad_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N_i, ...]`` tensors -> ``[B, Nmax, ...]`` zero-padded and its ``[B, Nmax]`` bool mask of real rows."""
    longest = max(len(row) for row in rows)
    padded = rows[0].new_zeros((len(rows), longest, *rows[0].shape[1:]))
    mask = torch.zeros((len(rows), longest), dtype=torch.bool)
    for i, row in enumerate(rows):
        padded[i, :len(row)] = row
        mask[i, :len(row)] = True
    return padded, mask
