"""Drawing: class colours, boxes and labels, the heatmap overlay, a demo frame, and a grid of predictions for
TensorBoard. Pixels only: detections come in as :class:`detector.detections.Detections` (or plain arrays), never
as a model.

Every image here is ``[H, W, 3]`` uint8 RGB.
"""
from __future__ import annotations

import colorsys
import math
from typing import Mapping, Sequence

import cv2
import numpy as np
import torch

from detector.detections import DEFAULT_SCORE_THRESHOLD, Detections, FrameResult
from detector.images import as_image
from detector.preprocess import letterbox, letterbox_boxes, letterbox_shape

GOLDEN_RATIO = 0.618033988749895


def class_color(label: int) -> tuple[int, int, int]:
    """A bright RGB colour for class ``label``, the same on every run (hues spaced by the golden ratio)."""
    r, g, b = colorsys.hsv_to_rgb((label * GOLDEN_RATIO) % 1.0, 0.75, 1.0)
    return int(255 * r), int(255 * g), int(255 * b)


def draw_label(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    """Write ``text`` on a filled box of ``color`` whose bottom-left corner is at (x, y), in place."""
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
    (w, h), baseline = cv2.getTextSize(text, font, scale, thickness)
    y = max(y, h + baseline)
    cv2.rectangle(image, (x, y - h - baseline), (x + w, y), color, cv2.FILLED)
    ink = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)
    cv2.putText(image, text, (x, y - baseline), font, scale, ink, thickness, cv2.LINE_AA)


def draw_detections(image: np.ndarray, detections: Detections) -> np.ndarray:
    """A copy of the RGB ``image`` with each box (xyxy in the image's pixels), class name and score drawn (after
    ``#<track id>`` for tracked detections).

    Drawn from the lowest score to the highest, so where boxes and labels overlap (CenterNet can put peaks of
    several classes on one object) the most confident label is the one on top.
    """
    out = image.copy()
    thickness = max(1, round(min(image.shape[:2]) / 320))
    for i in np.argsort(detections.scores, kind="stable"):  # ascending: the highest score is drawn last
        box, score, label, name = detections.boxes[i], detections.scores[i], detections.labels[i], detections.names[i]
        x1, y1, x2, y2 = (int(round(v)) for v in box.tolist())
        color = class_color(int(label))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        track = "" if detections.track_ids is None else f"#{detections.track_ids[i]} "
        draw_label(out, f"{track}{name} {score:.2f}", x1, y1, color)
    return out


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray, input_size: int, alpha: float = 0.45,
                    classes: Sequence[int] | None = None) -> np.ndarray:
    """Blend the class heatmaps over the RGB ``image`` (max over classes, JET colour map).

    ``heatmap [C, h, w]`` float probabilities on the output grid of ``image`` letterboxed at ``input_size``;
    ``classes``: only these class indices (None: every class).
    """
    H, W = image.shape[:2]
    new_w, new_h, input_w, input_h = letterbox_shape(W, H, input_size)
    if classes is not None:
        heatmap = heatmap[list(classes)]  # [len(classes), h, w]
    peak = heatmap.max(axis=0) if len(heatmap) else np.zeros(heatmap.shape[1:], dtype=np.float32)
    heat = cv2.resize(peak, (input_w, input_h), interpolation=cv2.INTER_LINEAR)[:new_h, :new_w]
    heat = cv2.resize(heat, (W, H), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image, 1 - alpha, cv2.cvtColor(colored, cv2.COLOR_BGR2RGB), alpha, 0)


def prediction_grid(images: Sequence[np.ndarray], detections: Sequence[Detections | Mapping],
                    class_names: Sequence[str], max_images: int = 8, conf: float = DEFAULT_SCORE_THRESHOLD,
                    tile: int = 256) -> np.ndarray:
    """Up to ``max_images`` images with their detections, letterboxed into ``tile x tile`` cells of a grid.

    Args:
        images: ``[H, W, 3]`` uint8 RGB arrays (sizes may differ).
        detections: per image, :class:`Detections` or a mapping with ``boxes [K, 4]`` xyxy in that image's pixels,
            ``scores [K]`` and ``labels [K]`` (numpy arrays or tensors); only scores ``>= conf`` are drawn.
        class_names: names by label.
        tile: cell size in pixels (a multiple of 32).

    Returns ``[rows * tile, cols * tile, 3]`` uint8 RGB, ``cols = ceil(sqrt(n))``, for TensorBoard's
    ``add_image(..., dataformats="HWC")``.
    """
    count = min(len(images), len(detections), max_images)
    if count < 1:
        raise ValueError(f"prediction_grid needs at least one image, got {len(images)} images, "
                         f"{len(detections)} detections, max_images={max_images}")
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    grid = np.zeros((rows * tile, cols * tile, 3), dtype=np.uint8)
    for i in range(count):
        row, col = divmod(i, cols)
        grid[row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = _grid_cell(
            as_image(images[i]), _as_detections(detections[i], class_names), conf, tile)
    return grid


def _as_detections(detections: Detections | Mapping, class_names: Sequence[str]) -> Detections:
    if isinstance(detections, Detections):
        return detections
    return Detections.from_arrays(detections["boxes"], detections["scores"], detections["labels"], class_names)


def _grid_cell(image: np.ndarray, detections: Detections, conf: float, tile: int) -> np.ndarray:
    boxed, meta = letterbox(image, tile)
    kept = detections.select(detections.scores >= conf)
    boxes = letterbox_boxes(torch.from_numpy(kept.boxes), torch.from_numpy(meta)).numpy()
    return draw_detections(boxed, Detections(boxes, kept.scores, kept.labels, kept.names))


def annotate(image: np.ndarray, result: FrameResult, input_size: int,
             classes: Sequence[int] | None = None) -> np.ndarray:
    """The demo's frame: optional heatmap overlay (of ``classes`` only, if given) and the detections."""
    if result.heatmap is not None:
        image = heatmap_overlay(image, result.heatmap, input_size, classes=classes)
    return draw_detections(image, result.detections)


def draw_fps(image: np.ndarray, fps: float) -> np.ndarray:
    """A copy of ``image`` with the frame rate in the top-left corner (for a window, never for a saved file)."""
    out = image.copy()
    draw_label(out, f"{fps:.1f} FPS", 0, 0, (0, 0, 0))
    return out
