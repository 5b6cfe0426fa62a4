"""The one writer of COCO-format ground truth: xyxy boxes in original pixels -> COCO ``xywh`` annotation dicts.

Used by every converter (the VOC ground truth, the synthetic generator). The reader is :mod:`detector.data.coco`;
detections (results files) are written by ``detector.evaluation.detections_to_coco``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from detector.boxes import xyxy_to_xywh


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
