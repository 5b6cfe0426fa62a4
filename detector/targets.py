"""Training targets: boxes -> Gaussian centre heatmaps, and per object its centre cell, offset and size.

Frames: boxes arrive xyxy in input pixels; everything returned is in output cells (input pixels / ``stride``).

Rules (each one tested):

- The peak of an object's Gaussian is exactly 1 at the cell holding its centre. Its extent (``radius``) is one of:
  ``"paper"``: the formula the CenterNet paper's numbers were obtained with: CornerNet's three quadratics with the
  widely copied roots (divided by 2 instead of 2a, about 3.3x the exact radius), of the box size in cells rounded up,
  the result truncated; ``"exact"``: CornerNet's rule solved correctly (the largest corner displacement that keeps
  IoU >= ``min_overlap``, ``(-b +- sqrt(b^2 - 4ac)) / 2a``), truncated; ``"elliptical"``: a Gaussian stretched with
  the box, half-axes ``floor(ELLIPSE_ALPHA * w / 2)`` and ``floor(ELLIPSE_ALPHA * h / 2)`` cells (TTFNet's idea).
  A round Gaussian of radius ``r`` has ``sigma = (2r + 1) / 6`` and is cut at ``|dx|, |dy| <= r``; an elliptical
  one the same per axis.
- Overlapping Gaussians of one class combine by element-wise max.
- Two objects of one class whose centres fall in the same cell give one peak of 1. Both stay in the per-object
  targets with the same index, so the offset and size heads learn their mean at that cell and decoding returns one
  box there: a stride-4 CenterNet cannot separate them (rare: objects that close are nearly the same box).
- A box is used with its full size even when it touches the image border; its centre cell is clamped into the map.
- Padding (``mask`` False) and boxes with no area get no heatmap peak and ``mask`` False in the targets.
"""
from __future__ import annotations

from typing import Literal

import torch

from detector.boxes import xyxy_to_cxcywh


RadiusRule = Literal["paper", "exact", "elliptical"]
ELLIPSE_ALPHA = 0.54  # TTFNet's ratio of the Gaussian's extent to the box


def gaussian_radius(width: torch.Tensor, height: torch.Tensor, min_overlap: float = 0.7,
                    legacy: bool = False) -> torch.Tensor:
    """CornerNet's radius, in the units of ``width``/``height`` (any matching shapes).

    The smallest of three cases, each the largest ``r`` for which IoU >= ``min_overlap`` when both corners
    move by ``r``: (1) the box shifts by ``r`` in x and y; (2) the box shrinks by ``r`` at each corner;
    (3) the box grows by ``r`` at each corner.
    """
    o, wh, s = min_overlap, width * height, width + height
    quadratics = [
        (1.0, -s, wh * (1 - o) / (1 + o)),  # (w-r)(h-r) / (2wh - (w-r)(h-r)) = o, smaller root
        (4.0, -2 * s, (1 - o) * wh),  # (w-2r)(h-2r) / wh = o, smaller root
        (4 * o, 2 * o * s, (o - 1) * wh),  # wh / ((w+2r)(h+2r)) = o, positive root
    ]
    radii = []
    for a, b, c in quadratics:
        root = torch.sqrt((b * b - 4 * a * c).clamp(min=0))
        if legacy:  # the copied code: (b' + sqrt) / 2 in its sign convention, b' = -b
            radii.append((-b + root) / 2)
        elif a == 4 * o:
            radii.append((-b + root) / (2 * a))
        else:
            radii.append((-b - root) / (2 * a))
    return torch.minimum(torch.minimum(radii[0], radii[1]), radii[2])


def encode(boxes: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, num_classes: int,
           output_size: tuple[int, int], stride: int, min_overlap: float = 0.7,
           radius: RadiusRule = "exact") -> dict[str, torch.Tensor]:
    """Build the CenterNet targets of a batch, on the device of ``boxes``.

    Args:
        boxes: ``[B, N, 4]`` float, xyxy in input pixels (padding rows are ignored).
        labels: ``[B, N]`` int64 in ``0..num_classes-1``.
        mask: ``[B, N]`` bool, True for real objects, False for padding.
        output_size: ``(h, w)`` of the output maps.
        stride: input pixels per output cell.
        radius: the rule of each Gaussian's extent (module docstring).

    Returns a dict:
        ``heatmap`` ``[B, C, h, w]`` float32 in [0, 1] (exactly 1 at each centre cell);
        ``index`` ``[B, N]`` int64 flat centre cell ``y * w + x``;
        ``offset`` ``[B, N, 2]`` float32 sub-cell centre (x, y) in [0, 1);
        ``size`` ``[B, N, 2]`` float32 box (width, height) in cells;
        ``mask`` ``[B, N]`` bool, the objects that have targets.
    """
    B, N = labels.shape
    h, w = output_size
    cxcywh = xyxy_to_cxcywh(boxes.float() / stride)  # [B, N, 4] in cells
    centre, size = cxcywh[..., :2], cxcywh[..., 2:]
    mask = mask.bool() & (size > 0).all(dim=-1)
    limit = torch.tensor([w - 1, h - 1], device=boxes.device)
    cell = torch.minimum(centre.floor().long().clamp(min=0), limit)  # [B, N, 2] (x, y)
    index = cell[..., 1] * w + cell[..., 0]
    offset = centre - cell.float()
    extent = gaussian_extent(size, radius, min_overlap)  # [B, N, 2] half-axes (x, y) in cells
    heatmap = _draw_gaussians(cell[mask], extent[mask], labels[mask], _batch_index(mask), num_classes, (B, h, w))
    zeros = torch.zeros_like(offset)
    return {
        "heatmap": heatmap,
        "index": torch.where(mask, index, torch.zeros_like(index)),
        "offset": torch.where(mask[..., None], offset, zeros),
        "size": torch.where(mask[..., None], size, zeros),
        "mask": mask,
    }


