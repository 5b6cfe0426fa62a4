"""ResNet-18 body returning the stride 4, 8, 16 and 32 feature maps.

Contract (checked by a test): ``forward(x [B, 3, H, W])`` returns four maps with ``channels = (64, 128, 256, 512)``
at ``strides = (4, 8, 16, 32)``, i.e. shapes ``[B, c, H / s, W / s]`` for H and W multiples of 32.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from detector.errors import WeightsError

Weights = str | os.PathLike | None
"""``"imagenet"`` (torchvision's ``ResNet18_Weights.IMAGENET1K_V1``, downloaded once into the torch hub cache),
``None`` (random init), or the path of a local ``.pth`` state dict of torchvision's ``resnet18``."""


def build_resnet18(weights: Weights) -> nn.Module:
    """A torchvision ``resnet18`` with the requested weights (see ``Weights``)."""
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return resnet18(weights=None)
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return _download_imagenet()
    return _load_local(Path(weights))


def _download_imagenet() -> nn.Module:
    try:
        return resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)
    except Exception as error:  # urllib, http and ssl errors all land here
        raise WeightsError(
            f"could not download the ImageNet ResNet-18 weights ({type(error).__name__}: {error}). "
            "Either train from random initialisation with weights=None (model.weights: null), or download "
            f"{ResNet18_Weights.IMAGENET1K_V1.url} on a machine with internet and pass its local path "
            "(model.weights: /path/to/resnet18.pth)."
        ) from error

# What torch's weights_only unpickler says (lower-cased) of a pickle that names a function or class it would call:
# "Unsupported global: GLOBAL print ...", "Trying to load unsupported GLOBAL posix.system ...".
UNSAFE_PICKLE = "unsupported global"


def _load_local(path: Path) -> nn.Module:
    if not path.is_file():
        raise WeightsError(
            f"backbone weights file {path} does not exist. Use weights='imagenet' to download them, "
            "weights=None for random initialisation, or an existing .pth path."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if UNSAFE_PICKLE not in str(error).lower():  # random bytes also fail as an UnpicklingError
            raise WeightsError(f"{path} is not a readable PyTorch state dict (it does not unpickle)") from error
        raise WeightsError(f"refused to load {path}: it holds Python objects that would run code when unpickled "
                           "(backbone weights load with weights_only=True); give a plain state dict of tensors, "
                           "weights='imagenet' or weights=None") from error
    except Exception as error:  # zip errors, truncated files, random bytes
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise WeightsError(f"{path} is not a readable PyTorch state dict ({type(error).__name__}: {first[:200]})"
                           ) from error
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict of torchvision resnet18 weights")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    model = resnet18(weights=None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise WeightsError(
            f"{path} does not hold torchvision resnet18 weights: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
    return model


class ResNet18Backbone(nn.Module):
    channels = (64, 128, 256, 512)
    strides = (4, 8, 16, 32)

    def __init__(self, weights: Weights = None):
        super().__init__()
        net = build_resnet18(weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        c2 = self.layer1(self.stem(images))  # [B, 64, H/4, W/4]
        c3 = self.layer2(c2)  # [B, 128, H/8, W/8]
        c4 = self.layer3(c3)  # [B, 256, H/16, W/16]
        c5 = self.layer4(c4)  # [B, 512, H/32, W/32]
        return [c2, c3, c4, c5]
