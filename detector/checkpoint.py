"""Checkpoints: read safely (``weights_only=True``, a clear error for others), described, and built into networks.

A training checkpoint (Lightning's file) carries, under the key ``"detector"``, a :class:`ModelDescription` of the
network as a dict of plain Python values (written by ``to_dict``, read by ``from_dict``, both below: number and
names of classes, category ids, input size, neck, head width, stride) and the weights under ``state_dict`` with
the prefix ``model.``. That is enough to rebuild the network with no config file: :func:`build_model`, the one place
a network is built (the predictor, export, the training module and the evaluation run all call it). The input
normalisation is not stored: it is the one of ``detector.preprocess`` for every network (the ``mean`` / ``std`` of
checkpoints written before 2026-12-04 were never read, and are ignored).

A description that contradicts itself (fewer class names than classes, an input size that is not a positive multiple
of 32, an unknown neck) is refused when the checkpoint is loaded, naming the file (:func:`load_checkpoint`).
"""
from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import torch

from detector.errors import CheckpointError
from detector.model import CenterNet
from detector.model.backbone import UNSAFE_PICKLE
from detector.model.centernet import NeckName
from detector.model.neck import UpconvInit

CHECKPOINT_KEY = "detector"


@dataclass(frozen=True)
class ModelDescription:
    """What rebuilds the network and reads its outputs without any config.

    Stored in a checkpoint as ``to_dict()`` (plain ints, strs, floats and lists only, so the file loads with
    ``torch.load(weights_only=True)``); ``from_dict`` reads it back, including the dicts of older checkpoints.
    """

    num_classes: int
    class_names: list[str]  # index = label
    category_ids: list[int]  # the dataset's category id of each label (what a COCO results file needs)
    input_size: int  # side of the square letterbox the network was trained at, in pixels
    neck: str  # "lean" or "deconv"
    head_channels: int  # hidden width of each head
    stride: int = 4  # input pixels per output cell

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, for the checkpoint."""
        return {**dataclasses.asdict(self), "class_names": list(self.class_names),
                "category_ids": [int(i) for i in self.category_ids]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelDescription:
        """The description stored by :meth:`to_dict`; raises :class:`CheckpointError` naming a missing field or one
        that contradicts the others."""
        if not isinstance(data, dict):
            raise CheckpointError(f"the checkpoint's '{CHECKPOINT_KEY}' description is a {type(data).__name__}, "
                                  "not a dict")
        required = ("num_classes", "class_names", "input_size", "neck", "head_channels")
        missing = [name for name in required if name not in data]
        if missing:
            raise CheckpointError(f"the checkpoint's '{CHECKPOINT_KEY}' description lacks {missing}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        _check_description(values)
        values.setdefault("category_ids", list(range(values["num_classes"])))
        return cls(**{**values, "class_names": [str(n) for n in values["class_names"]],
                      "category_ids": list(values["category_ids"])})


def _check_description(values: dict[str, Any]) -> None:
    """Each field of a stored description is of its type and agrees with the others (:class:`CheckpointError`)."""
    def positive_int(name: str) -> int:
        value = values.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(f"the checkpoint's description has {name} {value!r}; it must be a positive integer")
        return value

    classes = positive_int("num_classes")
    positive_int("head_channels")
    if "stride" in values:
        positive_int("stride")
    if positive_int("input_size") % 32:
        raise CheckpointError(f"the checkpoint's description has input_size {values['input_size']}; it must be a "
                              "multiple of 32")
    for name in ("class_names", "category_ids"):
        value = values.get(name, list(range(classes)))
        count = len(value) if isinstance(value, (list, tuple)) else repr(value)
        if count != classes:
            raise CheckpointError(f"the checkpoint's description has {count} {name} for num_classes {classes}; it "
                                  "needs one per class")
    if any(not isinstance(i, int) or isinstance(i, bool) for i in values.get("category_ids", [])):
        raise CheckpointError("the checkpoint's description has category_ids that are not integers")
    if values["neck"] not in get_args(NeckName):
        raise CheckpointError(f"the checkpoint's description has the neck {values['neck']!r}; this detector builds "
                              f"{', '.join(get_args(NeckName))}")


def read_description(checkpoint: dict) -> ModelDescription:
    """The :class:`ModelDescription` of a checkpoint loaded by :func:`load_checkpoint`."""
    return ModelDescription.from_dict(checkpoint[CHECKPOINT_KEY])


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint dict, loaded with ``weights_only=True`` (a pickle that would run code is refused)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if UNSAFE_PICKLE not in str(error).lower():  # random bytes also fail as an UnpicklingError
            raise CheckpointError(f"{path} is not a PyTorch checkpoint (it does not unpickle)") from error
        raise CheckpointError(
            f"refused to load {path}: it holds Python objects that would run code when unpickled "
            f"(loaded with weights_only=True). Only load checkpoints you trust with other tools. Details: "
            f"{str(error).splitlines()[0]}") from error
    except Exception as error:  # zip errors, truncated files, random bytes
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is a PyTorch file but not a checkpoint of this detector (no "
                              f"'{CHECKPOINT_KEY}' description; was it written by tools/train.py?)")
    try:
        read_description(checkpoint)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    if not isinstance(checkpoint["state_dict"], dict):
        raise CheckpointError(f"{path}: the checkpoint's state_dict is a {type(checkpoint['state_dict']).__name__}, "
                              "not a dict of weights")
    return checkpoint


def model_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The network's weights (the LightningModule's ``model.`` entries, prefix removed)."""
    prefix = "model."
    return {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def build_model(source: dict | ModelDescription, weights: str | None = None, name: str | Path = "the checkpoint",
                upconv_init: UpconvInit = "diagonal") -> CenterNet:
    """The one way to build the network: of a checkpoint or of a description.

    ``source`` a checkpoint (:func:`load_checkpoint`): its architecture and trained weights, in eval mode (no backbone
    download; ``name``, its file, names it in the error of weights that do not fit). ``source`` a
    :class:`ModelDescription`: a new network to train, its backbone initialised from ``weights`` (``imagenet``, a
    local ``.pth`` file, or None for random) and, for the ``dcn`` neck, its up-convolutions started as
    ``upconv_init`` says (``detector.model.neck.init_bilinear``; a checkpoint's weights replace them).
    """
    if isinstance(source, ModelDescription):
        return CenterNet(source.num_classes, neck=source.neck, weights=weights, head_channels=source.head_channels,
                         upconv_init=upconv_init)
    info = read_description(source)
    model = build_model(info)
    try:
        model.load_state_dict(model_state(source))
    except (RuntimeError, TypeError, AttributeError, ValueError) as error:  # missing keys, shapes, non-tensors
        raise CheckpointError(
            f"{name}: its weights do not fit the {info.neck} network its description names "
            f"({_first_mismatch(error)}): the file was written by another program or version (lean checkpoints "
            "before 2026-11-23 had other heads); retrain, or export from the program that wrote it") from error
    return model.eval()


def _first_mismatch(error: Exception) -> str:
    """The first specific line of ``load_state_dict``'s error (a missing key, a size mismatch), shortened."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else type(error).__name__)[:200]


def load_fitting_weights(model: CenterNet, checkpoint: dict, class_names: list[str]) -> tuple[int, int, bool]:
    """Copy into ``model`` every weight of ``checkpoint`` that fits (fine-tuning, ``--model.init_from``); the class
    heatmap head only when the checkpoint has the same ``class_names``. Returns (tensors copied, tensors of the
    model, same classes)."""
    same_classes = read_description(checkpoint).class_names == list(class_names)
    own = model.state_dict()
    kept = {k: v for k, v in model_state(checkpoint).items()
            if (same_classes or not k.startswith("head.heatmap.")) and k in own and own[k].shape == v.shape}
    model.load_state_dict(kept, strict=False)
    return len(kept), len(own), same_classes


def check_classes(checkpoint: dict, class_names: list[str], source: str) -> None:
    """Refuse to evaluate a checkpoint on a dataset with other classes (the heatmap channels would be misread)."""
    trained = read_description(checkpoint).class_names
    if trained != list(class_names):
        raise CheckpointError(
            f"the checkpoint was trained for {len(trained)} classes {trained[:5]}{'...' if len(trained) > 5 else ''} "
            f"but {source} has {len(class_names)} classes {list(class_names)[:5]}"
            f"{'...' if len(class_names) > 5 else ''}. To fine-tune it on the new classes, train with "
            f"--model.init_from <checkpoint> (every weight is kept but the class heatmap head's).")


def check_network(checkpoint: dict, wanted: ModelDescription, source: str) -> None:
    """Refuse to load a checkpoint into another network: other classes (:func:`check_classes`), another neck or
    head width (its weights would not fit)."""
    check_classes(checkpoint, wanted.class_names, source)
    trained = read_description(checkpoint)
    changed = [f"{name} {getattr(trained, name)} (this run: {getattr(wanted, name)})"
               for name in ("neck", "head_channels") if getattr(trained, name) != getattr(wanted, name)]
    if changed:
        raise CheckpointError(f"the checkpoint's network has {', '.join(changed)}: resume with the run's own config "
                              "(--config <run folder>/config.yaml), or fine-tune with --model.init_from <checkpoint>")
