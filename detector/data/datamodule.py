"""The LightningDataModule: picks a dataset (synthetic, COCO, VOC, or a user's VOC folder, labelImg folder, YOLO
dataset, or COCO-format json), builds the readers with their transforms, and serves DataLoaders of the batch contract
(:func:`detector.data.transforms.collate_detection`).

An export with one split (a labelImg folder, a VOC folder with no validation image set, a YOLO dataset without
``val``, one COCO json) has a validation split held out of it (:mod:`detector.data.split`), said in one line; the
module's ``state_dict`` holds the chosen file names, so a run's checkpoint records them, and
:meth:`DetectionDataModule.restore_split` makes an evaluation of that checkpoint use the same validation images; a
training run writes both lists into its run folder.

Seeding: the train loader's generator is seeded with ``seed + global_rank`` (so a run is reproducible), and
:func:`seed_worker` gives every worker its own augmentation stream from the per-worker seed the DataLoader derives
from that generator (two workers never replay the same stream; in-process loading uses ``seed`` itself).
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from pycocotools.coco import COCO
from torch.utils.data import DataLoader

from detector.data.coco import CocoDetection, coco_from_dict, load_coco_json
from detector.data.cocoformat import dataset_to_coco
from detector.data.coco import class_categories
from detector.data.dataset import DatasetError, DetectionDataset, note
from detector.data.labelimg import LabelImgDetection, Unlabelled, labelimg_classes, photo_xmls
from detector.data.split import VAL_FRACTION, split_dataset, split_message, split_record, write_split_lists
from detector.data.synthetic import SYNTHETIC_CLASSES, synthetic_dataset
from detector.data.transforms import (PAPER_CLIP_MARGIN, PAPER_CROP_SCALES, PAPER_LIGHTING_STD, CropTrainTransform,
                                      EvalTransform, TrainTransform, collate_detection)
from detector.data.voc import VOC_CLASSES, VocDetection, VocSplit, default_voc_splits, folder_classes, voc_layout
from detector.data.yolo import YoloDetection, has_split, load_yolo_config, yolo_class_names
from detector.errors import OptionError


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python, NumPy and the dataset's augmentation from the worker's seed."""
    info = torch.utils.data.get_worker_info()
    random.seed(info.seed)
    np.random.seed(info.seed % 2**32)
    transform = getattr(info.dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(info.seed)


@dataclass(frozen=True)
class AugmentOptions:
    """The training augmentation (``--data.augment.*``; YAML ``data: {augment: {...}}``). See
    ``detector.data.transforms``.

    Args:
        kind: ``paper`` (the CenterNet paper's random square crop of 0.6-1.3 x the longer side around a random
            centre, warped to the input; colour +-0.4 and PCA lighting) or ``resize`` (the default: the longer side
            resized to ``scale_range`` x ``input_size``, placed or cropped; colour jitter; +2.2 AP over ``paper`` on
            real photos, ``bench/RESULTS.md``).
        scale_range: ``resize`` only: random scale of the longer image side relative to ``input_size``.
        crop_scales: ``paper`` only: the crop side as fractions of the longer image side.
        lighting: ``paper`` only: standard deviation of the PCA lighting (0 disables it).
        flip_prob: probability of a horizontal flip.
        colour_jitter: strength of the brightness/contrast/saturation jitter (0 disables it; null: 0.4 for
            ``paper``, 0.3 for ``resize``).
        min_visibility: after cropping, a box keeping less than this fraction of its area is dropped.
        min_box_size: after augmentation, a box narrower or shorter than this (input pixels) is dropped.
            ``min_visibility`` and ``min_box_size`` null: 0, every box with area stays a target, as in the paper
            (dropping boxes under 30% visible or 2 px was not better on real photos, ``bench/RESULTS.md``).
        colour_float: ``paper`` only: the colour-augmented image stays float32, neither clipped to 0..255 nor
            rounded, as in the paper's code (its batches then travel as float32, four times the bytes); false: uint8.
        box_clip: ``paper`` only: boxes clipped to the canvas (``canvas``, all 128 output cells at 512 px) or, as the
            paper's code, to the left edge of the last output cell (``paper``: ``output_w - 1`` = 127 cells).
    """

    kind: Literal["paper", "resize"] = "resize"
    scale_range: tuple[float, float] = (0.6, 1.4)
    crop_scales: Sequence[float] = PAPER_CROP_SCALES
    lighting: float = PAPER_LIGHTING_STD
    flip_prob: float = 0.5
    colour_jitter: float | None = None
    min_visibility: float | None = None
    min_box_size: float | None = None
    colour_float: bool = False
    box_clip: Literal["canvas", "paper"] = "canvas"


def per_device_batch(total_batch: int, devices: int, accumulate: int = 1) -> int:
    """The per-device batch that brings ``devices x accumulate`` (devices counted over every node) closest to
    ``total_batch``: ``round(total_batch / (devices x accumulate))``, at least 1 (DDP needs equal per-device
    batches, so the total can differ a little: 114 on 4 devices is 4 x 28 = 112)."""
    return max(1, round(total_batch / (devices * accumulate)))


def check_data_options(input_size: int, eval_size: int | str | None, batch_size: int, num_workers: int,
                       val_fraction: float, num_train: int, num_val: int, augment: AugmentOptions,
                       total_batch: int | None = None) -> None:
    """Refuse a ``--data.*`` option out of its range (:class:`OptionError` naming the flag and the range)."""
    def need(ok: bool, flag: str, value, wanted: str) -> None:
        if not ok:
            raise OptionError(f"--data.{flag} {value}: must be {wanted}")

    for flag, value in (("input_size", input_size), ("eval_size", eval_size)):
        if flag == "input_size" or isinstance(value, int):
            need(isinstance(value, int) and value >= 32 and value % 32 == 0, flag, value,
                 "a positive multiple of 32 (the network's largest stride)")
    need(batch_size >= 1, "batch_size", batch_size, "at least 1")
    need(total_batch is None or total_batch >= 1, "total_batch", total_batch, "at least 1 (or null)")
    need(num_workers >= 0, "num_workers", num_workers, "0 (load in the main process) or more")
    need(0 < val_fraction < 1, "val_fraction", val_fraction, "between 0 and 1")
    need(num_train >= 1 and num_val >= 1, "num_train/num_val", f"{num_train}/{num_val}", "at least 1")
    a = augment
    need(0 <= a.flip_prob <= 1, "augment.flip_prob", a.flip_prob, "a probability, 0 to 1")
    need(a.lighting >= 0, "augment.lighting", a.lighting, "0 (off) or more")
    need(a.colour_jitter is None or a.colour_jitter >= 0, "augment.colour_jitter", a.colour_jitter, "0 (off) or more")
    need(len(a.scale_range) == 2 and 0 < a.scale_range[0] <= a.scale_range[1], "augment.scale_range",
         list(a.scale_range), "two positive numbers, the smaller first")
    need(len(a.crop_scales) > 0 and all(c > 0 for c in a.crop_scales), "augment.crop_scales", list(a.crop_scales),
         "positive fractions of the longer image side")
    need(a.min_visibility is None or 0 <= a.min_visibility <= 1, "augment.min_visibility", a.min_visibility,
         "a fraction, 0 to 1")
    need(a.min_box_size is None or a.min_box_size >= 0, "augment.min_box_size", a.min_box_size, "0 or more pixels")


class DetectionDataModule(pl.LightningDataModule):
    """Training and validation data of the detector.

    Args:
        dataset: which reader: ``synthetic`` (generated on first use), ``coco`` (the official layout or explicit
            jsons), ``voc`` (a VOCdevkit, or a single folder holding ``Annotations/``, ``JPEGImages/``,
            ``ImageSets/Main/``, or a labelImg folder of photos and XMLs) or ``yolo`` (an ultralytics dataset
            YAML, a darknet ``obj.data``, or a folder holding ``classes.txt``, ``images/``, ``labels/``).
            ``tools/train.py --data.root FOLDER`` without ``--data.dataset`` detects it (``detector.data.detect``).
        root: COCO root (holding ``annotations/`` and ``train2017/``, ``val2017/``), VOCdevkit, single VOC folder or
            labelImg folder, YOLO dataset YAML file, obj.data or folder, or synthetic cache folder (default
            ``$DETECTOR_CACHE/synthetic`` or ``~/.cache/detector/synthetic``).
        train_json: COCO-format train annotations (your own data); overrides the one under ``root``.
        train_images: folder of the train images named in ``train_json``.
        val_json: COCO-format validation annotations; overrides the one under ``root``.
        val_images: folder of the validation images named in ``val_json``.
        voc_train_splits: VOC training splits: ``(year, image_set)`` pairs for a VOCdevkit (the year may be an int),
            image set names for a single folder. ``None``: 2007 + 2012 ``trainval`` for a VOCdevkit; ``train`` (or
            ``trainval`` if there is no ``train.txt``) for a single folder.
        voc_val_splits: VOC validation splits, as above. ``None``: 2007 ``test`` for a VOCdevkit; ``val`` (or
            ``test`` if there is no ``val.txt``) for a single folder.
        classes: VOC class names, index = label (case kept). ``None``: Pascal's 20 for a VOCdevkit; for a single
            folder, CVAT's ``labelmap.txt`` order or the sorted object names of the training splits' XMLs; for a
            labelImg folder the sorted names of all its XMLs (read once, before ``setup``).
        xml_dir: labelImg's XML folder, when the XMLs are not beside the photos of ``root``.
        unlabelled: labelImg photos without XML: ``skip`` (left out, counted) or ``negatives`` (trained as photos
            with no object).
        val_fraction: the share of an export with one split held out for validation, chosen by a hash of each file
            name (``detector.data.split``).
        input_size: side of the square training input, in pixels (a multiple of 32).
        eval_size: side of the validation letterbox; ``None`` keeps the original resolution padded to a multiple
            of 32; ``"input"`` uses ``input_size``.
        batch_size: images per batch and device (training and validation).
        total_batch: the training batch summed over every device and gradient accumulation step; when set, each
            device trains on ``round(total_batch / (devices x nodes x accumulate_grad_batches))`` images
            (:func:`per_device_batch`) instead of ``batch_size`` (validation keeps ``batch_size``), one line says
            the total chosen, and ``model.optim.lr_batch_size`` scales the learning rate to that total.
        drop_last: the training loader leaves out each epoch's last, incomplete batch (as the paper's code does).
        num_workers: DataLoader worker processes (0 loads in the main process).
        seed: seed of the shuffling and augmentation streams (and of the synthetic data).
        augment: the training augmentation, an :class:`AugmentOptions` (or a dict of its fields).
        num_train: number of synthetic training images.
        num_val: number of synthetic validation images.
        allow_outside_images: a COCO ``file_name`` may leave its image folder (absolute, or through ``..``);
            refused by default.

    An option out of its range (a batch of 0 images, an input size that is not a multiple of 32, a probability
    above 1) raises :class:`OptionError` naming the flag when the module is built, before any run folder is made.
    """

    def __init__(self, dataset: Literal["synthetic", "coco", "voc", "yolo"] = "synthetic", root: str | None = None,
                 train_json: str | None = None, train_images: str | None = None, val_json: str | None = None,
                 val_images: str | None = None, voc_train_splits: Sequence[VocSplit] | None = None,
                 voc_val_splits: Sequence[VocSplit] | None = None, classes: list[str] | None = None,
                 xml_dir: str | None = None, unlabelled: Unlabelled = "skip", val_fraction: float = VAL_FRACTION,
                 input_size: int = 256,
                 eval_size: int | Literal["input"] | None = "input", batch_size: int = 16, num_workers: int = 2,
                 seed: int = 0, augment: AugmentOptions = AugmentOptions(), num_train: int = 400,
                 num_val: int = 100, allow_outside_images: bool = False, total_batch: int | None = None,
                 drop_last: bool = False):
        super().__init__()
        if dataset not in ("synthetic", "coco", "voc", "yolo"):
            raise ValueError(f"dataset must be 'synthetic', 'coco', 'voc' or 'yolo', got {dataset!r}")
        if dataset == "voc" and root is None:
            raise ValueError("dataset='voc' needs root, the VOCdevkit or single VOC folder")
        if dataset == "yolo" and root is None:
            raise ValueError("dataset='yolo' needs root, the dataset YAML file")
        if dataset == "coco" and root is None and val_json is None and train_json is None:
            raise ValueError("dataset='coco' needs root (the COCO folder), or train_json (and val_json, else a "
                             "validation split is held out of it)")
        self.augment = AugmentOptions(**augment) if isinstance(augment, dict) else augment
        check_data_options(input_size, eval_size, batch_size, num_workers, val_fraction, num_train, num_val,
                           self.augment, total_batch)
        augment = dataclasses.asdict(self.augment)  # the hparams hold plain values: checkpoints load weights_only
        self.save_hyperparameters()
        self.eval_size = input_size if eval_size == "input" else eval_size
        self.train_dataset: DetectionDataset | None = None
        self.val_dataset: DetectionDataset | None = None
        self._val_coco: COCO | None = None
        self._categories: tuple[list[str], list[int]] | None = None
        self._held_out: tuple[DetectionDataset, DetectionDataset] | None = None
        self._recorded_val: list[str] | None = None
        self._noted: set[str] = set()

    def prepare_data(self) -> None:
        """Generate the synthetic set on first use (called once per node before ``setup``)."""
        if self.hparams.dataset == "synthetic":
            self._synthetic_folder()

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets (train for ``fit``; validation for every stage); the annotation files are read here."""
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._build("train", self._train_transform())
        if self.val_dataset is None:
            self.val_dataset = self._build("val", EvalTransform(self.eval_size))
            self.val_dataset.replacement_note = "left out of the evaluation (its objects are not counted as missed)"
        if self.train_dataset is not None:
            self._check_same_categories(self.train_dataset, self.val_dataset)
        for dataset in (self.train_dataset, self.val_dataset):
            for message in getattr(dataset, "notes", []):
                self._note(message)
        if self._held_out is not None and stage in (None, "fit") and self.trainer is not None:
            log_dir = self.trainer.log_dir  # a collective under DDP: every rank asks
            if self.trainer.is_global_zero and log_dir:
                write_split_lists(*self._held_out, log_dir)

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the data: the file names of a held-out split (empty otherwise)."""
        return {"split": split_record(*self._held_out)} if self._held_out is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Use the validation file names recorded in a checkpoint (when the split is built after this)."""
        self._recorded_val = list((state_dict or {}).get("split", {}).get("val") or []) or None

    def restore_split(self, checkpoint: dict) -> None:
        """The held-out split recorded in a loaded checkpoint (Lightning keeps ``state_dict`` under the class
        name), so that evaluating it uses the same validation images; nothing for other checkpoints."""
        self.load_state_dict(checkpoint.get(type(self).__qualname__, {}))

    def _train_transform(self) -> TrainTransform | CropTrainTransform:
        hp, aug = self.hparams, self.augment
        paper = aug.kind == "paper"
        colour = aug.colour_jitter if aug.colour_jitter is not None else (0.4 if paper else 0.3)
        visibility = aug.min_visibility if aug.min_visibility is not None else 0.0
        box_size = aug.min_box_size if aug.min_box_size is not None else 0.0
        if paper:
            margin = PAPER_CLIP_MARGIN if aug.box_clip == "paper" else 0.0
            return CropTrainTransform(hp.input_size, tuple(aug.crop_scales), aug.flip_prob, colour, aug.lighting,
                                      visibility, box_size, hp.seed, aug.colour_float, margin)
        if aug.kind != "resize":
            raise ValueError(f"augment.kind must be 'paper' or 'resize', got {aug.kind!r}")
        return TrainTransform(hp.input_size, tuple(aug.scale_range), aug.flip_prob, colour, visibility, box_size,
                              hp.seed)

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        return self._loader(self.train_dataset, shuffle=True, batch_size=self.train_batch_size(),
                            generator=torch.Generator().manual_seed(self.hparams.seed + rank),
                            drop_last=self.hparams.drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False, batch_size=self.hparams.batch_size, generator=None)

    def train_batch_size(self) -> int:
        """``batch_size``, or with ``total_batch`` the per-device batch nearest it on this trainer's devices (said
        in one line)."""
        total = self.hparams.total_batch
        if not total:
            return self.hparams.batch_size
        devices = self.trainer.world_size if self.trainer is not None else 1
        accumulate = self.trainer.accumulate_grad_batches if self.trainer is not None else 1
        batch = per_device_batch(total, devices, accumulate)
        rank_zero_info(f"batch: {batch} per device x {devices} devices x {accumulate} accumulated = "
                       f"{batch * devices * accumulate} images per step (--data.total_batch {total})")
        return batch

    def _loader(self, dataset: DetectionDataset, shuffle: bool, batch_size: int, generator: torch.Generator | None,
                drop_last: bool = False) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                          collate_fn=collate_detection, pin_memory=torch.cuda.is_available(), drop_last=drop_last,
                          persistent_workers=workers > 0, worker_init_fn=seed_worker, generator=generator)

    @property
    def class_names(self) -> list[str]:
        """Class names, index = label (available before ``setup``)."""
        return self._read_categories()[0]

    @property
    def category_ids(self) -> list[int]:
        """Label -> dataset category id (the ids of ``val_coco`` and of a results file)."""
        return self._read_categories()[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def val_coco(self) -> COCO:
        """pycocotools ``COCO`` of the validation ground truth (original image and category ids, original pixels;
        for VOC and YOLO the reader's annotations converted, VOC difficult objects as crowd). Needs ``setup``."""
        if self.val_dataset is None:
            raise RuntimeError("val_coco is available after setup()")
        if self._val_coco is None:
            if isinstance(self.val_dataset, CocoDetection):
                self._val_coco = self.val_dataset.coco
            else:
                self._val_coco = coco_from_dict(dataset_to_coco(self.val_dataset))
        return self._val_coco

    @property
    def bad_image_count(self) -> int:
        """Reads that failed to decode so far (all workers, train and validation), each replaced by another."""
        return sum(d.bad_image_count for d in (self.train_dataset, self.val_dataset) if d is not None)

    @property
    def bad_image_files(self) -> int:
        """Distinct image files that failed to decode so far (all workers, train and validation)."""
        return sum(d.bad_image_files for d in (self.train_dataset, self.val_dataset) if d is not None)

    def _build(self, split: Literal["train", "val"], transform: TrainTransform | EvalTransform) -> DetectionDataset:
        if self.one_split:
            dataset = self._held_out_split()[0 if split == "train" else 1]
            dataset.transform = transform
            return dataset
        if self.hparams.dataset == "voc":
            return VocDetection(self.hparams.root, self._voc_splits(split), transform, self._read_categories()[0])
        if self.hparams.dataset == "yolo":
            return YoloDetection(self.hparams.root, split, transform)
        json_path, images = self._coco_paths(split)
        return CocoDetection(json_path, images, transform, self.hparams.allow_outside_images)

    @property
    def one_split(self) -> bool:
        """Whether the data has no validation split of its own (so one is held out of it)."""
        hp = self.hparams
        if hp.dataset == "voc":
            return self._voc_layout() == "labelimg" or (hp.voc_val_splits is None and
                                                         not default_voc_splits(hp.root, "val"))
        if hp.dataset == "yolo":
            return not has_split(load_yolo_config(hp.root), "val")
        return hp.dataset == "coco" and hp.train_json is not None and hp.val_json is None and hp.root is None

    def _voc_layout(self) -> str:
        return "labelimg" if self.hparams.xml_dir else voc_layout(self.hparams.root)

    def _note(self, message: str) -> None:
        """One line about how the data was read, once per data module."""
        if message not in self._noted:
            self._noted.add(message)
            note(message)

    def _held_out_split(self) -> tuple[DetectionDataset, DetectionDataset]:
        """(train, validation) of a one-split export, built once (:mod:`detector.data.split`)."""
        if self._held_out is None:
            full = self._build_whole()
            self._held_out = split_dataset(full, self.hparams.val_fraction, self._recorded_val)
            for message in getattr(full, "notes", []):
                self._note(message)
            self._note(split_message(full.source, *self._held_out, self.hparams.val_fraction,
                                     self._recorded_val is not None))
        return self._held_out

    def _build_whole(self) -> DetectionDataset:
        """The one split of the export, untransformed."""
        hp = self.hparams
        if hp.dataset == "voc" and self._voc_layout() == "labelimg":
            dataset = LabelImgDetection(hp.root, hp.xml_dir, None, hp.classes, hp.unlabelled)
            message = dataset.unlabelled_message(hp.unlabelled == "negatives")
            if message:
                self._note(message)
            return dataset
        if hp.dataset == "voc":
            return VocDetection(hp.root, self._voc_splits("train"), None, self._read_categories()[0])
        if hp.dataset == "yolo":
            return YoloDetection(hp.root, "train", None)
        if hp.train_images is None:
            raise ValueError(f"train_json={hp.train_json} needs train_images, the folder of its images")
        return CocoDetection(hp.train_json, hp.train_images, None, hp.allow_outside_images)

    def _voc_splits(self, split: Literal["train", "val"]) -> list[VocSplit]:
        """The VOC splits of ``split``: the argument, else the layout's default
        (:func:`detector.data.voc.default_voc_splits`)."""
        given = self.hparams.voc_train_splits if split == "train" else self.hparams.voc_val_splits
        return default_voc_splits(self.hparams.root, split) if given is None else given

    def _coco_paths(self, split: Literal["train", "val"]) -> tuple[Path, Path]:
        """The (json, image folder) of a split: explicit arguments first, else the layout under ``root``."""
        explicit_json, explicit_images = (getattr(self.hparams, f"{split}_{k}") for k in ("json", "images"))
        if explicit_json is not None:
            if explicit_images is None:
                raise ValueError(f"{split}_json={explicit_json} needs {split}_images, the folder of its images")
            return Path(explicit_json), Path(explicit_images)
        if self.hparams.dataset == "synthetic":
            folder, name = self._synthetic_folder(), split
        elif self.hparams.root is None:  # COCO-format files given one by one: evaluation needs no training json
            raise DatasetError(f"dataset='coco' without root needs --data.{split}_json and --data.{split}_images")
        else:
            folder, name = Path(self.hparams.root), f"{split}2017"
        return folder / "annotations" / f"instances_{name}.json", folder / name

    def _synthetic_folder(self) -> Path:
        return synthetic_dataset(self.hparams.root, self.hparams.seed, self.hparams.num_train, self.hparams.num_val)

    def _read_categories(self) -> tuple[list[str], list[int]]:
        """(class names, category ids): from a built dataset, a constant, the json's categories only, the YAML's
        names, or the VOC training XMLs' object names only (computed once, cached)."""
        for dataset in (self.train_dataset, self.val_dataset):
            if dataset is not None:
                return dataset.class_names, dataset.category_ids
        if self._categories is None:
            self._categories = self._categories_without_images()
        return self._categories

    def _categories_without_images(self) -> tuple[list[str], list[int]]:
        if self.hparams.dataset == "voc":
            names = self.hparams.classes
            layout = self._voc_layout() if names is None else None
            if layout == "devkit":
                names = VOC_CLASSES
            elif layout == "labelimg":
                names = labelimg_classes(photo_xmls(Path(self.hparams.root), self.hparams.xml_dir))
            elif names is None:
                names = folder_classes(self.hparams.root, self._voc_splits("train"))
            return list(names), list(range(1, len(names) + 1))
        if self.hparams.dataset == "yolo":
            names = yolo_class_names(self.hparams.root)
            return names, list(range(1, len(names) + 1))
        if self.hparams.dataset == "synthetic" and self.hparams.val_json is None:
            return list(SYNTHETIC_CLASSES), list(range(1, len(SYNTHETIC_CLASSES) + 1))
        json_path = self.hparams.train_json if self.one_split else self._coco_paths("val")[0]
        categories = sorted(class_categories(load_coco_json(json_path)), key=lambda c: c["id"])
        return [str(c["name"]) for c in categories], [int(c["id"]) for c in categories]

    @staticmethod
    def _check_same_categories(train: DetectionDataset, val: DetectionDataset) -> None:
        if (train.class_names, train.category_ids) != (val.class_names, val.category_ids):
            raise DatasetError(f"{train.source} and {val.source} have different categories: "
                               f"{list(zip(train.category_ids, train.class_names))} vs "
                               f"{list(zip(val.category_ids, val.class_names))}")
