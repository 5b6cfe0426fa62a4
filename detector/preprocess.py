"""The one letterbox (with its exact inverse) and the one normalisation of the package.

Every path into the network goes through here: the eval transform, the trainer, the predictor, the demo and the
exported model. A letterbox scales an image so that its longer side fits the input size, keeps the aspect ratio,
and pads right and bottom (the image sits at the top-left corner, so the inverse is a division). With
``size=None`` the image keeps its resolution and is only padded up to a multiple of ``divisor`` (the evaluation at
original resolution).

A letterbox is described per image by ``meta = (scale_x, scale_y, orig_width, orig_height)``, float32: a
``[4]`` array for one image, a ``[B, 4]`` tensor for a batch. ``scale_*`` is the exact factor the resize applied
along each axis (the resized side is rounded to whole pixels, so the two can differ very slightly).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from detector.boxes import clip_xyxy

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Padding colour: the ImageNet mean, so padded pixels are ~0 after normalisation.
PAD_VALUE = tuple(round(255 * m) for m in IMAGENET_MEAN)


def letterbox_shape(width: int, height: int, size: int | None, divisor: int = 32) -> tuple[int, int, int, int]:
    """Resized ``(new_w, new_h)`` and padded input ``(input_w, input_h)`` for an image of ``width x height``."""
    if width < 1 or height < 1:
        raise ValueError(f"cannot letterbox an image of size {width}x{height}")
    if size is None:
        new_w, new_h = width, height
        input_w, input_h = (math.ceil(s / divisor) * divisor for s in (width, height))
        return new_w, new_h, input_w, input_h
    if size % divisor:
        raise ValueError(f"input size {size} must be a multiple of {divisor}")
    scale = size / max(width, height)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    return new_w, new_h, size, size


def letterbox(image: np.ndarray, size: int | None, divisor: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Letterbox an ``[H, W, 3]`` uint8 RGB image.

    Returns the padded image ``[input_h, input_w, 3]`` uint8 and its ``meta`` ``[4]`` float32
    ``(scale_x, scale_y, W, H)``.
    """
    height, width = image.shape[:2]
    new_w, new_h, input_w, input_h = letterbox_shape(width, height, size, divisor)
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out = np.empty((input_h, input_w, 3), dtype=np.uint8)
    out[:] = PAD_VALUE
    out[:new_h, :new_w] = image
    meta = np.array([new_w / width, new_h / height, width, height], dtype=np.float32)
    return out, meta


def letterbox_boxes(boxes: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Original pixels -> input pixels: ``boxes [..., 4]`` xyxy, ``meta [..., 4]`` broadcastable to it."""
    scale = meta[..., :2]
    return boxes * torch.cat([scale, scale], dim=-1)


def unletterbox_boxes(boxes: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Input pixels -> original pixels, clipped to the original image.

    A batch: ``boxes [B, K, 4]`` xyxy in input pixels and ``meta [B, 4]`` -> ``[B, K, 4]``; one image: ``boxes
    [K, 4]`` and its ``meta [4]`` (as ``letterbox`` returns it, as a tensor) -> ``[K, 4]``. xyxy in original pixels.
    Pure torch, so it can live inside an exported graph.
    """
    if meta.dim() == 1:
        return unletterbox_boxes(boxes[None], meta[None])[0]
    scale = meta[:, None, :2]  # [B, 1, 2]
    boxes = boxes / torch.cat([scale, scale], dim=-1)
    return clip_xyxy(boxes, meta[:, None, 2], meta[:, None, 3])


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``[B, 3, H, W]`` (or ``[3, H, W]``) in 0..255 -> float32 normalised with the ImageNet statistics.

    Works on the device of its input, so batches travel as uint8 and are normalised on the accelerator.
    """
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1) * 255
    return (images.float() - mean) / std


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` uint8 numpy -> ``[3, H, W]`` uint8 tensor (no copy of the pixel values beyond layout)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
