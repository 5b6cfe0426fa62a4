"""The three CenterNet heads: for each output a 3x3 conv, ReLU and a 1x1 conv.

With ``separable=True`` the 3x3 conv is depthwise-separable (a depthwise 3x3 then a 1x1): at stride 4 the three full
3x3 convs of 64 channels cost 25 ms of a 512-px forward on 2 CPU cores, the separable ones 3 ms (bench/RESULTS.md).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

# Heatmap bias so that every cell starts at probability 0.1 (the paper's prior; keeps the first focal losses sane).
HEATMAP_PRIOR = 0.1


def _head(in_channels: int, hidden: int, out_channels: int, separable: bool) -> nn.Sequential:
    if separable:
        spatial = [nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1, groups=in_channels, bias=False),
                   nn.Conv2d(in_channels, hidden, kernel_size=1)]
    else:
        spatial = [nn.Conv2d(in_channels, hidden, kernel_size=3, padding=1)]
    return nn.Sequential(*spatial, nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, kernel_size=1))


class CenterNetHead(nn.Module):
    """``forward(x [B, in, h, w])`` -> ``{"heatmap": [B, C, h, w] logits, "offset": [B, 2, h, w],
    "size": [B, 2, h, w]}``; ``separable``: depthwise-separable 3x3 convs (see the module docstring);
    ``regression_init``: the paper's initialisation of the offset and size heads, N(0, 0.001) weights and zero
    biases on their ``last`` conv (its plain network) or ``all`` their convs (its DCN network)."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 64, separable: bool = False,
                 regression_init: Literal["last", "all"] | None = None):
        super().__init__()
        self.heatmap = _head(in_channels, hidden, num_classes, separable)
        self.offset = _head(in_channels, hidden, 2, separable)
        self.size = _head(in_channels, hidden, 2, separable)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))
        if regression_init:
            for head in (self.offset, self.size):
                convs = [m for m in head if isinstance(m, nn.Conv2d)]
                for conv in convs if regression_init == "all" else convs[-1:]:
                    nn.init.normal_(conv.weight, std=0.001)
                    nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"heatmap": self.heatmap(x), "offset": self.offset(x), "size": self.size(x)}
