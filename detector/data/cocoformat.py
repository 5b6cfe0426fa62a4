"""The one writer of COCO-format ground truth: xyxy boxes in original pixels -> COCO ``xywh`` annotation dicts.

Used by every converter: :func:`dataset_to_coco` (the ground truth of any reader, VOC and YOLO, which is how those
datasets are evaluated with pycocotools) and the synthetic generator. The reader is :mod:`detector.data.coco`;
detections (results files) are written by ``detector.evaluation.detections_to_coco``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from detector.boxes import xyxy_to_xywh
from detector.data.dataset import DetectionDataset


def coco_annotations(image_id: int, boxes: np.ndarray, category_ids: Sequence[int], iscrowd: int = 0,
                     first_id: int = 0) -> list[dict[str, Any]]:
    """COCO annotation dicts for ``boxes [N, 4]`` float32 xyxy in original pixels and their ``N`` dataset category
    ids; annotation ids are ``first_id + 1 ..``; ``area`` is the box area."""
    xywh = xyxy_to_xywh(torch.from_numpy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))).tolist()
    return [{"id": first_id + i + 1, "image_id": int(image_id), "category_id": int(category_id), "bbox": box,
             "area": box[2] * box[3], "iscrowd": int(iscrowd)}
            for i, (box, category_id) in enumerate(zip(xywh, category_ids))]


def write_coco_json(path: str | Path, images: list[dict], annotations: list[dict], categories: list[dict]) -> Path:
    """Write a COCO-format json (``images``, ``annotations``, ``categories``) to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def dataset_to_coco(dataset: DetectionDataset) -> dict[str, Any]:
    """The ground truth of a dataset as a COCO-format dict (``images``, ``annotations``, ``categories``).

    Image ids are the dataset's ids, category ids are ``dataset.category_ids[label]``, boxes are COCO xywh in the
    reader's continuous 0-based pixel frame (so COCOeval scores detections in the frame the detector predicts);
    crowd boxes (VOC ``difficult``) are written with ``iscrowd: 1``, which COCOeval ignores.
    """
    images, annotations = [], []
    for ann in dataset.annotations:
        images.append({"id": ann.image_id, "file_name": ann.file.name, "width": ann.width, "height": ann.height})
        for boxes, labels, crowd in ((ann.boxes, ann.labels, 0), (ann.crowd_boxes, ann.crowd_labels, 1)):
            category_ids = [dataset.category_ids[int(label)] for label in labels]
            annotations.extend(coco_annotations(ann.image_id, boxes, category_ids, crowd, len(annotations)))
    categories = [{"id": cat_id, "name": name} for cat_id, name in zip(dataset.category_ids, dataset.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_dataset_json(dataset: DetectionDataset, path: str | Path) -> Path:
    """Write :func:`dataset_to_coco` of ``dataset`` to ``path`` (json); returns the path."""
    return write_coco_json(path, **dataset_to_coco(dataset))
