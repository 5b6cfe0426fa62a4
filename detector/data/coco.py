"""COCO-format reader: the official COCO layout, or any COCO-format json with its image folder (a user's own data).

Labels are contiguous ``0..C-1`` in the order of the category ids; ``category_ids[label]`` maps back to the json's
id (COCO's 80 classes have ids 1..90 with gaps), which is what a results file needs. Boxes change frame here, once:
COCO ``xywh`` -> xyxy original pixels (``detector.boxes.xywh_to_xyxy``). Annotations with ``iscrowd=1`` are not
training targets; they are returned as ``crowd_boxes``. Images without annotations are kept (background images).
Box repairs and errors follow :mod:`detector.data.dataset`.

As the labelling tools write it: a category that has no annotation and is the ``supercategory`` of other
categories (Roboflow's root category: id 0, the project's name) is not a class (``notes`` holds the line that
says so, which the data module prints); other
fields (CVAT's ``attributes``) are ignored. An image is ``image_dir / file_name``; when the first image is not
there but its bare file name is (``file_name`` holding a folder of another machine), every image is looked up by
its bare file name. A ``file_name`` that leaves the image folder (absolute, or through ``..``) is refused unless
``allow_outside_images`` (``--data.allow_outside_images true``). An image entry whose ``id`` is not an integer or
whose ``width`` / ``height`` is not a positive number is refused, naming the entry.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pycocotools.coco import COCO

from detector.boxes import xywh_to_xyxy
from detector.data.dataset import Annotation, DatasetError, DetectionDataset, Sample, repair_boxes

_REQUIRED = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}


def load_coco_json(path: str | Path) -> dict[str, Any]:
    """Read and check a COCO-format json; raises :class:`DatasetError` naming the file and what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the annotation file: {error}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: malformed json: {error}") from error
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a json object at the top level, got {type(data).__name__}")
    for key, fields in _REQUIRED.items():
        _check_entries(data, key, fields, path)
    return data


def _check_entries(data: dict[str, Any], key: str, fields: tuple[str, ...], path: str | Path) -> None:
    """Every entry of ``data[key]`` is an object with ``fields``."""
    if key not in data:
        raise DatasetError(f"{path}: missing the key {key!r} (a COCO-format json needs images, annotations, "
                           "categories)")
    if not isinstance(data[key], list):
        raise DatasetError(f"{path}: {key!r} must be a list, got {type(data[key]).__name__}")
    for position, entry in enumerate(data[key]):
        if not isinstance(entry, dict) or any(name not in entry for name in fields):
            raise DatasetError(f"{path}: {key}[{position}] = {str(entry)[:200]} lacks one of the fields {fields}")


