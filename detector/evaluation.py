"""Evaluation: the official COCO metric (pycocotools ``COCOeval``), Pascal VOC07 mAP, and the :class:`Evaluator`
that collects detections batch by batch (on one or several DDP ranks) and scores them: the metrics, the per-class
precision-recall curves at IoU 0.5 and the confusion matrix (``detector.confusion``), in one :class:`EvalResult`.

Detections travel as a COCO results list: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` in
original pixels with the dataset's own category ids; ``detections_to_coco`` is the one place that writes COCO xywh.
No Lightning here: ``torch.distributed`` is used directly when it is initialised.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.boxes import iou_xyxy, xywh_to_xyxy, xyxy_to_xywh
from detector.confusion import ConfusionMatrix, confusion_matrix
from detector.overwrite import write_text

COCO_METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
PR_RECALL = np.linspace(0.0, 1.0, 101)  # COCOeval's recall thresholds: the x of the precision-recall curves


def detections_to_coco(image_ids: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                       category_ids: list[int], min_score: float = 0.0) -> list[dict]:
    """One image's or a batch's detections as COCO result dicts.

    ``image_ids [B]``, ``boxes [B, K, 4]`` xyxy in original pixels, ``scores [B, K]``, ``labels [B, K]``
    (contiguous indices, mapped to dataset ids through ``category_ids``).
    """
    xywh = xyxy_to_xywh(boxes.float()).cpu().numpy().round(2)
    scores, labels = scores.float().cpu().numpy(), labels.cpu().numpy()
    results = []
    for i, image_id in enumerate(image_ids.tolist()):
        keep = scores[i] > min_score
        for box, score, label in zip(xywh[i][keep], scores[i][keep], labels[i][keep]):
            results.append({"image_id": int(image_id), "category_id": int(category_ids[label]),
                            "bbox": [float(v) for v in box], "score": round(float(score), 5)})
    return results


@dataclass
class CocoResult:
    """``metrics``: the six summary APs (0..1; -1 where a size range has no objects); ``per_class``: AP per
    class name; ``summary``: pycocotools' printed table; ``pr50``: per class name, the precision-recall curve at
    IoU 0.5 (all areas, 100 detections), ``[101]`` precision at the recalls :data:`PR_RECALL` (COCOeval's
    interpolated precision; -1 everywhere for a class without ground truth). Its mean is the class's AP50."""

    metrics: dict[str, float]
    per_class: dict[str, float] = field(default_factory=dict)
    summary: str = ""
    pr50: dict[str, np.ndarray] = field(default_factory=dict)


def coco_evaluate(gt: COCO, results: list[dict], image_ids: list[int] | None = None) -> CocoResult:
    """Run ONE ``COCOeval`` (bbox) of ``results`` against ``gt`` over ``image_ids`` (default: every image)."""
    ids = sorted(set(image_ids)) if image_ids is not None else sorted(gt.getImgIds())
    if not results:  # pycocotools cannot load an empty results list; nothing detected scores 0
        names = [c["name"] for c in gt.loadCats(gt.getCatIds())]
        return CocoResult({name: 0.0 for name in COCO_METRICS}, {name: 0.0 for name in names}, "no detections",
                          {name: np.zeros_like(PR_RECALL) for name in names})
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
    evaluator = COCOeval(gt, dt, iouType="bbox")
    evaluator.params.imgIds = ids
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    metrics = {name: float(value) for name, value in zip(COCO_METRICS, evaluator.stats[:6])}
    return CocoResult(metrics, _per_class_ap(gt, evaluator), _summary_lines(summary.getvalue()),
                      _pr_curves(gt, evaluator))


def _per_class_ap(gt: COCO, evaluator: COCOeval) -> dict[str, float]:
    precision = evaluator.eval["precision"]  # [T iou, R recall, K class, A area, M maxDets]
    per_class = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_class[gt.cats[int(cat_id)]["name"]] = float(values.mean()) if values.size else float("nan")
    return per_class


def _pr_curves(gt: COCO, evaluator: COCOeval, iou: float = 0.5) -> dict[str, np.ndarray]:
    precision = evaluator.eval["precision"]  # [T iou, R recall, K class, A area, M maxDets]
    t = int(np.argmin(np.abs(evaluator.params.iouThrs - iou)))
    return {gt.cats[int(cat_id)]["name"]: precision[t, :, k, 0, -1].astype(np.float64)
            for k, cat_id in enumerate(evaluator.params.catIds)}


def _summary_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.strip().startswith("Average"))


def format_table(result: CocoResult, title: str = "") -> str:
    """A human-readable table: the summary metrics (0-100) and the per-class AP; ``-`` where there is nothing to
    score (a size range or a class without ground truth: COCOeval's -1, our NaN)."""
    lines = [title] if title else []
    lines.append("  ".join(f"{name:>9}" for name in COCO_METRICS))
    lines.append("  ".join(f"{_percent(result.metrics[name]):>9}" for name in COCO_METRICS))
    if result.per_class:
        width = max(len(name) for name in result.per_class)
        lines.append("per-class AP:")
        lines += [f"  {name:<{width}}  {_percent(ap):>6}" for name, ap in result.per_class.items()]
    return "\n".join(lines)


