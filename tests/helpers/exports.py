"""Labelling-tool exports in miniature, written as each tool's documentation describes them: a few tiny generated
JPEG photos of one class ("kangaroo"), each with one known box (some with none).

Every writer takes an empty folder and returns an :class:`Export`: what to give as ``--data.root`` (and any other
flag the layout needs) and what ``centernet check`` must count. Boxes are xyxy in the package's continuous pixels
(``x2 - x1`` is the width); each writer converts them to its format (VOC: 1-based ``x1 + 1 .. x2``; COCO: xywh;
YOLO: normalised cxcywh, or a polygon).

Sources of the layouts: labelImg's PascalVoc writer (XML beside the photo); CVAT's format pages (Pascal VOC 1.1:
``ImageSets/Main/default.txt``, ``labelmap.txt``; COCO 1.0: ``annotations/instances_default.json`` + ``images/``;
YOLO 1.1: ``obj.data``, ``obj.names``, ``train.txt``, ``obj_train_data/``; Ultralytics YOLO: ``data.yaml`` with
``path: ./`` and ``train: train.txt``); Roboflow's YOLOv8 ``data.yaml`` (``../train/images``) and COCO
(``_annotations.coco.json`` per split, root category id 0); Label Studio's YOLO (``classes.txt``, ``notes.json``)
and COCO (``result.json``, ``file_name`` ``images/x.jpg``, ids from 0).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

CLASS = "kangaroo"
W, H = 48, 32


@dataclass(frozen=True)
class Photo:
    name: str  # file name, with its suffix
    boxes: tuple[tuple[int, int, int, int], ...]  # xyxy continuous pixels


def photos(prefix: str, count: int, negatives: int = 0) -> list[Photo]:
    """``count`` photos named ``<prefix>NN.jpg``, one box each but the last ``negatives`` (no box)."""
    out = []
    for i in range(count):
        x1, y1 = 2 + i % 7 * 2, 1 + i % 5 * 2
        box = ((x1, y1, x1 + 14 + i % 3 * 4, y1 + 12 + i % 4 * 3),) if i < count - negatives else ()
        out.append(Photo(f"{prefix}{i:02d}.jpg", box))
    return out


@dataclass
class Export:
    """A written export: the command-line options that read it and the expected counts."""

    root: Path
    options: list[str] = field(default_factory=list)
    train: list[Photo] = field(default_factory=list)
    val: list[Photo] | None = None  # None: one split (validation held out of ``train``)

    @property
    def args(self) -> list[str]:
        return ["--data.root", str(self.root), *self.options]


def write_photo(path: Path, photo: Photo) -> Path:
    """A grey JPEG with each box filled in a colour (so a drawn sample shows the object)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((H, W, 3), 110, dtype=np.uint8)
    for x1, y1, x2, y2 in photo.boxes:
        image[y1:y2, x1:x2] = (40, 180, 220)
    cv2.imwrite(str(path), image)
    return path


