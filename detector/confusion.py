"""The confusion matrix of a detector: which class it calls each ground-truth object, and what it finds on the
background, counted from the same COCO results list and ground truth the COCO metric scores.

The rules (each one tested in ``tests/test_plots.py``):
- Rows are the ground-truth classes in label order, then ``background``; columns are the predicted classes in label
  order, then ``background``. ``counts[g, p]``: objects of class ``g`` detected as class ``p``.
- Only detections with ``score >= score_threshold`` count (default ``detections.DEFAULT_SCORE_THRESHOLD``, the
  predictor's and the demo's threshold): the matrix shows the detector as it is used.
- Per image, detections are matched by descending score, class-agnostic: each takes the still-unmatched object of
  highest IoU with it, if that IoU is >= ``iou_threshold`` (0.5). A match adds 1 to ``counts[object class,
  predicted class]``: on the diagonal when right, off it when the class is wrong.
- A detection matching no free object (on the background, or a duplicate of an object already taken) adds 1 to
  ``counts[background, predicted class]``; an object no detection took adds 1 to ``counts[object class,
  background]``. ``counts[background, background]`` stays 0.
- Ground truth marked ``iscrowd`` (COCO crowds, VOC ``difficult`` objects) is left out, and a detection that
  misses every free object but overlaps one of them at IoU >= ``iou_threshold`` counts nowhere (as in VOC07).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO

from detector.boxes import iou_xyxy, xywh_to_xyxy
from detector.detections import DEFAULT_SCORE_THRESHOLD
from detector.overwrite import replacing

BACKGROUND = "background"


@dataclass
class ConfusionMatrix:
    """``counts [C + 1, C + 1]`` int64: rows ground-truth class then background, columns predicted class then
    background (see the module docstring); ``class_names``: the C names in label order; the thresholds used."""

    counts: np.ndarray
    class_names: list[str]
    score_threshold: float = DEFAULT_SCORE_THRESHOLD
    iou_threshold: float = 0.5

    @property
    def names(self) -> list[str]:
        """The row and column names: the classes, then ``background``."""
        return [*self.class_names, BACKGROUND]

    def to_csv(self, path: str | Path) -> Path:
        """Write the counts with a header row of predicted names and a first column of ground-truth names."""
        path = Path(path)
        with replacing(path) as temporary, temporary.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["ground truth \\ predicted", *self.names])
            for name, row in zip(self.names, self.counts.tolist()):
                writer.writerow([name, *row])
        return path


def confusion_matrix(gt: COCO, results: list[dict], category_ids: list[int], image_ids: list[int] | None = None,
                     score_threshold: float = DEFAULT_SCORE_THRESHOLD, iou_threshold: float = 0.5) -> ConfusionMatrix:
    """Count ``results`` (COCO result dicts, the dataset's category ids) against ``gt`` over ``image_ids`` (default:
    every image). ``category_ids[label]`` is the dataset id of each label; the rules are the module docstring's."""
    label_of = {int(cid): label for label, cid in enumerate(category_ids)}
    num_classes = len(category_ids)
    counts = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    ids = sorted(set(image_ids)) if image_ids is not None else sorted(gt.getImgIds())
    by_image: dict[int, list[dict]] = {}
    for result in results:
        if result["score"] >= score_threshold:
            by_image.setdefault(result["image_id"], []).append(result)
    for image_id in ids:
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[image_id]))
        _count_image(counts, anns, by_image.get(image_id, []), label_of, iou_threshold)
    names = [gt.cats[cid]["name"] if cid in gt.cats else str(label) for label, cid in enumerate(category_ids)]
    return ConfusionMatrix(counts, names, score_threshold, iou_threshold)


def _count_image(counts: np.ndarray, anns: list[dict], dets: list[dict], label_of: dict[int, int],
                 iou_threshold: float) -> None:
    background = counts.shape[0] - 1
    objects = [a for a in anns if not a.get("iscrowd", 0)]
    crowds = [a for a in anns if a.get("iscrowd", 0)]
    dets = sorted(dets, key=lambda d: -d["score"])
    iou = _iou_matrix(dets, objects)  # [D, G]
    crowd_iou = _iou_matrix(dets, crowds)  # [D, Gc]
    taken = np.zeros(len(objects), dtype=bool)
    for d, det in enumerate(dets):
        predicted = label_of[int(det["category_id"])]
        free = np.where(taken, -1.0, iou[d])
        best = int(free.argmax()) if len(objects) else -1
        if best >= 0 and free[best] >= iou_threshold:
            taken[best] = True
            counts[label_of[int(objects[best]["category_id"])], predicted] += 1
        elif not (crowd_iou[d] >= iou_threshold).any():
            counts[background, predicted] += 1
    for obj, found in zip(objects, taken):
        if not found:
            counts[label_of[int(obj["category_id"])], background] += 1


def _iou_matrix(dets: list[dict], anns: list[dict]) -> np.ndarray:
    """``[len(dets), len(anns)]`` IoU of the COCO xywh boxes."""
    if not dets or not anns:
        return np.zeros((len(dets), len(anns)))
    boxes = [xywh_to_xyxy(torch.tensor([x["bbox"] for x in group], dtype=torch.float64)) for group in (dets, anns)]
    return iou_xyxy(*boxes).numpy()
