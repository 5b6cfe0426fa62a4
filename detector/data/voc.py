"""Pascal-VOC-format reader (a ``VOCdevkit``, or a single folder of a user's own data) and its COCO ground truth.

Two layouts, told apart by the folder's contents (:func:`voc_layout`):

- ``"devkit"``: a ``VOCdevkit`` holding ``VOC2007/``, ``VOC2012/`` ...; a split is a ``(year, image_set)`` pair;
  the classes default to Pascal's 20 (:data:`VOC_CLASSES`).
- ``"folder"``: one folder holding ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/`` (e.g. BCCD); a split is
  an image set name (``"train"``, ``"val"``); the classes default to the sorted object names of the XMLs of the
  training image set (``train``, or ``trainval`` when there is no ``train.txt``), see :func:`collect_voc_classes`.

Class names keep their case. Labels are indices into the class list, category ids are ``label + 1``. An object
whose class is not in the list is a :class:`DatasetError` naming the xml file, the class and the known classes.

Coordinates: VOC stores 1-based, inclusive pixel indices ``xmin..xmax``. The reader converts them once, here, to
the package's continuous xyxy frame, where pixel ``i`` (0-based) spans ``[i, i + 1)``:
``(xmin - 1, ymin - 1, xmax, ymax)``. So a box covering pixels 1..10 (VOC) becomes ``x1 = 0, x2 = 10``, width 10.

``difficult`` objects are not training targets: they are returned as ``crowd_boxes`` (ignore regions). The converter
:func:`voc_to_coco` writes them with ``iscrowd: 1`` so that pycocotools' COCOeval ignores them (a detection on a
difficult object is neither a true nor a false positive), which is VOC's own rule.

Images: ``JPEGImages/<name>.jpg``; when that file does not exist, the xml's ``<filename>``, else the one file of
``JPEGImages`` with the stem ``<name>`` (any extension).

Image ids: the file stem without underscores, as an integer (``000005`` -> 5, ``2008_000008`` -> 2008000008), which
is unique across VOC2007 and VOC2012; a split whose names are not all numeric (or collide) is numbered 0..n-1.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from detector.data.cocoformat import dataset_to_coco, write_dataset_json
from detector.data.dataset import Annotation, BoxRepairs, DatasetError, DetectionDataset, Sample, repair_boxes

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
# Category ids of the converted COCO-format ground truth: label + 1.
VOC_CATEGORY_IDS = tuple(range(1, len(VOC_CLASSES) + 1))
VOC_TRAIN_SPLITS = (("2007", "trainval"), ("2012", "trainval"))
VOC_VAL_SPLITS = (("2007", "test"),)

# The image sets of a single folder, by preference (CVAT writes its subsets, often only "default").
FOLDER_SETS = {"train": ("train", "trainval", "default"), "val": ("val", "validation", "test")}
# CVAT's label order file, beside Annotations/ ("name:color:parts:actions" lines; "background" is no class).
LABELMAP = "labelmap.txt"

# A split: a (year, image_set) pair for a VOCdevkit (the year may be an int), an image set name for a single folder.
VocSplit = tuple[str | int, str] | str


def voc_layout(root: str | Path) -> Literal["devkit", "folder", "labelimg"]:
    """``"folder"`` if ``root`` holds ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``; ``"devkit"`` if it
    holds ``VOC*/ImageSets/Main/``; ``"labelimg"`` if it holds XML files itself (photos with their XML beside them,
    read by :mod:`detector.data.labelimg`); otherwise a :class:`DatasetError` naming the folder."""
    root = Path(root)
    if all((root / sub).is_dir() for sub in ("Annotations", "JPEGImages", "ImageSets/Main")):
        return "folder"
    if any(path.is_dir() for path in root.glob("VOC*/ImageSets/Main")):
        return "devkit"
    if root.is_dir() and any(root.glob("*.xml")):
        return "labelimg"
    state = "does not exist" if not root.exists() else "is no such layout"
    raise DatasetError(f"{root}: not a VOC dataset ({state}): expected a VOCdevkit (holding VOC2007/ImageSets/Main "
                       "...), a single folder holding Annotations/, JPEGImages/ and ImageSets/Main/, or photos with "
                       "labelImg XMLs (beside them, or in the folder given by --data.xml_dir)")


def default_voc_splits(root: str | Path, stage: Literal["train", "val"]) -> list[VocSplit]:
    """The splits used when none are given: for a VOCdevkit :data:`VOC_TRAIN_SPLITS` / :data:`VOC_VAL_SPLITS`; for
    a single folder the first image set of :data:`FOLDER_SETS` there is (names matched ignoring case), for
    validation ``[]`` when there is none (the data module then holds a validation split out of the training set)."""
    if voc_layout(root) == "devkit":
        return [tuple(split) for split in (VOC_TRAIN_SPLITS if stage == "train" else VOC_VAL_SPLITS)]
    main = Path(root) / "ImageSets" / "Main"
    sets = {path.stem.lower(): path.stem for path in sorted(main.glob("*.txt"))} if main.is_dir() else {}
    found = next((sets[name] for name in FOLDER_SETS[stage] if name in sets), None)
    if found is not None:
        return [found]
    return [] if stage == "val" else ["train"]


def voc_split_folders(root: str | Path, splits: Sequence[VocSplit] | str) -> list[tuple[Path, str]]:
    """``(folder holding Annotations/ JPEGImages/ ImageSets/, image set name)`` of each split, checked against the
    layout of ``root`` (a bare string is one image set of a single folder)."""
    root = Path(root)
    layout = voc_layout(root)
    splits = [splits] if isinstance(splits, str) else list(splits)
    folders = []
    for split in splits:
        if layout == "folder":
            if not isinstance(split, str):
                raise DatasetError(f"{root} is a single VOC folder: a split is an image set name such as 'train' "
                                   f"(a file of ImageSets/Main), got {split!r}")
            folders.append((root, split))
        else:
            if isinstance(split, str) or len(split) != 2:
                raise DatasetError(f"{root} is a VOCdevkit: a split is a (year, image_set) pair such as "
                                   f"('2007', 'trainval'), got {split!r}")
            year, image_set = (str(part) for part in split)  # jsonargparse passes [[2007, trainval]] as ints
            folders.append((root / f"VOC{year}", image_set))
    return folders


def collect_voc_classes(root: str | Path, splits: Sequence[VocSplit] | str) -> list[str]:
    """The sorted (case-sensitive, case kept) distinct object names in the XMLs of ``splits``; reads only the
    ``<object><name>`` tags. No object at all is a :class:`DatasetError` (there would be no class to learn)."""
    names: set[str] = set()
    for folder, image_set in voc_split_folders(root, splits):
        for name in _read_image_set(folder / "ImageSets" / "Main" / f"{image_set}.txt"):
            names.update(_object_names(folder / "Annotations" / f"{name}.xml"))
    if not names:
        raise DatasetError(f"{root} {list(splits)}: no object in any annotation, so no class list; pass the classes")
    return sorted(names)


def _object_names(path: Path) -> list[str]:
    """The class name of every object of one xml file."""
    root = _parse_xml(path)
    return [_object_name(obj, path) for obj in root.iter("object")]


class VocDetection(DetectionDataset):
    """The images of one or more splits of a VOC-format dataset (either layout, see the module docstring).

    Args:
        root: a ``VOCdevkit`` folder, or a single folder holding ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``.
        splits: VOCdevkit: ``(year, image_set)`` pairs, e.g. ``[("2007", "trainval"), ("2012", "trainval")]``;
            single folder: image set names, e.g. ``["train"]``. ``None``: :func:`default_voc_splits` for training.
        transform: applied to each :class:`Sample`.
        classes: class names, index = label (case kept). ``None``: Pascal's 20 for a VOCdevkit; for a single folder,
            :func:`collect_voc_classes` of its training image set (pass the list explicitly when this dataset is a
            validation split whose classes must match another training split).
    """

    def __init__(self, root: str | Path, splits: Sequence[VocSplit] | str | None = None,
                 transform: Callable[[Sample], Any] | None = None, classes: Sequence[str] | None = None):
        root = Path(root)
        splits = default_voc_splits(root, "train") if splits is None else splits
        splits = [splits] if isinstance(splits, str) else [s if isinstance(s, str) else tuple(s) for s in splits]
        classes = _check_classes(classes) if classes is not None else default_voc_classes(root)
        source = f"{root} {splits}"
        entries = [(folder, name) for folder, image_set in voc_split_folders(root, splits)
                   for name in _read_image_set(folder / "ImageSets" / "Main" / f"{image_set}.txt")]
        finder, repairs, annotations = _ImageFinder(), BoxRepairs(), []
        for (folder, name), image_id in zip(entries, _image_ids([name for _, name in entries])):
            annotation, found = _read_xml(folder, name, image_id, classes, finder)
            annotations.append(annotation)
            repairs.add(found)
        repairs.warn(source)
        super().__init__(annotations, classes, list(range(1, len(classes) + 1)), source, transform)


def default_voc_classes(root: str | Path) -> list[str]:
    """The classes used when none are given: Pascal's 20 for a VOCdevkit; for a single folder the order of CVAT's
    ``labelmap.txt`` when there is one, else the training XMLs' names (:func:`folder_classes`)."""
    if voc_layout(root) == "devkit":
        return list(VOC_CLASSES)
    return folder_classes(root, default_voc_splits(root, "train"))