def coco_from_dict(data: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` object (index built) from an already loaded COCO-format dict, quietly."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoDetection(DetectionDataset):
    """The images of one COCO-format json, read from ``image_dir``.

    Args:
        json_path: COCO-format annotation file (``images``, ``annotations``, ``categories``).
        image_dir: folder holding the images named by ``file_name``.
        transform: applied to each :class:`Sample` (see :mod:`detector.data.transforms`).
        allow_outside_images: read a ``file_name`` that leaves ``image_dir`` (absolute or through ``..``); refused
            by default.

    Attributes: ``class_names``, ``category_ids`` (label -> json category id), ``coco`` (see its docstring).
    """

    def __init__(self, json_path: str | Path, image_dir: str | Path,
                 transform: Callable[[Sample], Any] | None = None, allow_outside_images: bool = False):
        data = load_coco_json(json_path)
        categories = sorted(class_categories(data), key=lambda c: c["id"])
        self.notes = [f"categories: {c['name']!r} (id {c['id']}) has no box and is only the "
                      "supercategory of the others: not a class" for c in root_categories(data)]
        category_ids = [int(c["id"]) for c in categories]
        if len(set(category_ids)) != len(category_ids):
            raise DatasetError(f"{json_path}: duplicate category ids in {category_ids}")
        annotations = _read_annotations(data, category_ids, Path(image_dir), json_path)
        if not allow_outside_images:
            _refuse_outside(annotations, Path(image_dir), json_path)
        super().__init__(annotations, [str(c["name"]) for c in categories], category_ids, str(json_path), transform)
        self.json_path = Path(json_path)

    @functools.cached_property
    def coco(self) -> COCO:
        """pycocotools ``COCO`` of the json (original image and category ids): the evaluation ground truth.

        Built on first access (the json is read again), so a training split never holds a second copy in memory.
        """
        data = load_coco_json(self.json_path)
        return coco_from_dict({**data, "categories": class_categories(data)})


def root_categories(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The categories with no annotation that are the supercategory of others (Roboflow's project category)."""
    used = {ann["category_id"] for ann in data["annotations"]}
    parents = {c.get("supercategory") for c in data["categories"] if c.get("supercategory") != c["name"]}
    return [c for c in data["categories"] if c["id"] not in used and c["name"] in parents]


def class_categories(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The categories that are classes: all but :func:`root_categories`."""
    roots = root_categories(data)
    return [c for c in data["categories"] if not any(c is root for root in roots)]


def _image_file(image_dir: Path, images: list[dict[str, Any]]) -> Callable[[str], Path]:
    """How a ``file_name`` becomes a path (see the module docstring)."""
    if images:
        first = str(images[0]["file_name"])
        if not (image_dir / first).is_file() and (image_dir / Path(first.replace("\\", "/")).name).is_file():
            return lambda name: image_dir / Path(str(name).replace("\\", "/")).name
    return lambda name: image_dir / name


def _read_annotations(data: dict[str, Any], category_ids: list[int], image_dir: Path,
                      path: str | Path) -> list[Annotation]:
    """One :class:`Annotation` per json image, in the json's order, boxes repaired and counted."""
    images = data["images"]
    _check_images(images, path)
    image_index = {image["id"]: i for i, image in enumerate(images)}
    if len(image_index) != len(images):
        seen: set[int] = set()
        twice = sorted({image["id"] for image in images if image["id"] in seen or seen.add(image["id"])})
        raise DatasetError(f"{path}: duplicate image ids {twice[:10]}{' ...' if len(twice) > 10 else ''}: each "
                           "image entry needs its own id")
    owner, labels, crowd = _annotation_fields(data["annotations"], image_index, category_ids, path)
    boxes = _annotation_boxes(data["annotations"], path)
    sizes = torch.tensor([[image["width"], image["height"]] for image in images], dtype=torch.float32)
    sizes = sizes.reshape(-1, 2)[torch.from_numpy(owner)]  # [A, 2]
    boxes, keep, repairs = repair_boxes(xywh_to_xyxy(boxes), sizes[:, 0], sizes[:, 1])
    repairs.warn(path)
    keep = keep.numpy()
    return _group_by_image(images, image_dir, owner[keep], boxes.numpy()[keep], labels[keep], crowd[keep])


def _check_images(images: list[dict[str, Any]], path: str | Path) -> None:
    """Every image entry has an integer ``id`` and a positive finite ``width`` and ``height``."""
    for position, image in enumerate(images):
        if not isinstance(image["id"], int) or isinstance(image["id"], bool):
            raise DatasetError(f"{path}: images[{position}] has the id {image['id']!r}; image ids must be integers")
        for key in ("width", "height"):
            value = image[key]
            if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
                    or value <= 0):
                raise DatasetError(f"{path}: images[{position}] (id {image['id']}, {image['file_name']}) has the "
                                   f"{key} {value!r}; it must be the image's positive size in pixels")


def _refuse_outside(annotations: list[Annotation], image_dir: Path, path: str | Path) -> None:
    """Refuse an image path that leaves ``image_dir`` (an absolute ``file_name`` or one through ``..``)."""
    folder = os.path.normpath(os.path.abspath(image_dir))
    for ann in annotations:
        file = os.path.normpath(os.path.abspath(ann.file))
        if os.path.commonpath([folder, file]) != folder:
            raise DatasetError(f"{path}: image id {ann.image_id} names {ann.file}, outside the image folder "
                               f"{image_dir}; move it there, or allow it with --data.allow_outside_images true")


def _annotation_fields(annotations: list[dict[str, Any]], image_index: dict[int, int], category_ids: list[int],
                       path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per annotation: the index of its image, its contiguous label and its crowd flag (``[A]`` arrays)."""
    label_of = {cat_id: label for label, cat_id in enumerate(category_ids)}
    owner, labels, crowd = [], [], []
    for position, ann in enumerate(annotations):
        if ann["category_id"] not in label_of:
            raise DatasetError(f"{path}: annotations[{position}] (id {ann.get('id')}) names the unknown category "
                               f"{ann['category_id']!r}; known ids are {category_ids}")
        if ann["image_id"] not in image_index:
            raise DatasetError(f"{path}: annotations[{position}] (id {ann.get('id')}) names the unknown image "
                               f"{ann['image_id']!r}")
        owner.append(image_index[ann["image_id"]])
        labels.append(label_of[ann["category_id"]])
        crowd.append(bool(ann.get("iscrowd", 0)))
    return np.array(owner, dtype=np.int64), np.array(labels, dtype=np.int64), np.array(crowd, dtype=bool)


def _annotation_boxes(annotations: list[dict[str, Any]], path: str | Path) -> torch.Tensor:
    """``[A, 4]`` float32 COCO xywh of every annotation; a bbox that is not 4 numbers is an error."""
    try:
        boxes = np.array([ann["bbox"] for ann in annotations], dtype=np.float32).reshape(-1, 4)
    except (ValueError, TypeError) as error:
        raise DatasetError(f"{path}: every annotation bbox must be 4 numbers [x, y, w, h]: {error}") from error
    if len(boxes) != len(annotations):
        raise DatasetError(f"{path}: every annotation bbox must be 4 numbers [x, y, w, h]")
    return torch.from_numpy(boxes)


def _group_by_image(images: list[dict[str, Any]], image_dir: Path, owner: np.ndarray, boxes: np.ndarray,
                    labels: np.ndarray, crowd: np.ndarray) -> list[Annotation]:
    """Split the flat ``[A]`` annotation arrays into one :class:`Annotation` per image (``owner`` = image index)."""
    order = np.argsort(owner, kind="stable")
    owner, boxes, labels, crowd = owner[order], boxes[order], labels[order], crowd[order]
    bounds = np.searchsorted(owner, np.arange(len(images) + 1))
    image_file = _image_file(image_dir, images)
    result = []
    for i, image in enumerate(images):
        part = slice(bounds[i], bounds[i + 1])
        is_crowd = crowd[part]
        result.append(Annotation(
            file=image_file(image["file_name"]),
            image_id=int(image["id"]),
            boxes=np.ascontiguousarray(boxes[part][~is_crowd]),
            labels=np.ascontiguousarray(labels[part][~is_crowd]),
            crowd_boxes=np.ascontiguousarray(boxes[part][is_crowd]),
            crowd_labels=np.ascontiguousarray(labels[part][is_crowd]),
            width=int(image["width"]),
            height=int(image["height"]),
        ))
    return result
