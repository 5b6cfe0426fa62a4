"""A seeded synthetic COCO-format dataset of shapes, generated on first use into a cache folder.

Five classes told apart by shape, not colour: circle, square, triangle, cross, star. Each object gets a colour from
a palette (independent of its class), a size of 16..100 px (diameter of its circumscribed circle) and a rotation;
images are 200..320 px on each side (so aspect ratios vary), hold 0..8 objects (classes drawn uniformly), on
noisy, gradient or striped backgrounds. Objects may be cut by the image border (at least half stays inside) and
may overlap (every object keeps at least 60% of its pixels visible). A box is the tight box of the object's pixels
inside the image (occluded pixels included), xyxy in the continuous pixel frame; the json stores it as COCO xywh.

Layout (the COCO layout with split names ``train`` and ``val``)::

    <cache>/<key>/annotations/instances_train.json, instances_val.json
    <cache>/<key>/train/000001.jpg ..., val/1000001.jpg ...

``<cache>`` is the ``root`` argument, else ``$DETECTOR_CACHE/synthetic``, else ``~/.cache/detector/synthetic``;
``<key>`` names the generator version and parameters. Generation writes a temporary sibling folder and renames
it into place, so an interrupted generation never leaves a partial dataset (only a ``.tmp-*`` folder that is never
read). Images are baseline JPEG at a fixed quality: the same seed gives the same bytes (with the same OpenCV
build).
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np

from detector.data.cocoformat import coco_annotations, write_coco_json

SYNTHETIC_CLASSES = ("circle", "square", "triangle", "cross", "star")
SYNTHETIC_VERSION = 1
VAL_ID_OFFSET = 1_000_000  # val image ids start after it, so ids are unique across the two splits

_PALETTE = np.array([(230, 40, 40), (40, 200, 60), (50, 90, 240), (240, 220, 40), (220, 60, 220), (40, 220, 230),
                     (250, 140, 30), (245, 245, 245)], dtype=np.float32)
_IMAGE_SIDE = (200, 320)
_OBJECT_SIZE = (16.0, 100.0)
_MAX_OBJECTS = 8
_JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 92, cv2.IMWRITE_JPEG_OPTIMIZE, 0, cv2.IMWRITE_JPEG_PROGRESSIVE, 0]
_MARGIN = 64  # canvas margin > the largest radius, so a shape is always drawn whole
_MIN_INSIDE = 0.5  # of an object's pixels inside the image
_MIN_VISIBLE = 0.6  # of an object's in-image pixels not covered by later objects
_MIN_COLOUR_DISTANCE = 120.0  # L1 distance (0..765) between an object's colour and the background under it


def synthetic_cache_root(root: str | Path | None = None) -> Path:
    """The folder holding generated synthetic datasets (see the module docstring)."""
    if root is not None:
        return Path(root)
    if os.environ.get("DETECTOR_CACHE"):
        return Path(os.environ["DETECTOR_CACHE"]) / "synthetic"
    return Path.home() / ".cache" / "detector" / "synthetic"


def synthetic_dataset(root: str | Path | None = None, seed: int = 0, num_train: int = 400,
                      num_val: int = 100) -> Path:
    """The folder of the synthetic dataset for these parameters, generated on first use (atomically)."""
    if num_train < 1 or num_val < 1:
        raise ValueError(f"synthetic splits need at least one image, got num_train={num_train}, num_val={num_val}")
    folder = synthetic_cache_root(root) / f"v{SYNTHETIC_VERSION}-seed{seed}-train{num_train}-val{num_val}"
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex}"
    try:
        write_synthetic(temporary, seed, num_train, num_val)
        os.rename(temporary, folder)
    except OSError:
        if not folder.is_dir():  # another process renaming its copy first is fine; anything else is not
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder


def is_synthetic_cache(root: str | Path) -> bool:
    """Whether ``root`` is a synthetic cache folder: not empty, and holding only generated sets
    (``v<version>-seed<seed>-train<n>-val<m>/``, or one being written)."""
    root = Path(root)
    names = [path.name for path in root.iterdir()] if root.is_dir() else []
    return bool(names) and all(re.fullmatch(r"v\d+-seed\d+-train\d+-val\d+", name) or name.startswith(".tmp-")
                               for name in names)


def write_synthetic(folder: Path, seed: int, num_train: int, num_val: int) -> None:
    """Write both splits (images and COCO json) into ``folder``."""
    (folder / "annotations").mkdir(parents=True)
    for split, count, first_id in (("train", num_train, 1), ("val", num_val, VAL_ID_OFFSET + 1)):
        (folder / split).mkdir()
        images, annotations = [], []
        for index in range(count):
            rng = np.random.default_rng([seed, first_id + index])
            image, boxes, labels = render_image(rng)
            image_id = first_id + index
            file_name = f"{image_id:06d}.jpg"
            data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), _JPEG_PARAMS)[1]
            (folder / split / file_name).write_bytes(data.tobytes())
            images.append({"id": image_id, "file_name": file_name, "width": image.shape[1], "height": image.shape[0]})
            annotations.extend(coco_annotations(image_id, boxes, labels + 1, first_id=len(annotations)))
        categories = [{"id": label + 1, "name": name} for label, name in enumerate(SYNTHETIC_CLASSES)]
        write_coco_json(folder / "annotations" / f"instances_{split}.json", images, annotations, categories)


def render_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: ``[H, W, 3]`` uint8 RGB, its ``[N, 4]`` float32 xyxy boxes and ``[N]`` int64 labels."""
    width, height = (int(s) for s in rng.integers(_IMAGE_SIDE[0], _IMAGE_SIDE[1] + 1, size=2))
    image = _background(rng, width, height)
    owner = np.full((height, width), -1, dtype=np.int32)  # index of the object on top at each pixel
    masks, labels = [], []
    for _ in range(int(rng.integers(0, _MAX_OBJECTS + 1))):
        label = int(rng.integers(len(SYNTHETIC_CLASSES)))
        mask = _place(rng, label, owner, masks)
        if mask is None:
            continue
        owner[mask] = len(masks)
        masks.append(mask)
        labels.append(label)
        _paint(rng, image, mask)
    boxes = np.array([_tight_box(mask) for mask in masks], dtype=np.float32).reshape(-1, 4)
    return image, boxes, np.array(labels, dtype=np.int64)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """``[H, W, 3]`` uint8: a muted noise, gradient or stripe texture."""
    colours = rng.uniform(30, 160, size=(2, 3)).astype(np.float32)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    along = (x * np.cos(angle) + y * np.sin(angle)) / max(width, height)  # [H, W] in about [-1, 1.4]
    kind = int(rng.integers(3))
    if kind == 0:
        weight = np.zeros_like(along)
    elif kind == 1:
        weight = np.clip(along, 0, 1)
    else:
        weight = 0.5 + 0.5 * np.sin(along * rng.uniform(10, 40))
    base = colours[0] + weight[..., None] * (colours[1] - colours[0])
    noise = rng.normal(0, rng.uniform(4, 20), size=(height, width, 3)).astype(np.float32)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _place(rng: np.random.Generator, label: int, owner: np.ndarray, masks: list[np.ndarray]) -> np.ndarray | None:
    """A ``[H, W]`` bool mask of a new object that respects the border and occlusion limits (20 tries), or None."""
    height, width = owner.shape
    for _ in range(20):
        size = rng.uniform(*_OBJECT_SIZE)
        centre = rng.uniform([0, 0], [width, height])
        canvas = _shape_canvas(label, centre + _MARGIN, size, rng.uniform(0, 2 * np.pi), (height, width))
        mask = canvas[_MARGIN:_MARGIN + height, _MARGIN:_MARGIN + width].astype(bool)
        if mask.sum() < _MIN_INSIDE * canvas.sum():
            continue
        kept = np.bincount(owner[~mask] + 1, minlength=len(masks) + 1)[1:]  # pixels each object keeps visible
        if np.all(kept >= _MIN_VISIBLE * np.array([m.sum() for m in masks])):
            return mask
    return None


