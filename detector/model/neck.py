"""Necks: from the backbone's four maps to one stride-4 map.

- ``DeconvNeck``: the CenterNet paper's plain ResNet neck, WITHOUT deformable convolutions: three 4x4 stride-2
  transposed convolutions of 256 channels, each followed by BatchNorm and ReLU, from stride 32 to stride 4.
- ``DCNNeck``: the network behind the paper's ResNet-18 headline numbers ("ResNet-18 + DCN"). Three stages from
  the stride-32 map, each a 3x3 modulated deformable convolution (DCNv2, ``ModulatedDeformConv2d``) to the stage's
  width, BatchNorm, ReLU, then a 4x4 stride-2 transposed convolution initialised as bilinear upsampling,
  BatchNorm, ReLU; widths 256, 128, 64, so it ends with 64 channels at stride 4. Built on torchvision's
  ``DeformConv2d`` (no compiled extension of our own), computed in float32 under autocast too (as the paper's code
  ran it). The up-convolutions' start (``upconv_init``): ``diagonal`` (ours, the default: each channel upsampled on
  its own) or ``official`` (the paper's code: the bilinear kernel from every input channel into output channel 0,
  the other output channels left at PyTorch's random init).
- ``LeanNeck`` (the default): a top-down path with lateral connections from the stride 16, 8 and 4 maps. At each
  step the coarser map is projected to the finer level's width with a 1x1 convolution *before* the 2x upsampling
  (the cheap side), added to a 1x1 lateral projection of the backbone map, and smoothed by a 3x3 convolution.
  The widths shrink as the resolution grows (default 128, 96, 64 at strides 16, 8, 4), so the costly stride-4
  level carries 64 channels instead of 256.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import DeformConv2d, deform_conv2d


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DeconvNeck(nn.Module):
    """The paper's plain neck; its up-convolutions start from N(0, 0.001) as in the paper's code."""

    separable_heads = False  # the paper's heads
    regression_init = "last"  # the paper's code: N(0, 0.001) on the last conv of the offset and size heads

    def __init__(self, in_channels: tuple[int, ...], channels: int = 256, num_layers: int = 3):
        super().__init__()
        layers, width = [], in_channels[-1]
        for _ in range(num_layers):
            up = nn.ConvTranspose2d(width, channels, kernel_size=4, stride=2, padding=1, bias=False)
            nn.init.normal_(up.weight, std=0.001)
            layers += [up, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            width = channels
        self.layers = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.layers(features[-1])  # [B, channels, H/4, W/4]


class LeanNeck(nn.Module):
    separable_heads = True  # full 3x3 heads would cost more than this whole neck (bench/RESULTS.md)
    regression_init = None  # PyTorch's default initialisation everywhere but the heatmap bias
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


def bilinear_kernel(size: int) -> torch.Tensor:
    """``[size, size]`` float32 transposed-convolution kernel of bilinear upsampling by ``ceil(size / 2)``
    (``size`` 4: taps ``0.25, 0.75, 0.75, 0.25`` along each axis)."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 else factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float32) - centre).abs() / factor  # [size]
    return taps[:, None] * taps[None, :]


UpconvInit = Literal["diagonal", "official"]


def init_bilinear(up: nn.ConvTranspose2d, fill: UpconvInit = "diagonal") -> None:
    """Start ``up`` (``C -> C`` channels, ungrouped) as bilinear upsampling.

    ``diagonal``: each channel upsampled on its own (the kernel from input channel c to output channel c is
    ``bilinear_kernel``, every other kernel zero). ``official``: as the paper's code, the kernel from every input
    channel into output channel 0 (``weight[:, 0]``), every other kernel left as ``up`` was initialised.
    """
    C, size = up.out_channels, up.kernel_size[0]
    kernel = bilinear_kernel(size).to(up.weight)
    if fill not in ("diagonal", "official"):
        raise ValueError(f"upconv_init must be 'diagonal' or 'official', got {fill!r}")
    weight = torch.zeros_like(up.weight) if fill == "diagonal" else up.weight.detach().clone()  # [C_in, C_out, k, k]
    if fill == "diagonal":
        weight[range(C), range(C)] = kernel
    else:
        weight[:, 0] = kernel
    with torch.no_grad():
        up.weight.copy_(weight)


class ModulatedDeformConv2d(DeformConv2d):
    """A 3x3 DCNv2 convolution that predicts its own sampling offsets and mask; ``forward(x [B, in, h, w])`` ->
    ``[B, out, h, w]``.

    ``offset_mask``, a plain 3x3 convolution with zero-initialised weight and bias, gives 27 channels per cell: the
    first 18 are the offsets of the 9 taps, (dy, dx) pairs in cells; the last 9 are mask logits, whose ``sigmoid``
    weighs each tap in (0, 1). The mask multiplies the sampled values, so at initialisation (offsets 0, mask 0.5)
    the layer is exactly half a plain 3x3 convolution with the same weight. The deformable convolution's own weight
    keeps torchvision's default init (uniform in +-1/sqrt(fan_in), as the original DCNv2); it has no bias because
    BatchNorm follows (the original DCN carries a zero-initialised bias there).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.offset_mask = nn.Conv2d(in_channels, 27, kernel_size=3, padding=1)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Always in float32, autocast or not (torchvision's CPU kernel has no bf16/fp16; the paper's ran in fp32);
        the output in ``x``'s dtype."""
        if torch.jit.is_scripting():  # TorchScript has no autocast
            return self._fp32(x)
        return self._autocast_off(x)

    @torch.jit.unused
    def _autocast_off(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled(x.device.type):  # (a traced export: no autocast context in the graph)
            return self._fp32(x).to(x.dtype)
        with torch.autocast(x.device.type, enabled=False):
            return self._fp32(x).to(x.dtype)

    def _fp32(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        offset, mask = self.offset_mask(x).split([18, 9], dim=1)  # [B, 18, h, w], [B, 9, h, w]
        bias = None if self.bias is None else self.bias.float()
        return deform_conv2d(x, offset, self.weight.float(), bias, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask.sigmoid())


def dcn_stage(in_channels: int, channels: int, upconv_init: UpconvInit = "diagonal") -> list[nn.Module]:
    """Deformable 3x3 conv, BN, ReLU, then bilinear-initialised 2x transposed conv, BN, ReLU."""
    up = nn.ConvTranspose2d(channels, channels, kernel_size=4, stride=2, padding=1, bias=False)
    init_bilinear(up, upconv_init)
    return [ModulatedDeformConv2d(in_channels, channels), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            up, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


class DCNNeck(nn.Module):
    separable_heads = False  # the paper's heads
    regression_init = "all"  # the paper's code: N(0, 0.001) on every conv of the offset and size heads
    def __init__(self, in_channels: tuple[int, ...], widths: tuple[int, ...] = (256, 128, 64),
                 upconv_init: UpconvInit = "diagonal"):
        super().__init__()
        coarse = [in_channels[-1], *widths[:-1]]
        stages = [dcn_stage(c, w, upconv_init) for c, w in zip(coarse, widths)]
        self.layers = nn.Sequential(*[layer for stage in stages for layer in stage])
        self.out_channels = widths[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.layers(features[-1])  # [B, 512, H/32, W/32] -> [B, widths[-1], H/4, W/4]


NECKS = {"lean": LeanNeck, "deconv": DeconvNeck, "dcn": DCNNeck}