def voc_xml(photo: Photo, folder: str = "images") -> str:
    objects = "".join(
        f"<object><name>{CLASS}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for x1, y1, x2, y2 in photo.boxes)
    return (f"<annotation><folder>{folder}</folder><filename>{photo.name}</filename><path>/home/u/{photo.name}</path>"
            f"<source><database>Unknown</database></source><size><width>{W}</width><height>{H}</height>"
            f"<depth>3</depth></size><segmented>0</segmented>{objects}</annotation>")


def yolo_line(box: tuple[int, int, int, int], polygon: bool = False) -> str:
    x1, y1, x2, y2 = box
    if polygon:  # a quadrilateral whose bounding box is the box: the segmentation exports' line
        points = [(x1, (y1 + y2) / 2), ((x1 + x2) / 2, y1), (x2, (y1 + y2) / 2), ((x1 + x2) / 2, y2)]
        return "0 " + " ".join(f"{x / W:.6f} {y / H:.6f}" for x, y in points)
    return f"0 {(x1 + x2) / 2 / W:.6f} {(y1 + y2) / 2 / H:.6f} {(x2 - x1) / W:.6f} {(y2 - y1) / H:.6f}"


def coco_dict(items: list[Photo], first_category: int, file_prefix: str = "", root_category: str | None = None,
              attributes: bool = False) -> dict:
    images, annotations = [], []
    for image_id, photo in enumerate(items, start=first_category):
        images.append({"id": image_id, "file_name": file_prefix + photo.name, "width": W, "height": H})
        for x1, y1, x2, y2 in photo.boxes:
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": first_category + (
                1 if root_category else 0), "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                   "segmentation": [], "iscrowd": 0}
            if attributes:
                ann["attributes"] = {"occluded": False, "rotation": 0.0}
            annotations.append(ann)
    categories = [{"id": first_category, "name": CLASS, "supercategory": ""}]
    if root_category:
        categories = [{"id": first_category, "name": root_category, "supercategory": "none"},
                      {"id": first_category + 1, "name": CLASS, "supercategory": root_category}]
    return {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": categories}


# --- labelImg ---------------------------------------------------------------------------------------------------

def labelimg_beside(folder: Path, unlabelled: int = 1) -> Export:
    """Photos with their XML beside them; ``unlabelled`` more photos have no XML."""
    labelled = photos("k", 10)
    for photo in labelled:
        write_photo(folder / photo.name, photo)
        (folder / photo.name).with_suffix(".xml").write_text(voc_xml(photo, folder.name))
    for photo in photos("u", unlabelled, negatives=unlabelled):
        write_photo(folder / photo.name, photo)
    return Export(folder, [], labelled)


def labelimg_apart(folder: Path) -> Export:
    """Photos in ``photos/``, their XMLs in ``xml/`` (labelImg's "Change Save Dir")."""
    labelled = photos("k", 8)
    for photo in labelled:
        write_photo(folder / "photos" / photo.name, photo)
        (folder / "xml").mkdir(parents=True, exist_ok=True)
        (folder / "xml" / photo.name).with_suffix(".xml").write_text(voc_xml(photo, "photos"))
    return Export(folder / "photos", ["--data.xml_dir", str(folder / "xml")], labelled)


# --- CVAT -------------------------------------------------------------------------------------------------------

def cvat_voc(folder: Path) -> Export:
    """CVAT "Pascal VOC 1.1": one subset, ``default``."""
    items = photos("frame_0000", 9)
    (folder / "ImageSets" / "Main").mkdir(parents=True)
    (folder / "Annotations").mkdir()
    (folder / "ImageSets" / "Main" / "default.txt").write_text("".join(Path(p.name).stem + "\n" for p in items))
    (folder / "labelmap.txt").write_text(f"# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                                         f"{CLASS}:250,50,83::\n")
    for photo in items:
        write_photo(folder / "JPEGImages" / photo.name, photo)
        (folder / "Annotations" / photo.name).with_suffix(".xml").write_text(voc_xml(photo, ""))
    return Export(folder, [], items)


def cvat_coco(folder: Path) -> Export:
    """CVAT "COCO 1.0": ``annotations/instances_default.json`` beside ``images/``; ids from 1, ``attributes``."""
    items = photos("frame_0000", 9, negatives=1)
    for photo in items:
        write_photo(folder / "images" / photo.name, photo)
    (folder / "annotations").mkdir()
    (folder / "annotations" / "instances_default.json").write_text(json.dumps(coco_dict(items, 1, attributes=True)))
    return Export(folder, [], items)


def cvat_yolo(folder: Path, data_prefix: bool = False) -> Export:
    """CVAT "YOLO 1.1" (darknet): ``obj.data``, ``obj.names``, ``train.txt``, ``obj_train_data/`` (images and
    labels side by side); ``data_prefix``: the older export's ``data/`` in front of every path."""
    items = photos("frame_0000", 9)
    prefix = "data/" if data_prefix else ""
    (folder / "obj.data").write_text(f"classes = 1\ntrain = {prefix}train.txt\nnames = {prefix}obj.names\n"
                                     "backup = backup/\n")
    (folder / "obj.names").write_text(f"{CLASS}\n")
    (folder / "train.txt").write_text("".join(f"{prefix}obj_train_data/{p.name}\n" for p in items))
    for photo in items:
        write_photo(folder / "obj_train_data" / photo.name, photo)
        (folder / "obj_train_data" / photo.name).with_suffix(".txt").write_text(
            "".join(yolo_line(box) + "\n" for box in photo.boxes))
    return Export(folder, [], items)


def cvat_ultralytics(folder: Path) -> Export:
    """CVAT "Ultralytics YOLO Detection": ``data.yaml`` (``path: ./``, ``train: train.txt``, names a dict),
    ``images/train/``, ``labels/train/``."""
    items = photos("frame_0000", 9)
    (folder / "data.yaml").write_text(f"path: ./\ntrain: train.txt\n\nnames:\n  0: {CLASS}\n")
    (folder / "train.txt").write_text("".join(f"images/train/{p.name}\n" for p in items))
    for photo in items:
        write_photo(folder / "images" / "train" / photo.name, photo)
        label = folder / "labels" / "train" / Path(photo.name).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(yolo_line(box) + "\n" for box in photo.boxes))
    return Export(folder, [], items)


# --- Roboflow ---------------------------------------------------------------------------------------------------

ROBOFLOW_YAML = f"""train: ../train/images
val: ../valid/images
test: ../test/images

nc: 1
names: ['{CLASS}']

roboflow:
  workspace: someone
  project: kangaroos-abc12
  version: 1
  license: CC BY 4.0
  url: https://universe.roboflow.com/someone/kangaroos-abc12/dataset/1
"""


def roboflow_splits() -> dict[str, list[Photo]]:
    return {"train": photos("a_jpg.rf.", 6), "valid": photos("b_jpg.rf.", 3), "test": photos("c_jpg.rf.", 2)}


def roboflow_yolo(folder: Path) -> Export:
    """Roboflow "YOLOv8": ``data.yaml`` saying ``../train/images`` while ``train/`` sits beside it."""
    splits = roboflow_splits()
    for split, items in splits.items():
        for photo in items:
            write_photo(folder / split / "images" / photo.name, photo)
            label = folder / split / "labels" / Path(photo.name).with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(yolo_line(box) + "\n" for box in photo.boxes))
    (folder / "data.yaml").write_text(ROBOFLOW_YAML)
    (folder / "README.roboflow.txt").write_text("exported from roboflow.com\n")
    return Export(folder, [], splits["train"], splits["valid"])


