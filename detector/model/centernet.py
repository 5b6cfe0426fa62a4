"""CenterNet: ResNet-18 body, a neck back to stride 4, and the three heads."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from detector.model.backbone import ResNet18Backbone, Weights
from detector.model.head import CenterNetHead
from detector.model.neck import NECKS, UpconvInit

NeckName = Literal["lean", "deconv", "dcn"]


class CenterNet(nn.Module):
    """Objects as Points with a ResNet-18 body.

    ``forward(images)``: ``images`` float32 ``[B, 3, H, W]``, normalised (``detector.preprocess.normalize``),
    H and W multiples of 32. Returns a dict of ``[B, *, H/4, W/4]`` maps:

    - ``heatmap``: ``[B, C, h, w]`` logits (not probabilities) of "an object centre of class c is in this cell";
    - ``offset``: ``[B, 2, h, w]`` sub-cell position (x, y) of the centre inside its cell, in cells (0..1);
    - ``size``: ``[B, 2, h, w]`` box (width, height) in output cells (input pixels / ``stride``).

    Args:
        num_classes: number of heatmap channels C.
        neck: ``"lean"`` (default, fast; its heads use depthwise-separable 3x3 convs), ``"deconv"`` (the paper's
            plain ResNet network without DCN: three 256-channel transposed convolutions and full 3x3 heads) or
            ``"dcn"`` (the paper's "ResNet-18 + DCN" behind its headline ResNet-18 numbers: deformable 3x3 convs
            and bilinear-initialised transposed convolutions of 256, 128, 64 channels, full 3x3 heads).
        weights: backbone weights: ``"imagenet"``, ``None`` (random init) or a local ``.pth`` path.
        head_channels: hidden width of each head's 3x3 convolution.
        upconv_init: ``dcn`` only: how its up-convolutions start, ``diagonal`` (each channel upsampled bilinearly on
            its own, the default) or ``official`` (the paper's code: the bilinear kernel into output channel 0 only,
            the rest random); ``detector.model.neck.init_bilinear``.
    """

    def __init__(self, num_classes: int, neck: NeckName = "lean", weights: Weights = None, head_channels: int = 64,
                 upconv_init: UpconvInit = "diagonal"):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if neck not in NECKS:
            raise ValueError(f"unknown neck {neck!r}; choose one of {sorted(NECKS)}")
        self.num_classes = num_classes
        self.backbone = ResNet18Backbone(weights)
        self.neck = NECKS[neck](self.backbone.channels, **({"upconv_init": upconv_init} if neck == "dcn" else {}))
        self.head = CenterNetHead(self.neck.out_channels, num_classes, head_channels,
                                  separable=self.neck.separable_heads, regression_init=self.neck.regression_init)
        self.stride = self.backbone.strides[0]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.neck(self.backbone(images)))
