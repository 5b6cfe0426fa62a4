"""YOLO-format reader: the ultralytics dataset YAML, its image folders and one label file per image.

The YAML (see :func:`load_yolo_yaml`)::

    path: ../datasets/cells   # dataset root; relative to the YAML's folder (the YAML's folder when missing)
    train: images/train       # an image folder (searched recursively) or a .txt list of image paths, or a list
    val: images/val           #   of those; relative to ``path``
    names: [RBC, WBC]         # or {0: RBC, 1: WBC}

Paths are resolved as ultralytics resolves them: ``path`` relative to the YAML's folder; a split relative to
``path``, else to the YAML's folder, and ``../x`` that does not exist retried as ``x`` (a Roboflow ``data.yaml`` says
``train: ../train/images`` while ``train/`` sits beside it). ``nc``, when given, must equal the number of names.

Two other layouts give the same content without a YAML (:func:`load_yolo_config`): a darknet ``obj.data`` (CVAT
"YOLO 1.1": ``names = obj.names``, ``train = train.txt``, ``valid = valid.txt`` optional, lines such as
``obj_train_data/a.jpg`` or ``data/obj_train_data/a.jpg``, labels beside the images), and a folder holding
``classes.txt``, ``images/`` and ``labels/`` (Label Studio's YOLO export; one split). A split that a layout does not
give is ``None`` (:func:`has_split`): the data module then holds out a validation split (``detector.data.split``).

A ``.txt`` list holds one image path a line; a relative one is relative to the list's folder (a leading ``data/``
that does not exist there is dropped, as darknet lists are written from the folder above). The labels of an
image are where its path has its last ``images`` folder replaced by ``labels``, with the suffix ``.txt``
(``images/train/a.jpg`` -> ``labels/train/a.txt``; without an ``images`` folder, ``a.txt`` next to the image). One
``<class> <cx> <cy> <w> <h>`` line per object, normalised to 0..1 by the image size; a line ``<class> x1 y1 x2 y2
...`` of three or more points (a segmentation export's polygon) is the polygon's bounding box, as ultralytics reads
it; an image without a label file, or with an empty one, has no objects (a negative).

Boxes change frame here, once: normalised cxcywh -> cxcywh original pixels (times the image size) -> xyxy
(``detector.boxes.cxcywh_to_xyxy``). Labels are the class indices, category ids ``label + 1``. Image ids are
``0..n-1`` in the sorted path order of the split's images.

Image size: parsed from the file's header (JPEG start-of-frame, PNG ``IHDR``: exact, no pixel decoded, a few
hundred bytes read); other formats, or a header that cannot be parsed, are decoded once with OpenCV. These are the
stored pixels, as :func:`detector.images.read_image` returns them (no EXIF rotation).

Bad input follows :mod:`detector.data.dataset`: a malformed YAML, a missing key, a label line with the wrong number
of fields, a non-number or a class index out of range is a :class:`DatasetError` naming the file (and line); boxes
reaching outside their image are clipped, empty ones dropped, counted in one warning (an overshoot under
:data:`ROUNDING` of the image side is label rounding: set on the border, not counted); an image whose size cannot be
read is left out of the split with one warning naming it (the other images keep their ids).
"""
from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch
import yaml

from detector.boxes import cxcywh_to_xyxy
from detector.data.cocoformat import dataset_to_coco
from detector.data.dataset import Annotation, BoxRepairs, DatasetError, DetectionDataset, Sample, repair_boxes
from detector.images import ImageReadError, read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# JPEG start-of-frame markers (all coding processes; not DHT 0xC4, JPG 0xC8, DAC 0xCC).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A box past the image border by less than this fraction of the side is label rounding: set on the border, uncounted.
ROUNDING = 1e-4