def roboflow_coco(folder: Path) -> Export:
    """Roboflow "COCO": ``_annotations.coco.json`` beside the images of ``train/``, ``valid/``, ``test/``; its
    category 0 is the project (supercategory ``none``, no box), the class is id 1."""
    splits = roboflow_splits()
    for split, items in splits.items():
        for photo in items:
            write_photo(folder / split / photo.name, photo)
        (folder / split / "_annotations.coco.json").write_text(
            json.dumps(coco_dict(items, 0, root_category="kangaroos-sgxe")))
    return Export(folder, [], splits["train"], splits["valid"])


# --- Label Studio -----------------------------------------------------------------------------------------------

def label_studio_yolo(folder: Path) -> Export:
    """Label Studio "YOLO": ``images/``, ``labels/``, ``classes.txt``, ``notes.json``; one empty label file (a
    negative) and one polygon line (its segmentation export)."""
    items = photos("1a2b3c4d-k", 9, negatives=1)
    (folder / "classes.txt").write_text(f"{CLASS}\n")
    (folder / "notes.json").write_text(json.dumps({"categories": [{"id": 0, "name": CLASS}], "info": {}}))
    for i, photo in enumerate(items):
        write_photo(folder / "images" / photo.name, photo)
        label = folder / "labels" / Path(photo.name).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(yolo_line(box, polygon=i == 0) + "\n" for box in photo.boxes))
    return Export(folder, [], items)


def label_studio_coco(folder: Path) -> Export:
    """Label Studio "COCO": ``result.json`` (``file_name`` ``images/<name>``, ids from 0) beside ``images/``."""
    items = photos("5e6f7a8b-k", 9)
    for photo in items:
        write_photo(folder / "images" / photo.name, photo)
    (folder / "result.json").write_text(json.dumps(coco_dict(items, 0, file_prefix="images/")))
    return Export(folder, [], items)


WRITERS = {
    "labelimg_beside": labelimg_beside, "labelimg_apart": labelimg_apart, "cvat_voc": cvat_voc,
    "cvat_coco": cvat_coco, "cvat_yolo": cvat_yolo, "cvat_yolo_data_prefix": lambda f: cvat_yolo(f, True),
    "cvat_ultralytics": cvat_ultralytics, "roboflow_yolo": roboflow_yolo, "roboflow_coco": roboflow_coco,
    "label_studio_yolo": label_studio_yolo, "label_studio_coco": label_studio_coco,
}
