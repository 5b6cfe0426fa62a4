"""Decoding: model outputs -> the top-K detections of each image, in input pixels.

Pure batched torch (no numpy, no Python loop over detections), so it exports to ONNX and TorchScript. The
inverse letterbox that takes these boxes to original pixels is ``detector.preprocess.unletterbox_boxes``.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from detector.boxes import cxcywh_to_xyxy
from detector.losses import gather_at


def peaks(heatmap: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """Probabilities ``[B, C, h, w]`` with every cell that is not the maximum of its ``kernel`` window set to 0."""
    local_max = F.max_pool2d(heatmap, kernel, stride=1, padding=kernel // 2)
    return heatmap * (local_max == heatmap).to(heatmap.dtype)


def decode(outputs: dict[str, torch.Tensor], k: int = 100, stride: int = 4) -> dict[str, torch.Tensor]:
    """Top-``k`` detections over all classes and cells.

    Args:
        outputs: the model's dict, ``heatmap`` logits ``[B, C, h, w]``, ``offset`` and ``size`` ``[B, 2, h, w]``
            (in cells).
        k: detections per image (at most ``C * h * w``).
        stride: input pixels per output cell.

    Returns a dict: ``boxes`` ``[B, K, 4]`` xyxy in input pixels (x1 <= x2, y1 <= y2), ``scores`` ``[B, K]``
    probabilities in descending order, ``labels`` ``[B, K]`` int64 class indices.
    """
    heatmap = outputs["heatmap"].float()
    B, C, h, w = heatmap.shape
    heat = peaks(heatmap.sigmoid()).flatten(1)  # [B, C*h*w]
    scores, flat = heat.topk(min(k, C * h * w), dim=1)  # [B, K]
    labels = torch.div(flat, h * w, rounding_mode="floor")
    cell = flat - labels * (h * w)  # [B, K] flat y * w + x
    ys = torch.div(cell, w, rounding_mode="floor")
    xs = cell - ys * w
    offset = gather_at(outputs["offset"].float(), cell)  # [B, K, 2]
    size = gather_at(outputs["size"].float(), cell).clamp(min=0)  # [B, K, 2]
    centre = torch.stack([xs, ys], dim=-1).to(offset.dtype) + offset
    boxes = cxcywh_to_xyxy(torch.cat([centre, size], dim=-1)) * stride
    return {"boxes": boxes, "scores": scores, "labels": labels}


def flip_merge(outputs: dict[str, torch.Tensor], flipped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Flip test-time augmentation, as in the paper: average the heatmap probabilities and the sizes of an image
    and of its horizontal mirror (whose maps are flipped back here); the offsets come from the image alone.

    Both arguments are model outputs; returns the same layout, heatmap as logits of the averaged probabilities.
    """
    heat = (outputs["heatmap"].float().sigmoid() + flipped["heatmap"].float().flip(-1).sigmoid()) / 2
    heat = heat.clamp(1e-7, 1 - 1e-7)
    size = (outputs["size"].float() + flipped["size"].float().flip(-1)) / 2
    return {"heatmap": torch.log(heat) - torch.log1p(-heat), "offset": outputs["offset"], "size": size}