def load_yolo_yaml(path: str | Path) -> dict[str, Any]:
    """Read and check a dataset YAML; ``names`` is returned as a list of ``C`` strings (index = class).

    A file that cannot be read, malformed YAML (the message gives the line), a top level that is not a mapping, or
    ``names`` missing, empty, or a dict whose keys are not ``0..C-1`` is a :class:`DatasetError` naming the file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the dataset YAML: {error}") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise DatasetError(f"{path}{line}: malformed YAML: {error}") from error
    if not isinstance(config, dict):
        raise DatasetError(f"{path}: expected a mapping with path, train, val, names; got {type(config).__name__}")
    names = _class_names(config.get("names"), path)
    if config.get("nc") is not None and config["nc"] != len(names):
        raise DatasetError(f"{path}: 'nc: {config['nc']}' but 'names' holds {len(names)} classes; make them agree")
    return {**config, "names": names, "source": Path(path)}


def load_yolo_config(path: str | Path) -> dict[str, Any]:
    """The dataset of a YAML, a darknet ``obj.data`` or a Label Studio YOLO folder (see the module docstring), as a
    YAML-like dict: ``names`` (a list), ``train``/``val`` (entries as in a YAML, or absent), ``path``, ``source``."""
    path = Path(path)
    if path.is_dir():
        return _label_studio_config(path)
    if path.suffix == ".data":
        return _darknet_config(path)
    return load_yolo_yaml(path)


def _label_studio_config(folder: Path) -> dict[str, Any]:
    """``classes.txt`` (one name a line), ``images/``, ``labels/``: one split, ``train``."""
    classes = folder / "classes.txt"
    if not classes.is_file() or not (folder / "images").is_dir():
        raise DatasetError(f"{folder}: not a YOLO folder: expected classes.txt and images/ (with labels/), or give "
                           "the dataset YAML or obj.data file as --data.root")
    names = _read_names(classes)
    return {"train": "images", "names": names, "source": classes}


def _darknet_config(path: Path) -> dict[str, Any]:
    """``key = value`` lines: ``names``, ``train``, optional ``valid`` (files relative to obj.data's folder)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the darknet data file: {error}") from error
    values = dict(tuple(part.strip() for part in line.split("=", 1)) for line in lines if "=" in line)
    if "names" not in values or "train" not in values:
        raise DatasetError(f"{path}: a darknet obj.data needs 'names = obj.names' and 'train = train.txt'")
    config = {"train": str(_darknet_file(path.parent, values["train"])), "source": path,
              "names": _read_names(_darknet_file(path.parent, values["names"]))}
    if values.get("valid"):
        config["val"] = str(_darknet_file(path.parent, values["valid"]))
    if values.get("classes", "").strip().isdigit() and int(values["classes"]) != len(config["names"]):
        raise DatasetError(f"{path}: 'classes = {values['classes']}' but {values['names']} holds "
                           f"{len(config['names'])} names; make them agree")
    return config


def _darknet_file(folder: Path, name: str) -> Path:
    """A file named in obj.data: relative to its folder, a leading ``data/`` dropped when that does not exist."""
    candidate = folder / name
    if not candidate.exists() and name.startswith("data/"):
        candidate = folder / name[len("data/"):]
    return candidate


def _read_names(path: Path) -> list[str]:
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the class names: {error}") from error
    if not names:
        raise DatasetError(f"{path}: no class name in it (one name a line)")
    return names


def has_split(config: dict[str, Any], split: str) -> bool:
    """Whether the dataset names the split (``val`` also under the key ``validation``, as ultralytics accepts)."""
    keys = (split, "validation") if split == "val" else (split,)
    return any(config.get(key) not in (None, "", []) for key in keys)


def _class_names(names: Any, path: str | Path) -> list[str]:
    """``names`` as a list (a ``{index: name}`` dict must have the keys ``0..C-1``)."""
    if isinstance(names, dict):
        try:
            by_index = {int(key): str(name) for key, name in names.items()}
        except (TypeError, ValueError) as error:
            raise DatasetError(f"{path}: the keys of 'names' must be class indices: {error}") from error
        if sorted(by_index) != list(range(len(by_index))):
            raise DatasetError(f"{path}: the keys of 'names' must be 0..{len(by_index) - 1}, got {sorted(by_index)}")
        names = [by_index[i] for i in range(len(by_index))]
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{path}: missing or empty key 'names' (a list of class names or an {{index: name}} dict),"
                           f" got {names!r}")
    return [str(name) for name in names]


def yolo_class_names(yaml_path: str | Path) -> list[str]:
    """The class names of a dataset YAML, obj.data or YOLO folder (index = label), without reading any image or
    label."""
    return load_yolo_config(yaml_path)["names"]


def split_images(config: dict[str, Any], split: str, yaml_path: str | Path) -> list[Path]:
    """The sorted image paths of ``config[split]`` (folders searched recursively, ``.txt`` lists read)."""
    if not has_split(config, split):
        raise DatasetError(f"{yaml_path}: missing the key {split!r} (an image folder or .txt list, relative to "
                           "'path')")
    value = config.get(split) if config.get(split) not in (None, "", []) else config.get("validation")
    yaml_folder = Path(yaml_path).parent
    root = yaml_folder / str(config["path"]) if config.get("path") else yaml_folder
    entries = value if isinstance(value, list) else [value]
    images: set[Path] = set()
    for entry in entries:
        images.update(_entry_images(resolve_entry(str(entry), root, yaml_folder), yaml_path, split))
    if not images:
        raise DatasetError(f"{yaml_path}: the {split!r} split {entries} (under {root}) holds no image")
    return sorted(images)


