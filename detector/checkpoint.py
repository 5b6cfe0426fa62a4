"""Reading checkpoints safely: ``weights_only=True`` always, and a clear error for anything that is not ours.

A training checkpoint (Lightning's file) carries, under the key ``"detector"``, a plain description of the network
(``detector.module.model_description``: number and names of classes, category ids, input size, neck, head width,
stride, normalisation) and the weights under ``state_dict`` with the prefix ``model.``. That is enough to rebuild
the network with no config file.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from detector.model import CenterNet

CHECKPOINT_KEY = "detector"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the file and the reason in the message."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict, loaded with ``weights_only=True`` (a pickle that would run code is refused)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"refused to load {path}: it holds Python objects that would run code when unpickled "
            f"(loaded with weights_only=True). Only load checkpoints you trust with other tools. Details: "
            f"{str(error).splitlines()[0]}") from error
    except Exception as error:  # zip errors, truncated files, random bytes
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is a PyTorch file but not a checkpoint of this detector (no "
                              f"'{CHECKPOINT_KEY}' description; was it written by tools/train.py?)")
    return checkpoint


def model_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The network's weights (the LightningModule's ``model.`` entries, prefix removed)."""
    prefix = "model."
    return {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def build_model(checkpoint: dict) -> CenterNet:
    """A ``CenterNet`` in eval mode with the checkpoint's architecture and weights (no backbone download)."""
    info = checkpoint[CHECKPOINT_KEY]
    model = CenterNet(info["num_classes"], neck=info["neck"], weights=None, head_channels=info["head_channels"])
    try:
        model.load_state_dict(model_state(checkpoint))
    except RuntimeError as error:
        raise CheckpointError(
            f"the checkpoint's weights do not fit the current {info['neck']} network ({str(error).splitlines()[0]}). "
            "Lean checkpoints written before the network gained depthwise-separable heads (2026-11-23) must be "
            "retrained.") from error
    return model.eval()


def check_classes(checkpoint: dict, class_names: list[str], source: str) -> None:
    """Refuse to evaluate a checkpoint on a dataset with other classes (the heatmap channels would be misread)."""
    trained = list(checkpoint[CHECKPOINT_KEY]["class_names"])
    if trained != list(class_names):
        raise CheckpointError(
            f"the checkpoint was trained for {len(trained)} classes {trained[:5]}{'...' if len(trained) > 5 else ''} "
            f"but {source} has {len(class_names)} classes {list(class_names)[:5]}"
            f"{'...' if len(class_names) > 5 else ''}. To fine-tune it on the new classes, train with "
            f"--model.init_from <checkpoint> (the backbone and neck are kept, the heads start afresh).")
