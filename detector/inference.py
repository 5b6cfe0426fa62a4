"""From uint8 images to detections in original pixels: the path shared by validation, the predictor and the demo.

``images [B, 3, H, W]`` uint8 letterboxed (``detector.preprocess.letterbox``) -> normalise -> network (optionally
with its mirror) -> ``decode`` -> inverse letterbox -> optional class-wise NMS.

``precision``: ``"fp32"`` (default) or ``"bf16"``, the network under bfloat16 autocast (CPUs with AVX512-BF16 or
AMX, and GPUs that support it; decoding stays float32). This module is the one place inference sets autocast. For
speed, run a network prepared by ``detector.model.fuse.prepare_for_inference`` (BatchNorm folded, channels_last).
"""
from __future__ import annotations

import contextlib
from typing import Literal

import torch
from torch import nn
from torchvision.ops import batched_nms

from detector.decode import decode, flip_merge
from detector.preprocess import normalize, unletterbox_boxes


Precision = Literal["fp32", "bf16"]
PRECISIONS = ("fp32", "bf16")


def bf16_supported(device: torch.device | str) -> bool:
    """Whether bfloat16 inference is fast on ``device`` (a CPU with AVX512-BF16/AMX through oneDNN, or a GPU)."""
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
        raise ValueError(f"precision='bf16' needs a GPU with bfloat16 or a CPU with AVX512-BF16/AMX; "
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
