"""From uint8 images to detections in original pixels: the path shared by validation, the predictor and the demo.

``images [B, 3, H, W]`` uint8 letterboxed (``detector.preprocess.letterbox``) -> normalise -> network (optionally
with its mirror) -> ``decode`` -> inverse letterbox -> optional class-wise NMS.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import batched_nms

from detector.decode import decode, flip_merge
from detector.preprocess import normalize, unletterbox_boxes


def forward_images(model: nn.Module, images: torch.Tensor, flip: bool = False) -> dict[str, torch.Tensor]:
    """Network outputs for uint8 images ``[B, 3, H, W]``; with ``flip`` the mirror is run in the same batch."""
    x = normalize(images)
    if not flip:
        return model(x)
    B = x.shape[0]
    both = model(torch.cat([x, x.flip(-1)]))
    return flip_merge({k: v[:B] for k, v in both.items()}, {k: v[B:] for k, v in both.items()})


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
           nms_iou: float | None = None) -> dict[str, torch.Tensor]:
    """``forward_images`` then ``postprocess``: uint8 letterboxed images -> detections in original pixels."""
    return postprocess(forward_images(model, images, flip), meta, model.stride, k, nms_iou)
