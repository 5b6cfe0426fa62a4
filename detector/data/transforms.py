"""Sample -> network input: the train augmentation, the eval letterbox, and the collate into the batch contract.

Both transforms take a :class:`detector.data.dataset.Sample` (original pixels) and return a dict:

- ``image``: ``[3, S, S]`` uint8 RGB tensor (eval at original resolution: ``[3, H', W']``, sides multiples of 32);
  ImageNet normalisation is NOT applied here: ``detector.preprocess.normalize`` does it on the device, batched;
- ``boxes``: ``[N, 4]`` float32 xyxy in input pixels; ``labels``: ``[N]`` int64;
- ``crowd_boxes``: ``[M, 4]`` float32 xyxy in input pixels (ignore regions);
- ``image_id``: int; ``meta``: ``[4]`` float32 ``(scale_x, scale_y, orig_w, orig_h)`` as in ``detector.preprocess``
  (for a train sample: the letterbox of the original image to ``S``, which is what evaluation would use).

Two train transforms:

- :class:`CropTrainTransform` is the CenterNet paper's (``augmentation: paper``): a random square crop of side
  ``s * max(H, W)`` (``s`` drawn from ``PAPER_CROP_SCALES``) around a random centre at least ``paper_border(128)``
  pixels inside the image, warped to ``S x S`` (so a zoom of ``1 / s`` relative to the letterbox), flipped with
  ``flip_prob``; brightness, contrast and saturation jitter of +-0.4 in random order, then PCA lighting
  (``PAPER_LIGHTING``). By default every box that keeps a positive area after clipping to the canvas is a target.
  Two switches make it the paper's code to the letter (the paper configs set both): ``colour_float`` keeps the
  colour-augmented image in float32, neither clipped to 0..255 nor rounded (by default it is stored as uint8), and
  ``clip_margin=PAPER_CLIP_MARGIN`` clips boxes to ``S - 4`` input pixels, the left edge of the last stride-4 output
  cell (the paper's code clips to ``output_w - 1`` cells; by default boxes are clipped to the canvas ``S``).
- :class:`TrainTransform` (``augmentation: resize``), described below.

``TrainTransform`` geometry: the longer side is resized to ``S * scale`` (``scale`` uniform in ``scale_range``, in
steps of 1 px), then the image is placed at a random position in (padded with ``PAD_VALUE``) or randomly cropped to the
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


PAPER_CROP_SCALES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)  # crop side / longer image side
PAPER_CLIP_MARGIN = 4.0  # the paper's code clips boxes to output cell w - 1: one stride-4 cell inside the canvas
PAPER_BORDER = 128  # the crop centre keeps this far from the image edges (halved until it fits, paper_border)
# PCA lighting of the paper's code: alpha ~ N(0, 0.1) per component, shift = eigvec @ (eigval * alpha) in [0, 1] units,
# added to the channels in the order that code stores them (B, G, R)
PAPER_LIGHTING_STD = 0.1
PAPER_EIGVAL = np.array([0.2141788, 0.01817699, 0.00341571], dtype=np.float32)
PAPER_EIGVEC = np.array([[-0.58752847, -0.69563484, 0.41340352],
                         [-0.5832747, 0.00994535, -0.81221408],
                         [-0.56089297, 0.71832671, 0.41158938]], dtype=np.float32)


def paper_border(border: int, size: int) -> int:
    """The margin of the crop centre: ``border`` halved until the image holds two of it."""
    while size - border <= border and border > 1:
        border //= 2
    return border


class CropTrainTransform:
    """The paper's train augmentation (module docstring); same input and output as :class:`TrainTransform`.

    Args:
        size: input side ``S`` in pixels.
        scales: the crop side as fractions of the longer image side, drawn uniformly.
        flip_prob: probability of a horizontal flip.
        colour_jitter: strength of each of brightness, contrast and saturation (0 disables the colour jitter).
        lighting_std: standard deviation of the PCA lighting components (0 disables it).
        min_visibility: smallest kept fraction of a box's area after cropping (the paper: 0, keep all).
        min_box_size: smallest kept width and height in input pixels (the paper: 0, any positive size).
        seed: seed of the augmentation stream (DataLoader workers reseed with :meth:`set_random_seed`).
        colour_float: the image comes out float32 (0..255 scale, unclipped, unrounded, as the paper's code keeps
            it) instead of uint8.
        clip_margin: boxes are clipped to ``[0, size - clip_margin]`` (``PAPER_CLIP_MARGIN``: the paper's code).
    """

    def __init__(self, size: int, scales: tuple[float, ...] = PAPER_CROP_SCALES, flip_prob: float = 0.5,
                 colour_jitter: float = 0.4, lighting_std: float = PAPER_LIGHTING_STD, min_visibility: float = 0.0,
                 min_box_size: float = 0.0, seed: int | None = None, colour_float: bool = False,
                 clip_margin: float = 0.0):
        if not scales or min(scales) <= 0:
            raise ValueError(f"crop scales must be positive, got {scales}")
        self.size, self.scales, self.flip_prob = size, tuple(scales), flip_prob
        self.colour_jitter, self.lighting_std = colour_jitter, lighting_std
        self.min_visibility, self.min_box_size = min_visibility, min_box_size
        self.colour_float, self.clip_margin = colour_float, clip_margin
        self.set_random_seed(seed)

    def set_random_seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def crop(self, width: int, height: int) -> tuple[float, float, float]:
        """A random crop: (centre x, centre y, side) in original pixels."""
        side = max(width, height) * float(self.rng.choice(self.scales))
        bx, by = paper_border(PAPER_BORDER, width), paper_border(PAPER_BORDER, height)
        cx = self.rng.integers(bx, width - bx) if width > 2 * bx else width / 2
        cy = self.rng.integers(by, height - by) if height > 2 * by else height / 2
        return float(cx), float(cy), side

    def __call__(self, sample: Sample) -> dict[str, Any]:
        height, width = sample.image.shape[:2]
        cx, cy, side = self.crop(width, height)
        flip = self.rng.random() < self.flip_prob
        scale = self.size / side  # input pixels per original pixel
        shift = (self.size / 2 - scale * cx, self.size / 2 - scale * cy)
        image = warp(sample.image, scale, shift, self.size)
        boxes, keep = self.place(sample.boxes, scale, shift, flip)
        crowd, crowd_keep = self.place(sample.crowd_boxes, scale, shift, flip)
        if flip:
            image = np.ascontiguousarray(image[:, ::-1])
        image = self.colour(image)
        new_w, new_h, _, _ = letterbox_shape(width, height, self.size)
        return {
            "image": to_chw_tensor(image),
            "boxes": torch.from_numpy(boxes[keep]),
            "labels": torch.from_numpy(np.asarray(sample.labels, dtype=np.int64)[keep]),
            "crowd_boxes": torch.from_numpy(crowd[crowd_keep]),
            "image_id": int(sample.image_id),
            "meta": torch.tensor([new_w / width, new_h / height, width, height], dtype=torch.float32),
        }

    def place(self, boxes: np.ndarray, scale: float, shift: tuple[float, float],
              flip: bool) -> tuple[np.ndarray, np.ndarray]:
        """``[N, 4]`` xyxy original pixels -> xyxy input pixels clipped to the canvas, and the ``[N]`` kept mask."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        placed = boxes * scale + np.array([shift[0], shift[1], shift[0], shift[1]], dtype=np.float32)
        if flip:
            placed = np.stack([self.size - placed[:, 2], placed[:, 1], self.size - placed[:, 0], placed[:, 3]], 1)
        clipped = placed.clip(0, self.size - self.clip_margin)
        size = clipped[:, 2:] - clipped[:, :2]
        full = (placed[:, 2:] - placed[:, :2]).prod(1)
        keep = (size > 0).all(1) & (size >= self.min_box_size).all(1)
        keep &= size.prod(1) >= self.min_visibility * full
        return clipped, keep

    def colour(self, image: np.ndarray) -> np.ndarray:
        """Brightness, contrast, saturation (random order, +-``colour_jitter``), then PCA lighting; RGB uint8 (clipped
        and rounded), or float32 as computed with ``colour_float``."""
        if self.colour_jitter <= 0 and self.lighting_std <= 0:
            return image.astype(np.float32) if self.colour_float else image
        out = image.astype(np.float32)
        if self.colour_jitter > 0:
            before = out if self.colour_float else image  # float as the paper's code, or uint8 (a rounded grey)
            grey = cv2.cvtColor(before, cv2.COLOR_RGB2GRAY).astype(np.float32)
            grey_mean = float(grey.mean())
            for step in self.rng.permutation(3):
                alpha = 1 + self.rng.uniform(-self.colour_jitter, self.colour_jitter)
                if step == 0:  # brightness
                    out *= alpha
                elif step == 1:  # contrast
                    out = alpha * out + (1 - alpha) * grey_mean
                else:  # saturation
                    out = alpha * out + (1 - alpha) * grey[..., None]
        if self.lighting_std > 0:
            alpha = self.rng.normal(0.0, self.lighting_std, 3).astype(np.float32)
            out += 255 * (PAPER_EIGVEC @ (PAPER_EIGVAL * alpha))[::-1]  # B, G, R order -> our R, G, B
        return out if self.colour_float else np.rint(out.clip(0, 255)).astype(np.uint8)


def warp(image: np.ndarray, scale: float, shift: tuple[float, float], size: int) -> np.ndarray:
    """``image`` mapped by ``x -> scale * x + shift`` (continuous pixel frame) onto a ``size x size`` canvas
    padded with ``PAD_VALUE``.

    OpenCV's matrix is in pixel-index coordinates (centres at integers): ``u = scale * x + shift + (scale - 1) / 2``.
    """
    offset = (scale - 1) / 2
    matrix = np.array([[scale, 0, shift[0] + offset], [0, scale, shift[1] + offset]], dtype=np.float64)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=tuple(int(v) for v in PAD_VALUE))


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

    ``images`` uint8 ``[B, 3, H, W]`` (float32 from ``CropTrainTransform(colour_float=True)``; H, W the batch's
    largest; smaller images padded bottom/right with ``PAD_VALUE``, exact for the top-left letterbox), ``boxes``
    float32 ``[B, Nmax, 4]`` xyxy input pixels,
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
    """``[3, H_i, W_i]`` uint8 (or float32) -> ``[B, 3, H, W]`` of that dtype, each image at the top-left, the rest
    ``PAD_VALUE``.

    Copies with NumPy: torch's multi-threaded copy of large uint8 tensors is many times slower on a busy CPU.
    """
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    dtype = images[0].numpy().dtype
    batch = np.empty((len(images), 3, height, width), dtype=dtype)
    batch[:] = np.array(PAD_VALUE, dtype=dtype)[None, :, None, None]
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
