"""The inference pipeline around the network: forward (+ flip, precision), decode, unletterbox, NMS, threshold,
class filter, agnostic NMS; the test-time passes (scales, tiles) and their merging. Shared by validation, the
detectors and the demo.

``images [B, 3, H, W]`` uint8 letterboxed (``detector.preprocess.letterbox``) -> :func:`forward_images` (normalise,
network, optionally with its mirror) -> :func:`postprocess` (``decode``, inverse letterbox, optional class-wise NMS;
fixed shapes, what validation keeps) -> :func:`to_detections` (one :class:`Detections` per image: score threshold,
class filter, optional class-agnostic suppression of same-place duplicates).

``precision``: ``"fp32"`` (default) or ``"bf16"``, the network under bfloat16 autocast (CPUs with AVX512-BF16 or
AMX, and GPUs that support it; decoding stays float32). This module is the one place inference sets autocast. For
speed, run a network prepared by ``detector.model.fuse.prepare_for_inference`` (BatchNorm folded, channels_last).

Test time (:class:`Passes`), around a ``run(batch, meta) -> postprocess dict`` of the caller (the network with its
flip): :func:`detect_scales` runs the letterboxed batch resized by each scale and merges the scales as the paper's
code does (per class Gaussian :func:`soft_nms`, then the top K); :func:`detect_tiles` cuts one photo into
overlapping tiles (:func:`tile_windows`), letterboxes each to the input size, runs them as batches, shifts the boxes
back and merges duplicates across tile borders (:func:`merge_tiles`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import batched_nms, nms

from detector.boxes import iou_xyxy
from detector.decode import decode, flip_merge
from detector.detections import Detections
from detector.errors import OptionError
from detector.preprocess import letterbox, normalize, to_chw_tensor, unletterbox_boxes


Precision = Literal["fp32", "bf16"]
PRECISIONS = ("fp32", "bf16")
# IoU above which two detections of different classes are one object seen twice (``agnostic`` suppression).
AGNOSTIC_IOU = 0.7
# The paper's code merges its test scales with Gaussian soft-NMS (sigma 0.5) and drops what decays below 0.001.
SOFT_NMS_SIGMA = 0.5
SOFT_NMS_THRESHOLD = 0.001
# Tiles: the smallest tile, the default overlap, how many tiles go through the network at once, and the overlap (of
# the smaller box) above which two same-class boxes from different tiles are one object (see merge_tiles).
MIN_TILE = 32
TILE_OVERLAP = 0.2
TILE_BATCH = 16
TILE_MERGE_IOS = 0.6
# A runner: letterboxed uint8 batch [B, 3, H, W] and its meta [B, 4] -> a postprocess dict in original pixels.
Run = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def bf16_supported(device: torch.device | str) -> bool:
    """Whether bfloat16 inference runs on ``device``: a GPU with bfloat16, or a CPU with oneDNN's bfloat16 kernels
    (x86: AVX-512 BW+VL+DQ or AVX-NE-CONVERT, fast with AVX512-BF16/AMX; ARM: BF16)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


