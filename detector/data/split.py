"""The validation split of an export that has none: held out by a stable hash of each image's file name.

A photo goes to validation when the hash of its file name (SHA-1, read as a fraction in ``[0, 1)``) is below
``val_fraction``: the choice depends on that name alone, so adding photos later moves none of the old ones, and the
same folder always splits the same way on any machine. When the hash sends no photo (or every photo) to one side of
a set of two or more, the photo with the lowest (highest) hash is moved, so neither split is empty.

Default :data:`VAL_FRACTION` 0.2, not ultralytics' ``autosplit`` 0.1: the exports this serves are small (tens to a
few hundred photos), where a tenth leaves so few validation photos that the AP of one run moves by several points
from one photo; a fifth is also Roboflow's default validation share (70/20/10).

A run records the validation file names (:func:`split_record`) in its checkpoint and writes both lists into its run
folder; evaluating that checkpoint reads the recorded names instead of hashing again (a photo added since trains).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

from detector.data.dataset import DetectionDataset
from detector.errors import DatasetError

VAL_FRACTION = 0.2
TRAIN_LIST, VAL_LIST = "split_train.txt", "split_val.txt"


def name_fraction(name: str) -> float:
    """The file name's SHA-1 as a fraction in ``[0, 1)`` (its first 8 bytes)."""
    return int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64


def hashed_validation(names: Sequence[str], val_fraction: float) -> list[bool]:
    """For each file name, whether it is held out for validation (rule in the module docstring)."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"--data.val_fraction {val_fraction}: must be between 0 and 1 (e.g. 0.2)")
    fractions = [name_fraction(name) for name in names]
    chosen = [fraction < val_fraction for fraction in fractions]
    if len(names) >= 2 and not any(chosen):
        chosen[fractions.index(min(fractions))] = True
    if len(names) >= 2 and all(chosen):
        chosen[fractions.index(max(fractions))] = False
    return chosen


def split_dataset(full: DetectionDataset, val_fraction: float,
                  recorded_val: Sequence[str] | None = None) -> tuple[DetectionDataset, DetectionDataset]:
    """``(train, validation)`` of ``full`` (untransformed; set each one's ``transform``): by the recorded
    validation names when given, else by :func:`hashed_validation` of the file names."""
    names = [ann.file.name for ann in full.annotations]
    if recorded_val is not None:
        recorded = set(recorded_val)
        chosen = [name in recorded for name in names]
    else:
        chosen = hashed_validation(names, val_fraction)
    parts = []
    for side, label in ((False, "train"), (True, "held-out validation")):
        annotations = [ann for ann, is_val in zip(full.annotations, chosen) if is_val == side]
        if not annotations:
            raise DatasetError(f"{full.source}: no image for the {label} split ({len(names)} images in all); "
                               "a dataset needs two images or more, or a validation split of its own")
        parts.append(DetectionDataset(annotations, full.class_names, full.category_ids,
                                      f"{full.source} [{label.split()[-1]}]"))
    return parts[0], parts[1]


def split_record(train: DetectionDataset, val: DetectionDataset) -> dict[str, list[str]]:
    """What a checkpoint keeps of a held-out split: the file names of both sides."""
    return {"train": [ann.file.name for ann in train.annotations], "val": [ann.file.name for ann in val.annotations]}


def write_split_lists(train: DetectionDataset, val: DetectionDataset, folder: str | Path) -> list[Path]:
    """``split_train.txt`` and ``split_val.txt`` (one image path a line) in ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, dataset in ((TRAIN_LIST, train), (VAL_LIST, val)):
        path = folder / name
        path.write_text("".join(f"{ann.file}\n" for ann in dataset.annotations))
        paths.append(path)
    return paths


def split_message(source: str, train: DetectionDataset, val: DetectionDataset, val_fraction: float,
                  recorded: bool) -> str:
    """The one line that says a split was held out, and how."""
    total = len(train) + len(val)
    how = ("the validation images recorded in the checkpoint" if recorded else
           f"--data.val_fraction {val_fraction}, by a hash of each file name: adding photos later moves none")
    return (f"split: {source} has no validation split; {len(val)} of {total} images held out for validation, "
            f"{len(train)} train ({how})")
