"""CenterNet losses: penalty-reduced focal loss on heatmaps, masked L1 on offset and size at object centres."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from detector.decode import gather_at


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0,
               ignore: torch.Tensor | None = None) -> torch.Tensor:
    """Penalty-reduced pixel-wise logistic focal loss (CornerNet / CenterNet), from logits.

    ``logits`` and ``target`` ``[B, C, h, w]``; ``target`` in [0, 1] with exactly 1 at object centres.
    With ``p = sigmoid(logits)``:

        loss = -1/max(1, #pos) * ( sum_pos (1-p)^alpha log p  +  sum_neg (1-t)^beta p^alpha log(1-p) )

    ``log p`` and ``log(1-p)`` come from ``logsigmoid`` (exact for any logit, no clamp that kills the gradient),
    in float32 even under autocast. ``ignore`` (bool, broadcastable to ``target``) removes cells from both sums,
    e.g. the regions of COCO crowd boxes.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logits, target = logits.float(), target.float()
        log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
        p = log_p.exp()
        pos = target.eq(1)
        pos_term = (1 - p).pow(alpha) * log_p
        neg_term = (1 - target).pow(beta) * p.pow(alpha) * log_not_p
        per_cell = torch.where(pos, pos_term, neg_term)
        if ignore is not None:
            per_cell = per_cell.masked_fill(ignore, 0.0)
            pos = pos & ~ignore
        return -per_cell.sum() / pos.sum().clamp(min=1)


def masked_l1(pred: torch.Tensor, index: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 between ``pred [B, D, h, w]`` read at ``index [B, N]`` and ``target [B, N, D]``, over ``mask [B, N]``.

    Each object contributes the mean absolute error of its D coordinates; the sum is divided by the number of
    objects (at least 1). This is the scale of the reference's RegL1Loss, for which the paper's weights were tuned.
    """
    with torch.autocast(device_type=pred.device.type, enabled=False):
        error = (gather_at(pred.float(), index) - target.float()).abs().mean(dim=-1)  # [B, N]
        mask = mask.bool()
        return error.masked_fill(~mask, 0.0).sum() / mask.sum().clamp(min=1)


class CenterNetLoss(nn.Module):
    """The weighted sum ``heatmap * focal + offset * L1 + size * L1`` (paper weights 1, 1, 0.1).

    ``forward(outputs, targets)`` takes the model's dict and ``detector.targets.encode``'s dict and returns
    ``{"loss", "heatmap", "offset", "size"}`` (the unweighted parts, for logging, and the weighted total).
    """

    def __init__(self, heatmap_weight: float = 1.0, offset_weight: float = 1.0, size_weight: float = 0.1):
        super().__init__()
        self.weights = {"heatmap": heatmap_weight, "offset": offset_weight, "size": size_weight}

    def forward(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        parts = {
            "heatmap": focal_loss(outputs["heatmap"], targets["heatmap"], ignore=targets.get("ignore")),
            "offset": masked_l1(outputs["offset"], targets["index"], targets["offset"], targets["mask"]),
            "size": masked_l1(outputs["size"], targets["index"], targets["size"], targets["mask"]),
        }
        parts["loss"] = sum(self.weights[name] * value for name, value in parts.items())
        return parts
