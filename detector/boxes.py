"""The box conversions and IoU of the package, each named by its formats.

Inside the package boxes are ``xyxy``: ``(x1, y1, x2, y2)`` in absolute pixels, float32, with ``x1 <= x2`` and
``y1 <= y2``. COCO's ``xywh`` (top-left corner, width, height) appears only in the COCO reader and the results
writer, which convert with the functions below. Every function takes ``[..., 4]`` tensors and keeps the leading
shape, dtype and device.
"""
from __future__ import annotations

import torch


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (x, y, w, h) -> ``[..., 4]`` (x1, y1, x2, y2)."""
    xy, wh = boxes[..., :2], boxes[..., 2:]
    return torch.cat([xy, xy + wh], dim=-1)


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (x1, y1, x2, y2) -> ``[..., 4]`` (x, y, w, h)."""
    x1y1, x2y2 = boxes[..., :2], boxes[..., 2:]
    return torch.cat([x1y1, x2y2 - x1y1], dim=-1)


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (centre x, centre y, w, h) -> ``[..., 4]`` (x1, y1, x2, y2)."""
    centre, half = boxes[..., :2], boxes[..., 2:] / 2
    return torch.cat([centre - half, centre + half], dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (x1, y1, x2, y2) -> ``[..., 4]`` (centre x, centre y, w, h)."""
    x1y1, x2y2 = boxes[..., :2], boxes[..., 2:]
    return torch.cat([(x1y1 + x2y2) / 2, x2y2 - x1y1], dim=-1)


def clip_xyxy(boxes: torch.Tensor, width: torch.Tensor | float, height: torch.Tensor | float) -> torch.Tensor:
    """Clip ``[..., 4]`` xyxy boxes to the image ``[0, width] x [0, height]``.

    ``width`` and ``height`` are numbers or tensors broadcastable to ``boxes[..., 0]`` (one size per image).
    """
    width = torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device)
    height = torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device)
    zero = torch.zeros_like(boxes[..., 0])
    x1 = torch.minimum(torch.maximum(boxes[..., 0], zero), width)
    y1 = torch.minimum(torch.maximum(boxes[..., 1], zero), height)
    x2 = torch.minimum(torch.maximum(boxes[..., 2], zero), width)
    y2 = torch.minimum(torch.maximum(boxes[..., 3], zero), height)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def area_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` xyxy -> ``[...]`` area; boxes with ``x2 < x1`` or ``y2 < y1`` have area 0."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def iou_xyxy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU: ``a [N, 4]`` and ``b [M, 4]`` xyxy -> ``[N, M]`` in [0, 1]."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])  # [N, M, 2]
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])  # [N, M, 2]
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)  # [N, M]
    union = area_xyxy(a)[:, None] + area_xyxy(b)[None, :] - inter
    return inter / union.clamp(min=torch.finfo(inter.dtype).tiny)


def matched_iou_xyxy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU of matching boxes: ``a [..., 4]`` and ``b [..., 4]`` xyxy -> ``[...]``."""
    top_left = torch.maximum(a[..., :2], b[..., :2])
    bottom_right = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area_xyxy(a) + area_xyxy(b) - inter
    return inter / union.clamp(min=torch.finfo(inter.dtype).tiny)