def folder_classes(root: str | Path, splits: Sequence[VocSplit] | str) -> list[str]:
    """The classes of a single folder: its ``labelmap.txt`` order, else :func:`collect_voc_classes` of ``splits``."""
    labelmap = Path(root) / LABELMAP
    return read_labelmap(labelmap) if labelmap.is_file() else collect_voc_classes(root, splits)


def read_labelmap(path: Path) -> list[str]:
    """The label names of a CVAT ``labelmap.txt`` in its order (comments and ``background`` left out)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the label map: {error}") from error
    names = [line.split(":", 1)[0].strip() for line in lines if line.strip() and not line.startswith("#")]
    names = [name for name in names if name and name != "background"]
    if not names:
        raise DatasetError(f"{path}: no label in it; delete it to take the classes from the XMLs")
    return names


def _check_classes(classes: Sequence[str]) -> list[str]:
    """A non-empty list of distinct, non-empty names (a bare string is refused: it would be a list of letters)."""
    if isinstance(classes, str) or not classes or not all(isinstance(c, str) and c.strip() for c in classes) \
            or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty list of distinct non-empty names, got {classes!r}")
    return list(classes)


def _read_image_set(path: Path) -> list[str]:
    """The image names listed in ``ImageSets/Main/<set>.txt``; a missing or empty list is an error."""
    try:
        names = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the image set: {error}") from error
    if not names:
        raise DatasetError(f"{path}: the image set is empty")
    return names


def _image_ids(names: list[str]) -> list[int]:
    """Integer ids from the file stems (see the module docstring)."""
    digits = [name.replace("_", "") for name in names]
    if all(d.isdigit() for d in digits) and len(set(digits)) == len(digits):
        return [int(d) for d in digits]
    return list(range(len(names)))


def _parse_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise DatasetError(f"{path}: cannot read the annotation: {error}") from error


def _read_xml(folder: Path, name: str, image_id: int, classes: list[str],
              finder: _ImageFinder) -> tuple[Annotation, BoxRepairs]:
    """Parse ``Annotations/<name>.xml``: objects split into targets and difficult ones, boxes converted once."""
    path = folder / "Annotations" / f"{name}.xml"
    tree = _parse_xml(path)
    return read_voc_annotation(tree, path, finder.find(folder / "JPEGImages", name, tree.findtext("filename")),
                               image_id, classes)


def read_voc_annotation(tree: ET.Element, path: Path, image: Path, image_id: int,
                        classes: list[str]) -> tuple[Annotation, BoxRepairs]:
    """The :class:`Annotation` of one parsed VOC xml (``path`` names it in errors) for the image file ``image``:
    objects split into targets and difficult ones, boxes converted once and repaired."""
    width, height = _read_size(tree, path)
    boxes, labels, difficult = _read_objects(tree, path, classes)
    boxes, keep, repairs = repair_boxes(boxes, torch.full((len(boxes),), float(width)),
                                        torch.full((len(boxes),), float(height)))
    repairs.name(path)
    boxes, labels, difficult = boxes.numpy()[keep.numpy()], labels[keep.numpy()], difficult[keep.numpy()]
    annotation = Annotation(file=image, image_id=image_id, boxes=boxes[~difficult], labels=labels[~difficult],
                            crowd_boxes=boxes[difficult], crowd_labels=labels[difficult], width=width, height=height)
    return annotation, repairs


def _read_size(tree: ET.Element, path: Path) -> tuple[int, int]:
    """``(width, height)`` from ``<size>``; missing, non-numeric or non-positive is an error."""
    try:
        width, height = (int(float(tree.findtext(f"size/{key}", ""))) for key in ("width", "height"))
    except ValueError as error:
        raise DatasetError(f"{path}: missing or invalid <size> width/height: {error}") from error
    if width <= 0 or height <= 0:
        raise DatasetError(f"{path}: <size> must be positive, got width {width}, height {height}")
    return width, height


def _object_name(obj: ET.Element, path: Path) -> str:
    name = (obj.findtext("name") or "").strip()
    if not name:
        raise DatasetError(f"{path}: an <object> has no <name>")
    return name


def _read_objects(tree: ET.Element, path: Path, classes: list[str]) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``[N, 4]`` float32 xyxy (0-based continuous, see the module docstring), ``[N]`` labels, ``[N]`` difficult."""
    label_of = {name: label for label, name in enumerate(classes)}
    boxes, labels, difficult = [], [], []
    for obj in tree.iter("object"):
        name = _object_name(obj, path)
        if name not in label_of:
            raise DatasetError(f"{path}: unknown class {name!r}; known classes are {classes}")
        try:
            xmin, ymin, xmax, ymax = (float(obj.findtext(f"bndbox/{key}", ""))
                                      for key in ("xmin", "ymin", "xmax", "ymax"))
            is_difficult = int(obj.findtext("difficult") or 0) == 1
        except ValueError as error:
            raise DatasetError(f"{path}: object {name!r} has an invalid bndbox or difficult flag: {error}") from error
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])
        labels.append(label_of[name])
        difficult.append(is_difficult)
    return (torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), np.array(labels, dtype=np.int64),
            np.array(difficult, dtype=bool))


