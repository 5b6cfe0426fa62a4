"""Inference-only rewrites of a network: BatchNorm folded into the convolution before it, channels_last weights.

``fold_batchnorm(model)`` returns a copy in which every ``BatchNorm2d`` that directly follows a ``Conv2d``, a
``ConvTranspose2d`` or a torchvision ``DeformConv2d`` (in an ``nn.Sequential``, or as ``convN``/``bnN`` pairs of
torchvision's residual blocks) is merged into that convolution's weight and bias and replaced by ``nn.Identity``.
A deformable convolution folds like a plain one: for given offsets and mask (computed, unchanged, from its input)
its output is linear in its weight and bias, and its weight has the ``Conv2d`` layout. With the running statistics
``mean, var`` and the affine ``gamma, beta``, ``bn(conv(x)) = conv'(x)`` where ``scale = gamma / sqrt(var + eps)``,
``W' = W * scale`` along the output channels and ``b' = (b - mean) * scale + beta``. The outputs equal the eval-mode
network's to float rounding; the copy is for inference only (training it would train without BatchNorm).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torchvision.ops import DeformConv2d

Conv = nn.Conv2d | nn.ConvTranspose2d | DeformConv2d


def _fold_into(conv: Conv, bn: nn.BatchNorm2d) -> None:
    """Merge ``bn`` (eval statistics) into ``conv`` in place."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)  # [out]
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    weight = conv.weight.detach()
    if isinstance(conv, nn.ConvTranspose2d):  # weight [in, out / groups, kh, kw]
        groups, (cin, cout_g) = conv.groups, weight.shape[:2]
        grouped = weight.view(groups, cin // groups, cout_g, *weight.shape[2:])
        weight = (grouped * scale.view(groups, 1, cout_g, 1, 1)).view_as(weight)
    else:  # Conv2d, DeformConv2d: weight [out, in / groups, kh, kw]
        weight = weight * scale.view(-1, 1, 1, 1)
    conv.weight = nn.Parameter(weight)
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach())


def _fold_sequential(seq: nn.Sequential) -> int:
    count = 0
    for i in range(len(seq) - 1):
        if isinstance(seq[i], Conv) and isinstance(seq[i + 1], nn.BatchNorm2d):
            _fold_into(seq[i], seq[i + 1])
            seq[i + 1] = nn.Identity()
            count += 1
    return count


def _fold_named_pairs(module: nn.Module) -> int:
    """``conv1``/``bn1``, ``conv2``/``bn2``... attributes, as in torchvision's ``BasicBlock`` and ``Bottleneck``."""
    count = 0
    for index in range(1, 4):
        conv, bn = getattr(module, f"conv{index}", None), getattr(module, f"bn{index}", None)
        if isinstance(conv, Conv) and isinstance(bn, nn.BatchNorm2d):
            _fold_into(conv, bn)
            setattr(module, f"bn{index}", nn.Identity())
            count += 1
    return count


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each conv -> BatchNorm pair folded (see the module docstring).

    Raises ``ValueError`` if a ``BatchNorm2d`` is left that follows no convolution this function recognises, so a
    new block type is noticed instead of silently keeping a slow path.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
        _fold_named_pairs(module)
    left = [name for name, m in folded.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise ValueError(f"fold_batchnorm found no convolution before BatchNorm layers {left[:5]}")
    return folded


def prepare_for_inference(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """An eval-mode copy with BatchNorm folded and, by default, channels_last weights (what the predictor and the
    latency benchmark run; on 2 CPU cores at 512 px each is worth 5-25%, bench/RESULTS.md).

    Keeps ``model``'s other attributes (``stride``, ``num_classes``), so it drops in for ``model`` at inference.
    """
    prepared = fold_batchnorm(model)
    if channels_last:
        prepared = prepared.to(memory_format=torch.channels_last)
    return prepared.requires_grad_(False)