def _percent(value: float) -> str:
    """0..1 -> ``"12.34"``; ``"-"`` for no value (negative or NaN)."""
    return f"{100 * value:.2f}" if value >= 0 else "-"


@dataclass
class EvalResult:
    """What :meth:`Evaluator.compute` returns: the COCO result, the VOC07 mAPs (when asked for), the number of
    images scored and the confusion matrix (``detector.confusion``). ``metrics``: one flat dict of them (0..1), as
    logged under ``val/``."""

    coco: CocoResult
    voc: dict[str, float] | None = None
    images: int = 0
    setting: str = ""  # how the detections were made, e.g. "letterbox 512, flip test"
    confusion: ConfusionMatrix | None = None

    @property
    def metrics(self) -> dict[str, float]:
        metrics = dict(self.coco.metrics)
        if self.voc is not None:
            metrics.update(mAP50_voc07=self.voc["mAP50_11pt"], mAP50_allpoint=self.voc["mAP50_allpt"])
        metrics["images"] = float(self.images)
        return metrics

    def table(self, title: str = "") -> str:
        """:func:`format_table` of the COCO result under ``title, setting``, the number of images, the VOC07 mAPs."""
        lines = [format_table(self.coco, ", ".join(part for part in (title, self.setting) if part)),
                 f"images: {self.images}"]
        if self.voc is not None:
            lines += [f"mAP50_voc07: {100 * self.voc['mAP50_11pt']:.2f}",
                      f"mAP50_allpoint: {100 * self.voc['mAP50_allpt']:.2f}"]
        return "\n".join(lines)


class Evaluator:
    """Scores a split: ``update`` per batch, ``synchronize`` once every rank has seen its share, ``compute``.

    Each image counts once: a repeated image id (the distributed sampler pads the last batches with repeats) keeps
    the detections first reported for it, on this rank and across ranks.

    Args:
        gt: the split's ground truth (original image and category ids, original pixels).
        category_ids: the dataset's category id of each label.
        voc07: also compute the Pascal VOC07 mAP (11-point and all-point, at IoU 0.5).
        results_path: ``compute`` writes the COCO results json here (rank 0 only).
        setting: how the detections are made, carried into the result (for its table).
    """

    def __init__(self, gt: COCO, category_ids: list[int], voc07: bool = False,
                 results_path: str | Path | None = None, setting: str = ""):
        self.gt = gt
        self.setting = setting
        self.category_ids = list(category_ids)
        self.voc07 = voc07
        self.results_path = Path(results_path) if results_path else None
        self.results: list[dict] = []
        self.image_ids: set[int] = set()

    def update(self, image_ids: torch.Tensor, detections: dict[str, torch.Tensor],
               image_sizes: torch.Tensor | None = None) -> None:
        """Add a batch: ``image_ids [B]`` and ``detections`` as ``detector.inference.pipeline.postprocess`` returns them
        (``boxes [B, K, 4]`` xyxy original pixels, ``scores [B, K]``, ``labels [B, K]``).

        ``image_sizes [B, 2]``: each decoded image's real ``(width, height)``. Where the ground truth declares another
        size for an image, the reader rescaled its boxes to the file (``detector.data.dataset``), so its detections
        are scaled back here into the frame the ground truth is in."""
        new = [i not in self.image_ids for i in image_ids.tolist()]
        keep = torch.tensor(new, dtype=torch.bool, device=image_ids.device)
        boxes = detections["boxes"]
        if image_sizes is not None:
            boxes = self._in_declared_frame(image_ids, boxes, image_sizes)
        self.results += detections_to_coco(image_ids[keep], boxes[keep], detections["scores"][keep],
                                           detections["labels"][keep], self.category_ids)
        self.image_ids.update(image_ids.tolist())

    def _in_declared_frame(self, image_ids: torch.Tensor, boxes: torch.Tensor,
                           image_sizes: torch.Tensor) -> torch.Tensor:
        """``boxes [B, K, 4]`` in each image's real pixels -> the pixels of the size its ground truth declares."""
        if self.gt is None:
            return boxes
        real = image_sizes.to(device=boxes.device, dtype=boxes.dtype)
        declared = real.clone()
        for row, image_id in enumerate(image_ids.tolist()):
            entry = self.gt.imgs.get(image_id, {})
            width, height = entry.get("width"), entry.get("height")
            if width and height:
                declared[row] = torch.tensor([width, height], dtype=boxes.dtype)
        return boxes * (declared / real).repeat(1, 2)[:, None, :]

    def synchronize(self) -> None:
        """Merge every rank's detections into every rank (a collective under DDP: all ranks call it)."""
        self.results, ids = gather_detections(self.results, sorted(self.image_ids))
        self.image_ids = set(ids)

    def compute(self) -> EvalResult:
        """ONE ``COCOeval`` (and VOC07) over the images seen, on rank 0, sent to every rank (a collective under
        DDP); rank 0 also writes ``results_path``. Call :meth:`synchronize` first."""
        payload = [self._compute() if _rank() == 0 else None]
        if _distributed():
            dist.broadcast_object_list(payload, src=0)
        return payload[0]

    def _compute(self) -> EvalResult:
        image_ids = sorted(self.image_ids)
        voc = voc07_map(self.gt, self.results, image_ids=image_ids) if self.voc07 else None
        if self.results_path is not None:
            write_text(self.results_path, json.dumps(self.results))  # a temporary file renamed over it
        confusion = confusion_matrix(self.gt, self.results, self.category_ids, image_ids)
        return EvalResult(coco_evaluate(self.gt, self.results, image_ids), voc, len(image_ids), self.setting,
                          confusion)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def gather_detections(results: list[dict], image_ids: list[int]) -> tuple[list[dict], list[int]]:
    """Every rank's detections, each image counted once (a collective under DDP).

    ``all_gather_object`` takes lists of any length per rank. An image seen by several ranks keeps the detections
    of the first rank that reported it.
    """
    if not _distributed():
        parts = [(results, image_ids)]
    else:
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (results, image_ids))
    merged, seen = [], set()
    for rank_results, rank_ids in parts:
        new = set(rank_ids) - seen
        merged += [r for r in rank_results if r["image_id"] in new]
        seen |= new
    return merged, sorted(seen)


