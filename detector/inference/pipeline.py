"""The inference pipeline around the network: forward (+ flip, precision), decode, unletterbox, NMS, threshold,
class filter, agnostic NMS. Shared by validation, the detectors and the demo.

``images [B, 3, H, W]`` uint8 letterboxed (``detector.preprocess.letterbox``) -> :func:`forward_images` (normalise,
network, optionally with its mirror) -> :func:`postprocess` (``decode``, inverse letterbox, optional class-wise NMS;
fixed shapes, what validation keeps) -> :func:`to_detections` (one :class:`Detections` per image: score threshold,
class filter, optional class-agnostic suppression of same-place duplicates).

``precision``: ``"fp32"`` (default) or ``"bf16"``, the network under bfloat16 autocast (CPUs with AVX512-BF16 or
AMX, and GPUs that support it; decoding stays float32). This module is the one place inference sets autocast. For
speed, run a network prepared by ``detector.model.fuse.prepare_for_inference`` (BatchNorm folded, channels_last).
"""
from __future__ import annotations

import contextlib
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms, nms

from detector.decode import decode, flip_merge
from detector.detections import Detections
from detector.preprocess import normalize, unletterbox_boxes


Precision = Literal["fp32", "bf16"]
PRECISIONS = ("fp32", "bf16")
# IoU above which two detections of different classes are one object seen twice (``agnostic`` suppression).
AGNOSTIC_IOU = 0.7


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