def _shape_canvas(label: int, centre: np.ndarray, size: float, angle: float, shape: tuple[int, int]) -> np.ndarray:
    """``[H + 2m, W + 2m]`` uint8 canvas (m = margin) with the shape filled with 1 at ``centre`` (canvas pixels)."""
    height, width = shape
    canvas = np.zeros((height + 2 * _MARGIN, width + 2 * _MARGIN), dtype=np.uint8)
    radius = size / 2
    name = SYNTHETIC_CLASSES[label]
    if name == "circle":
        cv2.circle(canvas, tuple(int(v) for v in np.round(centre * 16)), int(round(radius * 16)), 1, -1,
                   lineType=cv2.LINE_8, shift=4)
        return canvas
    points = _outline(name, radius, angle) + centre  # [K, 2] (x, y)
    cv2.fillPoly(canvas, [np.round(points * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return canvas


def _outline(name: str, radius: float, angle: float) -> np.ndarray:
    """``[K, 2]`` polygon (x, y) of a shape centred at 0, vertices within ``radius``, rotated by ``angle``."""
    if name == "square":
        polar = [(radius, np.pi / 4 + k * np.pi / 2) for k in range(4)]
    elif name == "triangle":
        polar = [(radius, k * 2 * np.pi / 3) for k in range(3)]
    elif name == "star":
        polar = [(radius if k % 2 == 0 else 0.42 * radius, k * np.pi / 5) for k in range(10)]
    else:  # cross: a plus sign with arms of width 0.36 * size
        half = 0.36 * radius
        corners = [(half, half), (radius, half), (radius, -half), (half, -half), (half, -radius), (-half, -radius),
                   (-half, -half), (-radius, -half), (-radius, half), (-half, half), (-half, radius), (half, radius)]
        polar = [(np.hypot(x, y), np.arctan2(y, x)) for x, y in corners]
    rho, theta = np.array(polar, dtype=np.float64).T
    return np.stack([rho * np.cos(theta + angle), rho * np.sin(theta + angle)], axis=1)


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> None:
    """Fill ``mask`` in ``image`` (in place) with a palette colour that stands out from the background, plus noise."""
    under = image[mask].astype(np.float32).mean(axis=0)
    distance = np.abs(_PALETTE - under).sum(axis=1)
    candidates = np.flatnonzero(distance >= _MIN_COLOUR_DISTANCE)
    colour = _PALETTE[rng.choice(candidates) if candidates.size else int(distance.argmax())]
    noise = rng.normal(0, 6, size=(int(mask.sum()), 3))
    image[mask] = np.clip(colour + noise, 0, 255).astype(np.uint8)


def _tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """xyxy continuous-frame box of the True pixels of a ``[H, W]`` mask (pixel ``i`` spans ``[i, i + 1)``)."""
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