def gaussian_extent(size: torch.Tensor, rule: RadiusRule, min_overlap: float = 0.7) -> torch.Tensor:
    """``size [..., 2]`` (w, h) in cells -> ``[..., 2]`` whole half-axes (x, y) in cells, >= 0, by ``rule``."""
    width, height = size[..., 0], size[..., 1]
    if rule == "elliptical":
        return (ELLIPSE_ALPHA * size / 2).floor()
    if rule == "paper":
        radius = gaussian_radius(width.ceil(), height.ceil(), min_overlap, legacy=True)
    elif rule == "exact":
        radius = gaussian_radius(width, height, min_overlap)
    else:
        raise ValueError(f"unknown radius rule {rule!r}; choose paper, exact or elliptical")
    return radius.floor().clamp(min=0)[..., None].expand(size.shape)


def _batch_index(mask: torch.Tensor) -> torch.Tensor:
    """The batch index of each True entry of ``mask [B, N]``, in ``mask[mask]`` order."""
    B, N = mask.shape
    return torch.arange(B, device=mask.device)[:, None].expand(B, N)[mask]


def _draw_gaussians(cell: torch.Tensor, extent: torch.Tensor, labels: torch.Tensor, batch: torch.Tensor,
                    num_classes: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """Splat M Gaussians at once. ``cell [M, 2]`` (x, y), ``extent [M, 2]`` whole half-axes (rx, ry), ``labels
    [M]``, ``batch [M]``.

    Each object writes a window of side ``2 * R + 1`` (R the batch's largest half-axis), weighted
    ``exp(-dx^2 / 2 sx^2 - dy^2 / 2 sy^2)`` with ``s = (2 r + 1) / 6`` per axis inside its own half-axes and 0
    outside them; windows combine into the heatmap by ``scatter_reduce(amax)``.
    """
    B, h, w = shape
    heatmap = torch.zeros(B * num_classes * h * w, device=cell.device)
    if cell.numel() == 0:
        return heatmap.view(B, num_classes, h, w)
    R = int(extent.max())
    steps = torch.arange(-R, R + 1, device=cell.device)
    dy, dx = steps.view(1, -1, 1), steps.view(1, 1, -1)  # [1, S, 1], [1, 1, S]
    rx, ry = extent[:, 0].view(-1, 1, 1), extent[:, 1].view(-1, 1, 1)
    sx, sy = (2 * rx + 1) / 6, (2 * ry + 1) / 6
    value = torch.exp(-dx * dx / (2 * sx * sx) - dy * dy / (2 * sy * sy))  # [M, S, S]
    x = cell[:, 0].view(-1, 1, 1) + dx
    y = cell[:, 1].view(-1, 1, 1) + dy
    inside = (dx.abs() <= rx) & (dy.abs() <= ry) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    plane = (batch * num_classes + labels).view(-1, 1, 1)
    flat = (plane * h + y.clamp(0, h - 1)) * w + x.clamp(0, w - 1)  # [M, S, S]
    heatmap.scatter_reduce_(0, flat.flatten(), torch.where(inside, value, 0.0).flatten(), reduce="amax")
    return heatmap.view(B, num_classes, h, w)


def ignore_regions(crowd_boxes: torch.Tensor, crowd_mask: torch.Tensor, output_size: tuple[int, int],
                   stride: int) -> torch.Tensor:
    """Cells whose centre lies inside a crowd box: ``[B, 1, h, w]`` bool, for ``focal_loss(ignore=...)``.

    ``crowd_boxes [B, M, 4]`` xyxy in input pixels, ``crowd_mask [B, M]`` True for real boxes. The heatmap loss
    then neither rewards nor punishes predictions in COCO's ``iscrowd`` regions.
    """
    B, M = crowd_mask.shape
    h, w = output_size
    ys = (torch.arange(h, device=crowd_boxes.device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, device=crowd_boxes.device, dtype=torch.float32) + 0.5) * stride
    b = crowd_boxes.float()[..., None, None]  # [B, M, 4, 1, 1]
    inside_x = (xs >= b[:, :, 0]) & (xs <= b[:, :, 2])  # [B, M, 1, w]
    inside_y = (ys[:, None] >= b[:, :, 1]) & (ys[:, None] <= b[:, :, 3])  # [B, M, h, 1]
    inside = inside_x & inside_y & crowd_mask.bool()[..., None, None]  # [B, M, h, w]
    return inside.any(dim=1, keepdim=True)