def voc07_map(gt: COCO, results: list[dict], iou_threshold: float = 0.5,
              image_ids: list[int] | None = None) -> dict[str, float]:
    """Pascal VOC mAP at IoU ``iou_threshold``, the 11-point (VOC07) and the all-point interpolation.

    Ground truth marked ``iscrowd`` (how ``difficult`` VOC objects are written) is ignored: a detection matching
    it is neither a true nor a false positive, and it does not count in recall.
    Returns ``{"mAP50_11pt", "mAP50_allpt", "AP50_11pt/<class>", ...}`` in 0..1.
    """
    ids = set(image_ids) if image_ids is not None else set(gt.getImgIds())
    out, aps11, aps_all = {}, [], []
    for cat in gt.loadCats(gt.getCatIds()):
        dets = [r for r in results if r["category_id"] == cat["id"] and r["image_id"] in ids]
        anns = gt.loadAnns(gt.getAnnIds(imgIds=sorted(ids), catIds=[cat["id"]]))
        recall, precision = _voc_curve(anns, dets, iou_threshold)
        aps11.append(_ap_11_point(recall, precision))
        aps_all.append(_ap_all_point(recall, precision))
        out[f"AP50_11pt/{cat['name']}"] = aps11[-1]
    out["mAP50_11pt"] = float(np.mean(aps11)) if aps11 else 0.0
    out["mAP50_allpt"] = float(np.mean(aps_all)) if aps_all else 0.0
    return out


def _voc_curve(anns: list[dict], dets: list[dict], iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    by_image: dict[int, dict] = {}
    for ann in anns:
        entry = by_image.setdefault(ann["image_id"], {"boxes": [], "ignore": []})
        entry["boxes"].append(ann["bbox"])
        entry["ignore"].append(bool(ann.get("iscrowd", 0)))
    for entry in by_image.values():
        entry["boxes"] = xywh_to_xyxy(torch.tensor(entry["boxes"], dtype=torch.float64))
        entry["ignore"] = np.array(entry["ignore"])
        entry["taken"] = np.zeros(len(entry["ignore"]), dtype=bool)
    num_positive = sum(int((~e["ignore"]).sum()) for e in by_image.values())
    dets = sorted(dets, key=lambda d: -d["score"])
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for i, det in enumerate(dets):
        entry = by_image.get(det["image_id"])
        if entry is None:
            fp[i] = 1
            continue
        box = xywh_to_xyxy(torch.tensor([det["bbox"]], dtype=torch.float64))
        ious = iou_xyxy(box, entry["boxes"])[0].numpy()
        best = int(ious.argmax())
        if ious[best] < iou_threshold:
            fp[i] = 1
        elif entry["ignore"][best]:
            continue  # matched a difficult object: neither true nor false positive
        elif not entry["taken"][best]:
            entry["taken"][best] = True
            tp[i] = 1
        else:
            fp[i] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / max(num_positive, 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return recall, precision


def _ap_11_point(recall: np.ndarray, precision: np.ndarray) -> float:
    points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]
    return float(np.mean(points))


def _ap_all_point(recall: np.ndarray, precision: np.ndarray) -> float:
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope
    changes = np.where(r[1:] != r[:-1])[0]
    return float(np.sum((r[changes + 1] - r[changes]) * p[changes + 1]))
