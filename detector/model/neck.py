"""Necks: from the backbone's four maps to one stride-4 map.

- ``DeconvNeck``: the CenterNet paper's ResNet neck, three 4x4 stride-2 transposed convolutions of 256 channels,
  each followed by BatchNorm and ReLU, from stride 32 to stride 4. The baseline.
- ``LeanNeck`` (the default): a top-down path with lateral connections from the stride 16, 8 and 4 maps. At each
  step the coarser map is projected to the finer level's width with a 1x1 convolution *before* the 2x upsampling
  (the cheap side), added to a 1x1 lateral projection of the backbone map, and smoothed by a 3x3 convolution.
  The widths shrink as the resolution grows (default 128, 96, 64 at strides 16, 8, 4), so the costly stride-4
  level carries 64 channels instead of 256.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DeconvNeck(nn.Module):
    separable_heads = False  # the paper's heads
    def __init__(self, in_channels: tuple[int, ...], channels: int = 256, num_layers: int = 3):
        super().__init__()
        layers, width = [], in_channels[-1]
        for _ in range(num_layers):
            layers += [
                nn.ConvTranspose2d(width, channels, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            width = channels
        self.layers = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.layers(features[-1])  # [B, channels, H/4, W/4]


class LeanNeck(nn.Module):
    separable_heads = True  # full 3x3 heads would cost more than this whole neck (bench/RESULTS.md)
    def __init__(self, in_channels: tuple[int, ...], widths: tuple[int, int, int] = (128, 96, 64)):
        super().__init__()
        # widths are for strides 16, 8, 4; in_channels are the backbone's for strides 4, 8, 16, 32
        c2, c3, c4, c5 = in_channels
        coarse = [c5, *widths[:-1]]
        self.project = nn.ModuleList(conv_bn_relu(c, w, 1) for c, w in zip(coarse, widths))
        self.lateral = nn.ModuleList(conv_bn_relu(c, w, 1) for c, w in zip((c4, c3, c2), widths))
        self.smooth = nn.ModuleList(conv_bn_relu(w, w, 3) for w in widths)
        self.out_channels = widths[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]  # [B, 512, H/32, W/32]
        for project, lateral, smooth, skip in zip(self.project, self.lateral, self.smooth, features[-2::-1]):
            x = F.interpolate(project(x), scale_factor=2.0, mode="nearest")  # [B, w, 2h, 2w]
            x = smooth(x + lateral(skip))
        return x  # [B, widths[-1], H/4, W/4]


NECKS = {"lean": LeanNeck, "deconv": DeconvNeck}