def resolve_entry(entry: str, root: Path, yaml_folder: Path) -> Path:
    """Where a split's entry is: the first that exists of ``root/entry``, ``root/x`` for ``entry = ../x``,
    ``yaml_folder/entry``, ``yaml_folder/x`` (ultralytics' order, see the module docstring); else ``root/entry``."""
    stripped = entry[3:] if entry.startswith("../") else None
    candidates = [root / entry, root / stripped if stripped else None, yaml_folder / entry,
                  yaml_folder / stripped if stripped else None]
    return next((c for c in candidates if c is not None and c.exists()), root / entry)


def _entry_images(location: Path, yaml_path: str | Path, split: str) -> list[Path]:
    if location.is_dir():
        return [p for p in location.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if location.suffix == ".txt" and location.is_file():
        lines = [line.strip() for line in location.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [_darknet_file(location.parent, line) for line in lines]
    raise DatasetError(f"{yaml_path}: {split}: {location} is neither an image folder nor a .txt list of images")


def label_path(image: Path) -> Path:
    """The label file of an image: its last ``images`` folder replaced by ``labels``, suffix ``.txt``."""
    parts = image.parts
    folders = [i for i, part in enumerate(parts[:-1]) if part == "images"]
    if folders:
        parts = (*parts[:folders[-1]], "labels", *parts[folders[-1] + 1:])
    return Path(*parts).with_suffix(".txt")


def read_label_file(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``[N, 4]`` float32 normalised cxcywh and ``[N]`` int64 labels of one label file (none if it is missing).

    A line with other than 5 fields, a non-number, or a class that is not an index in ``0..num_classes-1`` is a
    :class:`DatasetError` naming the file and the line. Non-finite coordinates are returned as they are (the box
    repair drops them).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return np.zeros((0, 4), dtype=np.float32), np.zeros((0,), dtype=np.int64)
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the label file: {error}") from error
    rows = [_parse_line(line, path, number, num_classes)
            for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    boxes = np.array([box for _, box in rows], dtype=np.float32).reshape(-1, 4)
    return boxes, np.array([label for label, _ in rows], dtype=np.int64)


def _parse_line(line: str, path: Path, number: int, num_classes: int) -> tuple[int, list[float]]:
    fields = line.split()
    if len(fields) >= 7 and len(fields) % 2 == 1:  # <class> and three or more x y points: a polygon
        return _parse_polygon(fields, line, path, number, num_classes)
    if len(fields) != 5:
        raise DatasetError(f"{path}, line {number}: expected 5 fields '<class> <cx> <cy> <w> <h>', got "
                           f"{len(fields)}: {line.strip()!r}")
    try:
        values = [float(field) for field in fields]
    except ValueError as error:
        raise DatasetError(f"{path}, line {number}: not a number in {line.strip()!r}") from error
    if not (values[0].is_integer() and 0 <= values[0] < num_classes):
        raise DatasetError(f"{path}, line {number}: class {fields[0]!r} is not an index in 0..{num_classes - 1} "
                           f"(the YAML names {num_classes} classes)")
    return int(values[0]), values[1:]


def _parse_polygon(fields: list[str], line: str, path: Path, number: int,
                   num_classes: int) -> tuple[int, list[float]]:
    """The normalised cxcywh of a polygon's bounding box."""
    label, _ = _parse_line(" ".join(fields[:5]), path, number, num_classes)
    try:
        points = np.array([float(field) for field in fields[1:]], dtype=np.float64).reshape(-1, 2)
    except ValueError as error:
        raise DatasetError(f"{path}, line {number}: not a number in {line.strip()!r}") from error
    (x1, y1), (x2, y2) = points.min(axis=0), points.max(axis=0)
    return label, [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` of an image file (see the module docstring), or ``None`` if it cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            size = _png_size(head) if head.startswith(_PNG_SIGNATURE) else \
                _jpeg_size(f) if head.startswith(b"\xff\xd8") else None
    except OSError:
        return None
    if size is not None:
        return size
    try:
        height, width = read_image(path).shape[:2]
    except ImageReadError:
        return None
    return width, height


def _png_size(head: bytes) -> tuple[int, int] | None:
    """The first chunk of a PNG is ``IHDR``: big-endian width and height at bytes 16..24."""
    if len(head) < 24 or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return (width, height) if width and height else None


def _jpeg_size(f: BinaryIO) -> tuple[int, int] | None:
    """Walk the JPEG segments after SOI up to the first start-of-frame, whose header holds height and width."""
    f.seek(2)
    while (marker := _next_marker(f)) is not None:
        if marker in _SOF_MARKERS:
            frame = f.read(7)  # length (2), precision (1), height (2), width (2)
            if len(frame) < 7:
                return None
            height, width = struct.unpack(">HH", frame[3:7])
            return (width, height) if width and height else None  # height 0: given later (DNL), decode instead
        if marker in (0xD9, 0xDA):  # end of image or scan data before any frame header
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        length = f.read(2)
        if len(length) < 2:
            return None
        f.seek(struct.unpack(">H", length)[0] - 2, 1)
    return None


def _next_marker(f: BinaryIO) -> int | None:
    """The code of the next marker (``0xFF`` then a code; fill bytes skipped); ``None`` at the end of the file."""
    byte = f.read(1)
    while byte and byte != b"\xff":
        byte = f.read(1)
    while byte == b"\xff":
        byte = f.read(1)
    return byte[0] if byte else None


class YoloDetection(DetectionDataset):
    """The images of one split of a YOLO-format dataset (layout and rules in the module docstring).

    Args:
        yaml_path: the dataset YAML (``path``, ``train``, ``val``, ``names``), a darknet ``obj.data``, or a
            folder holding ``classes.txt``, ``images/`` and ``labels/`` (:func:`load_yolo_config`).
        split: the YAML key of the split (``"train"``, ``"val"``, ``"test"``).
        transform: applied to each :class:`Sample`.
    """

    def __init__(self, yaml_path: str | Path, split: str = "train",
                 transform: Callable[[Sample], Any] | None = None):
        config = load_yolo_config(yaml_path)
        names = config["names"]
        yaml_path = config["source"] if Path(yaml_path).is_dir() else yaml_path
        source = f"{yaml_path} [{split}]"
        repairs, annotations, unreadable = BoxRepairs(), [], []
        for image_id, image in enumerate(split_images(config, split, yaml_path)):
            size = image_size(image)
            if size is None:
                unreadable.append(image)
                continue
            annotation, found = _read_image_labels(image, image_id, size, len(names))
            annotations.append(annotation)
            repairs.add(found)
        _warn_unreadable(unreadable, source)
        repairs.warn(source)
        super().__init__(annotations, names, list(range(1, len(names) + 1)), source, transform)


def _read_image_labels(image: Path, image_id: int, size: tuple[int, int],
                       num_classes: int) -> tuple[Annotation, BoxRepairs]:
    """The :class:`Annotation` of one image: its label file read, boxes converted to pixels and repaired."""
    width, height = size
    normalised, labels = read_label_file(label_path(image), num_classes)
    size = torch.tensor([width, height, width, height], dtype=torch.float32)
    boxes = _snap_rounding(cxcywh_to_xyxy(torch.from_numpy(normalised) * size), size)  # [N, 4] xyxy pixels
    boxes, keep, repairs = repair_boxes(boxes, torch.full((len(labels),), float(width)),
                                        torch.full((len(labels),), float(height)))
    repairs.name(label_path(image))
    keep = keep.numpy()
    annotation = Annotation(file=image, image_id=image_id, boxes=boxes.numpy()[keep], labels=labels[keep],
                            crowd_boxes=np.zeros((0, 4), dtype=np.float32), crowd_labels=np.zeros((0,), np.int64),
                            width=width, height=height)
    return annotation, repairs


def _snap_rounding(boxes: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Put coordinates past the border by less than :data:`ROUNDING` of the image side on the border.

    Normalised labels are written rounded (often to 6 decimals), so a box touching the border lands a hair outside;
    snapping those keeps the clipping count (and its warning) for real overshoots. ``boxes`` ``[N, 4]`` xyxy pixels,
    ``size`` ``[4]`` (W, H, W, H).
    """
    below = (boxes < 0) & (boxes > -ROUNDING * size)
    above = (boxes > size) & (boxes < (1 + ROUNDING) * size)
    return torch.where(below, torch.zeros_like(boxes), torch.where(above, size.expand_as(boxes), boxes))


def _warn_unreadable(images: list[Path], source: str) -> None:
    if images:
        shown = ", ".join(str(image) for image in images[:5]) + (" ..." if len(images) > 5 else "")
        warnings.warn(f"{source}: {len(images)} images left out, their size cannot be read (missing, corrupt or not "
                      f"an image): {shown}", stacklevel=3)


def yolo_to_coco(dataset: YoloDetection) -> dict[str, Any]:
    """The ground truth of a YOLO dataset as a COCO-format dict (category ids ``label + 1``, boxes COCO xywh in
    original pixels); see :func:`detector.data.cocoformat.dataset_to_coco`."""
    return dataset_to_coco(dataset)