def check_precision(precision: str, device: torch.device | str) -> None:
    """Raise ``ValueError`` for an unknown precision, or bf16 on a device without fast bfloat16."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if precision == "bf16" and not bf16_supported(device):
        raise ValueError(f"precision='bf16' needs a GPU with bfloat16 or a CPU with oneDNN bfloat16 "
                         f"(AVX-512 BW+VL+DQ, AVX-NE-CONVERT or ARM BF16); "
                         f"{torch.device(device)} has neither here: use precision='fp32'")


def autocast(device: torch.device | str, precision: Precision = "fp32") -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    check_precision(precision, device)
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def forward_images(model: nn.Module, images: torch.Tensor, flip: bool = False,
                   precision: Precision = "fp32") -> dict[str, torch.Tensor]:
    """Network outputs for uint8 images ``[B, 3, H, W]``; with ``flip`` the mirror is run in the same batch.

    With ``precision="bf16"`` the outputs are bfloat16 (``decode`` and ``flip_merge`` read them in float32).
    """
    x = normalize(images)
    B = x.shape[0]
    with autocast(images.device, precision):
        outputs = model(torch.cat([x, x.flip(-1)]) if flip else x)
    if not flip:
        return outputs
    return flip_merge({k: v[:B] for k, v in outputs.items()}, {k: v[B:] for k, v in outputs.items()})


def postprocess(outputs: dict[str, torch.Tensor], meta: torch.Tensor, stride: int, k: int = 100,
                nms_iou: float | None = None) -> dict[str, torch.Tensor]:
    """Decode and map to original pixels. ``meta [B, 4]`` letterbox parameters.

    Returns ``boxes [B, K, 4]`` xyxy original pixels, ``scores [B, K]``, ``labels [B, K]``. With ``nms_iou``,
    boxes suppressed by class-wise NMS get score 0 (shapes stay fixed; order stays by score).
    """
    detections = decode(outputs, k=k, stride=stride)
    detections["boxes"] = unletterbox_boxes(detections["boxes"], meta.to(detections["boxes"].dtype))
    if nms_iou is not None:
        detections["scores"] = _nms_scores(detections, nms_iou)
    return detections


def _nms_scores(detections: dict[str, torch.Tensor], iou: float) -> torch.Tensor:
    scores = torch.zeros_like(detections["scores"])
    for i, (boxes, s, labels) in enumerate(zip(detections["boxes"], detections["scores"], detections["labels"])):
        keep = batched_nms(boxes, s, labels, iou)
        scores[i, keep] = s[keep]
    return scores


@torch.inference_mode()
def detect(model: nn.Module, images: torch.Tensor, meta: torch.Tensor, k: int = 100, flip: bool = False,
           nms_iou: float | None = None, precision: Precision = "fp32") -> dict[str, torch.Tensor]:
    """``forward_images`` then ``postprocess``: uint8 letterboxed images -> detections in original pixels."""
    return postprocess(forward_images(model, images, flip, precision), meta, model.stride, k, nms_iou)


def resolve_classes(classes: Sequence[int | str] | int | str | None,
                    class_names: Sequence[str]) -> list[int] | None:
    """Class names or indices (ints or digit strings), or one of them -> sorted class indices; None keeps every
    class."""
    if classes is None:
        return None
    if isinstance(classes, (str, int)):
        classes = [classes]
    indices = set()
    for item in classes:
        if isinstance(item, int) or (isinstance(item, str) and item.isdigit()):
            index = int(item)
            if not 0 <= index < len(class_names):
                raise ValueError(f"class index {index} out of range 0..{len(class_names) - 1}")
        elif item in class_names:
            index = list(class_names).index(item)
        else:
            raise ValueError(f"unknown class {item!r}; the model's classes are {list(class_names)}")
        indices.add(index)
    return sorted(indices)


def suppress_duplicates(detections: Detections, iou: float = AGNOSTIC_IOU) -> Detections:
    """Class-agnostic NMS: of detections overlapping by more than ``iou``, whatever their classes, the highest score
    stays (CenterNet can put peaks of several classes on one object). Order kept (descending score)."""
    if len(detections) < 2:
        return detections
    keep = np.zeros(len(detections), dtype=bool)
    keep[nms(torch.from_numpy(detections.boxes), torch.from_numpy(detections.scores), iou).numpy()] = True
    return detections.select(keep)


def to_detections(detections: dict[str, torch.Tensor], class_names: Sequence[str], conf: float,
                  classes: list[int] | None = None, agnostic: bool = False) -> list[Detections]:
    """Batched :func:`postprocess` output -> one :class:`Detections` per image with ``score >= conf``, only of
    ``classes`` (indices, see :func:`resolve_classes`; None: all), and with ``agnostic`` the same-place duplicates
    of other classes suppressed (after the class filter)."""
    results = []
    for boxes, scores, labels in zip(detections["boxes"], detections["scores"], detections["labels"]):
        result = Detections.from_arrays(boxes, scores, labels, class_names)
        keep = result.scores >= conf
        if classes is not None:
            keep &= np.isin(result.labels, classes)
        result = result.select(keep)
        results.append(suppress_duplicates(result) if agnostic else result)
    return results


# test time: scales and tiles --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Passes:
    """The test-time passes of a detection: ``flip`` (the mirror averaged in each pass), ``scales`` (the letterboxed
    input resized by each; several are merged by soft-NMS), ``tile`` (None, or the side in photo pixels of the
    overlapping tiles cut from each photo), ``overlap`` (the fraction of a tile its neighbour shares) and ``whole``
    (with tiles, the whole photo letterboxed too)."""

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    tile: int | None = None
    overlap: float = TILE_OVERLAP
    whole: bool = False

    @property
    def plain(self) -> bool:
        """One pass of the letterboxed input at its size (flip or not): no scales, no tiles."""
        return self.tile is None and tuple(self.scales) == (1.0,)


def check_passes(flip: bool = False, scales: Sequence[float] | None = None, tile: int | None = None,
                 overlap: float = TILE_OVERLAP, whole: bool = False, flags: dict[str, str] | None = None) -> Passes:
    """A checked :class:`Passes`: :class:`OptionError` naming the flag (``flags`` maps ``tile``, ``overlap``,
    ``scales`` to the caller's names, e.g. ``--tile``) for a tile under ``MIN_TILE`` pixels, an overlap outside
    [0, 1) or a scale <= 0."""
    names = {"tile": "tile", "overlap": "overlap", "scales": "scales", **(flags or {})}
    scales = (1.0,) if not scales else tuple(float(s) for s in scales)
    if tile is not None and tile < MIN_TILE:
        raise OptionError(f"{names['tile']} {tile}: a tile is at least {MIN_TILE} photo pixels (about the input "
                          "size is usual); leave it out for no tiles")
    if not 0 <= overlap < 1:
        raise OptionError(f"{names['overlap']} {overlap}: the overlap of neighbouring tiles is a fraction in [0, 1) "
                          f"(default {TILE_OVERLAP})")
    bad = [s for s in scales if not s > 0]
    if bad:
        raise OptionError(f"{names['scales']} {bad[0]}: a test scale is above 0 (e.g. 0.75 1 1.25)")
    return Passes(flip, scales, tile, overlap, whole)


def scaled_size(size: int, scale: float) -> int:
    """``size * scale`` rounded to a multiple of 32 (at least 32): the side of a test scale's input."""
    return max(32, round(size * scale / 32) * 32)


def rescale_inputs(images: torch.Tensor, meta: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A letterboxed uint8 batch ``[B, 3, H, W]`` resized by ``scale`` (each side to :func:`scaled_size`, bilinear)
    and its ``meta`` with the factors applied, so ``unletterbox_boxes`` maps the boxes back to original pixels."""
    height, width = images.shape[-2:]
    new_h, new_w = scaled_size(height, scale), scaled_size(width, scale)
    if (new_h, new_w) == (height, width):
        return images, meta
    resized = F.interpolate(images.float(), size=(new_h, new_w), mode="bilinear", align_corners=False,
                            antialias=new_h < height)
    meta = meta.clone()
    meta[:, 0] *= new_w / width
    meta[:, 1] *= new_h / height
    return resized.round().clamp(0, 255).to(torch.uint8), meta


def soft_nms(boxes: torch.Tensor, scores: torch.Tensor, sigma: float = SOFT_NMS_SIGMA,
             threshold: float = SOFT_NMS_THRESHOLD) -> torch.Tensor:
    """Gaussian soft-NMS of one class's ``boxes [N, 4]`` xyxy: the new ``[N]`` scores, 0 for the boxes dropped.

    Repeatedly the best remaining box is kept with its current score and every other remaining box's score is
    multiplied by ``exp(-IoU^2 / sigma)`` with it; a box whose score falls under ``threshold`` is dropped (the
    paper's code: its ``soft_nms`` with ``method=2``).
    """
    iou = iou_xyxy(boxes.float(), boxes.float())
    current = scores.float().clone()
    result = torch.zeros_like(current)
    remaining = torch.ones_like(current, dtype=torch.bool)
    for _ in range(len(current)):
        if not remaining.any():
            break
        best = torch.where(remaining, current, float("-inf")).argmax()
        result[best] = current[best]
        remaining[best] = False
        current = torch.where(remaining, current * torch.exp(-iou[best] ** 2 / sigma), current)
        remaining &= current >= threshold
    return result


def stack_detections(detections: list[dict[str, torch.Tensor]], k: int | None = None) -> dict[str, torch.Tensor]:
    """One image's detection dicts (``boxes [N, 4]``, ``scores [N]``, ``labels [N]``) -> a batch ``[B, K]``, each
    image's detections by descending score, cut to ``k`` (None: the longest image's count), padded with score 0."""
    k = max(len(d["scores"]) for d in detections) if k is None else k
    rows = {"boxes": [], "scores": [], "labels": []}
    for d in detections:
        order = d["scores"].argsort(descending=True)[:k]
        pad = k - len(order)
        rows["boxes"].append(F.pad(d["boxes"][order], (0, 0, 0, pad)))
        rows["scores"].append(F.pad(d["scores"][order], (0, pad)))
        rows["labels"].append(F.pad(d["labels"][order], (0, pad)))
    return {name: torch.stack(values) for name, values in rows.items()}


def merge_scales(outputs: list[dict[str, torch.Tensor]], k: int) -> dict[str, torch.Tensor]:
    """The detections of several scales (``postprocess`` dicts ``[B, K_s]``, original pixels) -> ``[B, k]``: per
    image and class all scales' boxes together, Gaussian :func:`soft_nms`, then the ``k`` best (the paper's
    ``merge_outputs``)."""
    merged = []
    for i in range(outputs[0]["scores"].shape[0]):
        boxes = torch.cat([o["boxes"][i] for o in outputs]).float()
        scores = torch.cat([o["scores"][i] for o in outputs]).float()
        labels = torch.cat([o["labels"][i] for o in outputs])
        present = scores > 0
        boxes, scores, labels = boxes[present], scores[present], labels[present]
        new = torch.zeros_like(scores)
        for label in labels.unique():
            same = labels == label
            new[same] = soft_nms(boxes[same], scores[same])
        kept = new > 0
        merged.append({"boxes": boxes[kept], "scores": new[kept], "labels": labels[kept]})
    return stack_detections(merged, k)


def detect_scales(run: Run, images: torch.Tensor, meta: torch.Tensor, scales: Sequence[float],
                  k: int) -> dict[str, torch.Tensor]:
    """``run`` on the batch resized by each scale (:func:`rescale_inputs`); one scale is one pass, several are
    merged by :func:`merge_scales`. Returns a ``postprocess`` dict in original pixels."""
    if len(scales) == 1:
        return run(*rescale_inputs(images, meta, scales[0]))
    return merge_scales([run(*rescale_inputs(images, meta, scale)) for scale in scales], k)


def _starts(length: int, tile: int, overlap: float) -> list[int]:
    if length <= tile:
        return [0]
    step = max(1, int(tile * (1 - overlap)))  # rounded down: at least the asked overlap
    return list(range(0, length - tile, step)) + [length - tile]  # the last tile ends at the edge


def tile_windows(width: int, height: int, tile: int, overlap: float) -> np.ndarray:
    """The tiles of a ``width x height`` photo: ``[N, 4]`` int64 ``(x0, y0, x1, y1)`` windows of ``tile`` pixels
    (the photo's side where it is shorter), neighbours sharing at least ``overlap`` of a tile, the last row and
    column flush with the photo's edges, row by row."""
    return np.array([(x, y, min(x + tile, width), min(y + tile, height))
                     for y in _starts(height, tile, overlap) for x in _starts(width, tile, overlap)], dtype=np.int64)


def cut_tiles(image: np.ndarray, windows: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``windows`` of an ``[H, W, 3]`` uint8 photo, each letterboxed to ``size`` (``preprocess.letterbox``):
    ``[N, 3, size, size]`` uint8 and ``meta [N, 4]`` (each tile's own, in tile pixels)."""
    boxed = [letterbox(image[y0:y1, x0:x1], size) for x0, y0, x1, y1 in windows.tolist()]
    return torch.stack([to_chw_tensor(tile) for tile, _ in boxed]), torch.from_numpy(np.stack([m for _, m in boxed]))


def merge_tiles(detections: list[dict[str, torch.Tensor]], iou: float = TILE_MERGE_IOS) -> dict[str, torch.Tensor]:
    """The detections of several tiles (one dict per tile, or the whole photo, already in photo pixels; an optional
    ``cut [N]`` bool marks the boxes touching an inner border of their tile) -> one dict, by descending score.

    Greedy, uncut boxes first and then by score, a detection is dropped when a kept one of its class *from another
    tile* covers more than ``iou`` of the smaller of the two boxes (intersection over the smaller area); the kept one
    takes the better score of the two, and a kept fragment (cut) grows to the union with the fragments it drops.
    Not plain NMS by IoU: an object cut by a tile border is seen whole in one tile and as a fragment in its
    neighbour, and the fragment lies inside the whole box with a small IoU but an intersection over its own area
    near 1; the whole box, not the fragment, is the one to keep (NMS for whole boxes); an object wider than the
    overlap is a fragment in every tile, and the union of the fragments is the object (box merging for fragments).
    Within one tile the network's peaks already kept one detection per object, so neighbours in one tile are never
    merged.
    """
    boxes = torch.cat([d["boxes"] for d in detections]).float()
    scores = torch.cat([d["scores"] for d in detections]).float()
    labels = torch.cat([d["labels"] for d in detections])
    cut = torch.cat([d.get("cut", torch.zeros_like(d["scores"], dtype=torch.bool)) for d in detections])
    source = torch.cat([torch.full_like(d["labels"], i) for i, d in enumerate(detections)])
    present = scores > 0
    boxes, scores, labels, cut, source = boxes[present], scores[present], labels[present], cut[present], source[present]
    order = np.lexsort((-scores.cpu().numpy(), cut.cpu().numpy()))  # uncut first, then by descending score
    order = torch.from_numpy(order).to(scores.device)
    boxes, scores, labels, cut, source = boxes[order], scores[order], labels[order], cut[order], source[order]
    keep, merged, best = _cross_source_keep(boxes.cpu().numpy(), scores.cpu().numpy(), labels.cpu().numpy(),
                                            cut.cpu().numpy(), source.cpu().numpy(), iou)
    keep = torch.from_numpy(keep).to(scores.device)
    boxes, scores = torch.from_numpy(merged).to(boxes)[keep], torch.from_numpy(best).to(scores)[keep]
    labels = labels[keep]
    order = scores.argsort(descending=True, stable=True)
    return {"boxes": boxes[order], "scores": scores[order], "labels": labels[order]}


def _cross_source_keep(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, cut: np.ndarray,
                       source: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The greedy pass of :func:`merge_tiles` over boxes in its order (one row at a time: memory stays linear in the
    number of boxes): which are kept, the boxes (a kept fragment grown by the fragments it dropped) and the scores
    (a kept box's the best of it and the boxes it dropped)."""
    area = np.clip(boxes[:, 2:] - boxes[:, :2], 0, None).prod(-1)
    keep, merged, best = np.ones(len(boxes), dtype=bool), boxes.copy(), scores.copy()
    for i in range(len(boxes)):
        if not keep[i]:
            continue
        rest = np.flatnonzero(keep[i + 1:] & (labels[i + 1:] == labels[i]) & (source[i + 1:] != source[i])) + i + 1
        if not len(rest):
            continue
        sides = np.minimum(boxes[rest, 2:], boxes[i, 2:]) - np.maximum(boxes[rest, :2], boxes[i, :2])
        inter = np.clip(sides, 0, None).prod(-1)
        dropped = rest[inter / np.maximum(np.minimum(area[rest], area[i]), 1e-6) > iou]
        keep[dropped] = False
        best[i] = max(best[i], scores[dropped].max(initial=0.0))
        fragments = dropped[cut[dropped]]
        if cut[i] and len(fragments):
            merged[i, :2] = np.minimum(merged[i, :2], boxes[fragments, :2].min(0))
            merged[i, 2:] = np.maximum(merged[i, 2:], boxes[fragments, 2:].max(0))
    return keep, merged, best


def _touches_inner_border(boxes: torch.Tensor, window: np.ndarray, width: int, height: int) -> torch.Tensor:
    """``[N]`` bool: the boxes (photo pixels) within a pixel of a border of ``window`` that is not the photo's."""
    x0, y0, x1, y1 = window.tolist()
    return (((boxes[:, 0] <= x0 + 1) & (x0 > 0)) | ((boxes[:, 1] <= y0 + 1) & (y0 > 0))
            | ((boxes[:, 2] >= x1 - 1) & (x1 < width)) | ((boxes[:, 3] >= y1 - 1) & (y1 < height)))


def detect_tiles(run: Run, image: np.ndarray, test: Passes, size: int, k: int) -> dict[str, torch.Tensor]:
    """One ``[H, W, 3]`` uint8 photo cut into ``test.tile`` tiles (and, with ``test.whole``, the whole photo),
    each letterboxed to ``size`` and run ``TILE_BATCH`` at a time through :func:`detect_scales` with ``test.scales``;
    the boxes shifted to photo pixels and merged (:func:`merge_tiles`). Returns ``boxes [N, 4]``, ``scores [N]``,
    ``labels [N]`` (unbatched), by descending score."""
    height, width = image.shape[:2]
    windows = tile_windows(width, height, test.tile, test.overlap)
    found = []
    for start in range(0, len(windows), TILE_BATCH):
        chunk = windows[start:start + TILE_BATCH]
        batch, meta = cut_tiles(image, chunk, size)
        detections = detect_scales(run, batch, meta, test.scales, k)
        shift = torch.as_tensor(chunk[:, [0, 1, 0, 1]], dtype=detections["boxes"].dtype,
                                device=detections["boxes"].device)
        for i in range(len(chunk)):
            boxes = detections["boxes"][i] + shift[i]
            found.append({"boxes": boxes, "scores": detections["scores"][i], "labels": detections["labels"][i],
                          "cut": _touches_inner_border(boxes, chunk[i], width, height)})
    if test.whole:
        batch, meta = cut_tiles(image, np.array([[0, 0, width, height]]), size)
        found.append({name: value[0] for name, value in detect_scales(run, batch, meta, test.scales, k).items()})
    return merge_tiles(found)


def detect_passes(run: Run, images: torch.Tensor, meta: torch.Tensor, test: Passes, size: int,
                  k: int) -> dict[str, torch.Tensor]:
    """A letterboxed uint8 batch and its ``meta`` through ``test``'s passes -> a ``postprocess``-style dict ``[B, K]``
    in original pixels. With tiles, each image's letterboxed content is tiled (tile sides in its pixels: give
    original-resolution inputs, scale 1, for tiles of photo pixels), each tile letterboxed to ``size``, and K is the
    longest image's count."""
    if test.tile is None:
        return detect_scales(run, images, meta, test.scales, k)
    found = []
    for image, row in zip(images, meta):
        width = max(1, round(float(row[0] * row[2])))
        height = max(1, round(float(row[1] * row[3])))
        content = image[:, :height, :width].permute(1, 2, 0).cpu().numpy()
        detections = detect_tiles(run, content, test, size, k)
        detections["boxes"] = unletterbox_boxes(detections["boxes"], row.to(detections["boxes"]))
        found.append(detections)
    return stack_detections(found)
