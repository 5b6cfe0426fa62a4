"""Pascal VOC reader (``VOCdevkit/VOC2007``, ``VOCdevkit/VOC2012``) and its converter to COCO-format ground truth.

Coordinates: VOC stores 1-based, inclusive pixel indices ``xmin..xmax``. The reader converts them once, here, to
the package's continuous xyxy frame, where pixel ``i`` (0-based) spans ``[i, i + 1)``:
``(xmin - 1, ymin - 1, xmax, ymax)``. So a box covering pixels 1..10 (VOC) becomes ``x1 = 0, x2 = 10``, width 10.

``difficult`` objects are not training targets: they are returned as ``crowd_boxes`` (ignore regions). The converter
:func:`voc_to_coco` writes them with ``iscrowd: 1`` so that pycocotools' COCOeval ignores them (a detection on a
difficult object is neither a true nor a false positive), which is VOC's own rule.

Image ids: the file stem without underscores, as an integer (``000005`` -> 5, ``2008_000008`` -> 2008000008), which
is unique across VOC2007 and VOC2012; a split whose names are not all numeric (or collide) is numbered 0..n-1.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from detector.data.cocoformat import coco_annotations
from detector.data.dataset import Annotation, BoxRepairs, DatasetError, DetectionDataset, Sample, repair_boxes

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
# Category ids of the converted COCO-format ground truth: label + 1.
VOC_CATEGORY_IDS = tuple(range(1, len(VOC_CLASSES) + 1))
VOC_TRAIN_SPLITS = (("2007", "trainval"), ("2012", "trainval"))
VOC_VAL_SPLITS = (("2007", "test"),)


class VocDetection(DetectionDataset):
    """The images of one or more ``(year, image_set)`` splits of a ``VOCdevkit`` folder.

    Args:
        root: the ``VOCdevkit`` folder (holding ``VOC2007``, ``VOC2012``).
        splits: ``(year, image_set)`` pairs, e.g. ``[("2007", "trainval"), ("2012", "trainval")]``.
        transform: applied to each :class:`Sample`.
    """

    def __init__(self, root: str | Path, splits: Sequence[tuple[str, str]] = VOC_TRAIN_SPLITS,
                 transform: Callable[[Sample], Any] | None = None):
        root = Path(root)
        source = f"{root} {[tuple(split) for split in splits]}"
        entries = [(root / f"VOC{year}", name) for year, image_set in splits
                   for name in _read_image_set(root / f"VOC{year}" / "ImageSets" / "Main" / f"{image_set}.txt")]
        repairs = BoxRepairs()
        annotations = []
        for (folder, name), image_id in zip(entries, _image_ids([name for _, name in entries])):
            annotation, found = _read_xml(folder, name, image_id)
            annotations.append(annotation)
            repairs.add(found)
        repairs.warn(source)
        super().__init__(annotations, list(VOC_CLASSES), list(VOC_CATEGORY_IDS), source, transform)


def _read_image_set(path: Path) -> list[str]:
    """The image names listed in ``ImageSets/Main/<set>.txt``; a missing or empty list is an error."""
    try:
        names = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the image set: {error}") from error
    if not names:
        raise DatasetError(f"{path}: the image set is empty")
    return names


def _image_ids(names: list[str]) -> list[int]:
    """Integer ids from the file stems (see the module docstring)."""
    digits = [name.replace("_", "") for name in names]
    if all(d.isdigit() for d in digits) and len(set(digits)) == len(digits):
        return [int(d) for d in digits]
    return list(range(len(names)))


def _read_xml(folder: Path, name: str, image_id: int) -> tuple[Annotation, BoxRepairs]:
    """Parse ``Annotations/<name>.xml``: objects split into targets and difficult ones, boxes converted once."""
    path = folder / "Annotations" / f"{name}.xml"
    try:
        tree = ET.parse(path).getroot()
        width, height = (int(float(tree.findtext(f"size/{key}", ""))) for key in ("width", "height"))
    except (OSError, ET.ParseError) as error:
        raise DatasetError(f"{path}: cannot read the annotation: {error}") from error
    except ValueError as error:
        raise DatasetError(f"{path}: missing or invalid <size> width/height: {error}") from error
    boxes, labels, difficult = _read_objects(tree, path)
    boxes, keep, repairs = repair_boxes(boxes, torch.full((len(boxes),), float(width)),
                                        torch.full((len(boxes),), float(height)))
    boxes, labels, difficult = boxes.numpy()[keep.numpy()], labels[keep.numpy()], difficult[keep.numpy()]
    annotation = Annotation(file=folder / "JPEGImages" / f"{name}.jpg", image_id=image_id,
                            boxes=boxes[~difficult], labels=labels[~difficult], crowd_boxes=boxes[difficult],
                            crowd_labels=labels[difficult],
                            width=width, height=height)
    return annotation, repairs


def _read_objects(tree: ET.Element, path: Path) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``[N, 4]`` float32 xyxy (0-based continuous, see the module docstring), ``[N]`` labels, ``[N]`` difficult."""
    boxes, labels, difficult = [], [], []
    for obj in tree.iter("object"):
        name = (obj.findtext("name") or "").strip().lower()
        if name not in VOC_CLASSES:
            raise DatasetError(f"{path}: unknown class {name!r}; VOC classes are {VOC_CLASSES}")
        try:
            xmin, ymin, xmax, ymax = (float(obj.findtext(f"bndbox/{key}", ""))
                                      for key in ("xmin", "ymin", "xmax", "ymax"))
            is_difficult = int(obj.findtext("difficult") or 0) == 1
        except ValueError as error:
            raise DatasetError(f"{path}: object {name!r} has an invalid bndbox or difficult flag: {error}") from error
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])
        labels.append(VOC_CLASSES.index(name))
        difficult.append(is_difficult)
    return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), np.array(labels, dtype=np.int64),
            np.array(difficult, dtype=bool))


def voc_to_coco(dataset: VocDetection) -> dict[str, Any]:
    """The ground truth of a VOC dataset as a COCO-format dict (difficult objects written with ``iscrowd: 1``).

    Image ids are the dataset's ids, category ids are ``label + 1``, boxes are COCO xywh in the reader's
    continuous 0-based pixel frame, so COCOeval scores detections in the frame the detector predicts.
    """
    images, annotations = [], []
    for ann in dataset.annotations:
        images.append({"id": ann.image_id, "file_name": ann.file.name, "width": ann.width, "height": ann.height})
        for boxes, labels, crowd in ((ann.boxes, ann.labels, 0), (ann.crowd_boxes, ann.crowd_labels, 1)):
            annotations.extend(coco_annotations(ann.image_id, boxes, [VOC_CATEGORY_IDS[i] for i in labels], crowd,
                                                len(annotations)))
    categories = [{"id": cat_id, "name": name} for cat_id, name in zip(VOC_CATEGORY_IDS, VOC_CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_voc_coco_json(dataset: VocDetection, path: str | Path) -> Path:
    """Write :func:`voc_to_coco` of ``dataset`` to ``path`` (json); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(voc_to_coco(dataset)))
    return path