class _ImageFinder:
    """The image file of an xml (see the module docstring); an image folder is listed at most once, and only when
    an image is not ``<name>.jpg``. A missing image is left to the loader, which replaces it and counts it."""

    def __init__(self):
        self._listings: dict[Path, dict[str, Path]] = {}

    def find(self, image_dir: Path, name: str, xml_filename: str | None) -> Path:
        default = image_dir / f"{name}.jpg"
        if default.is_file():
            return default
        if xml_filename and (image_dir / Path(xml_filename.strip()).name).is_file():
            return image_dir / Path(xml_filename.strip()).name
        return self._by_stem(image_dir).get(name, default)

    def _by_stem(self, image_dir: Path) -> dict[str, Path]:
        if image_dir not in self._listings:
            files = sorted(path for path in image_dir.iterdir() if path.is_file()) if image_dir.is_dir() else []
            self._listings[image_dir] = {path.stem: path for path in reversed(files)}  # first in sorted order wins
        return self._listings[image_dir]


def voc_to_coco(dataset: VocDetection) -> dict[str, Any]:
    """The ground truth of a VOC dataset as a COCO-format dict (difficult objects written with ``iscrowd: 1``), with
    the dataset's own classes and category ids; see :func:`detector.data.cocoformat.dataset_to_coco`."""
    return dataset_to_coco(dataset)


def write_voc_coco_json(dataset: VocDetection, path: str | Path) -> Path:
    """Write :func:`voc_to_coco` of ``dataset`` to ``path`` (json); returns the path."""
    return write_dataset_json(dataset, path)
