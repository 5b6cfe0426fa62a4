"""Datasets in miniature for the tests, written in the real layouts: COCO (official layout and a lone json), a
VOCdevkit, a user's own VOC folder, and COCO ground truth built in memory (``make_coco``, ``annotation``, ``det``)."""
import contextlib
import io
import json
from pathlib import Path

import cv2
from pycocotools.coco import COCO

from helpers.checkpoints import CLASS_NAMES
from helpers.images import make_image, write_image

# Categories with gaps in the ids, listed out of order: labels follow the id order.
COCO_CATEGORIES = [{"id": 7, "name": "kite"}, {"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}]


def write_coco_dataset(root: Path, split: str = "val2017") -> Path:
    """The official layout: ``annotations/instances_<split>.json`` and ``<split>/``; returns the json path.

    Image 10 (64x48): two objects and one crowd box; image 20 (40x40): no annotation; image 30 (32x64): one object.
    """
    images = [{"id": 10, "file_name": "a.jpg", "width": 64, "height": 48},
              {"id": 20, "file_name": "b.png", "width": 40, "height": 40},
              {"id": 30, "file_name": "c.jpg", "width": 32, "height": 64}]
    for image in images:
        write_image(root / split / image["file_name"], image["width"], image["height"])
    annotations = [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [4, 5, 10, 20], "iscrowd": 0, "area": 200},
        {"id": 2, "image_id": 10, "category_id": 90, "bbox": [30, 10, 20.5, 8], "iscrowd": 0, "area": 164},
        {"id": 3, "image_id": 10, "category_id": 1, "bbox": [0, 0, 16, 16], "iscrowd": 1, "area": 256},
        {"id": 4, "image_id": 30, "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": 0, "area": 12},
    ]
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}))
    return path


VOC_XML = """<annotation><folder>VOC{year}</folder><filename>{name}.jpg</filename>
<size><width>{width}</width><height>{height}</height><depth>3</depth></size>{objects}</annotation>"""
VOC_OBJECT = """<object><name>{cls}</name><pose>Left</pose><truncated>0</truncated><difficult>{difficult}</difficult>
<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"""

# year -> image set -> {name: (width, height, [(class, difficult, xmin, ymin, xmax, ymax)])}, VOC 1-based pixels.
VOC_CONTENT = {
    "2007": {"trainval": {"000005": (50, 40, [("chair", 0, 1, 1, 10, 20), ("person", 1, 5, 6, 30, 40)])},
             "test": {"000001": (60, 30, [("dog", 0, 11, 2, 60, 30)]),
                      "000002": (20, 20, [])}},
    "2012": {"trainval": {"2008_000008": (40, 50, [("tvmonitor", 0, 3, 4, 13, 14)]),
                          "2007_000005": (30, 30, [("aeroplane", 0, 2, 2, 29, 29)])}},
}


def write_voc_devkit(root: Path, content: dict = VOC_CONTENT) -> Path:
    """A ``VOCdevkit`` folder with the given years and image sets; returns it."""
    for year, image_sets in content.items():
        folder = root / f"VOC{year}"
        (folder / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (folder / "Annotations").mkdir(exist_ok=True)
        for image_set, images in image_sets.items():
            (folder / "ImageSets" / "Main" / f"{image_set}.txt").write_text("\n".join(images) + "\n")
            for name, (width, height, objects) in images.items():
                xml = "".join(VOC_OBJECT.format(cls=c, difficult=d, x1=x1, y1=y1, x2=x2, y2=y2)
                              for c, d, x1, y1, x2, y2 in objects)
                (folder / "Annotations" / f"{name}.xml").write_text(
                    VOC_XML.format(year=year, name=name, width=width, height=height, objects=xml))
                write_image(folder / "JPEGImages" / f"{name}.jpg", width, height)
    return root


VOC_FOLDER_XML = """<annotation><folder>JPEGImages</folder>{filename}
<size><width>{width}</width><height>{height}</height><depth>3</depth></size>{objects}</annotation>"""
VOC_FOLDER_OBJECT = """<object><name>{cls}</name><difficult>{difficult}</difficult>
<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"""

# image set -> {name: (image file, width, height, [(class, difficult, xmin, ymin, xmax, ymax)])}, 1-based pixels.
VOC_FOLDER_CONTENT = {
    "train": {"img_a": ("img_a.jpg", 50, 40, [("RBC", 0, 1, 1, 10, 20), ("Platelets", 0, 5, 6, 30, 40)]),
              "img_b": ("img_b.png", 30, 30, [("wbc", 1, 2, 2, 29, 29)])},
    "val": {"img_c": ("img_c.jpg", 60, 30, [("RBC", 0, 11, 2, 60, 30)])},
}
VOC_FOLDER_CLASSES = ["Platelets", "RBC", "wbc"]  # sorted, case kept


def write_voc_folder(root: Path, content: dict = VOC_FOLDER_CONTENT, with_filename: bool = True) -> Path:
    """A single VOC folder with the given image sets; ``with_filename`` writes the xml ``<filename>`` tag."""
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(exist_ok=True)
    for image_set, images in content.items():
        (root / "ImageSets" / "Main" / f"{image_set}.txt").write_text("\n".join(images) + "\n")
        for name, (file, width, height, objects) in images.items():
            xml = "".join(VOC_FOLDER_OBJECT.format(cls=c, difficult=d, x1=x1, y1=y1, x2=x2, y2=y2)
                          for c, d, x1, y1, x2, y2 in objects)
            filename = f"<filename>{file}</filename>" if with_filename else ""
            (root / "Annotations" / f"{name}.xml").write_text(
                VOC_FOLDER_XML.format(filename=filename, width=width, height=height, objects=xml))
            write_image(root / "JPEGImages" / file, width, height)
    return root


# 1-based VOC pixels. Train: img_a has one RBC and one Platelets, plus an RBC reaching outside the image (clipped);
# img_b has one difficult wbc (crowd, not a target) and one RBC. Val: one RBC, one wbc.
CHECK_CONTENT = {
    "train": {"img_a": ("img_a.jpg", 50, 40, [("RBC", 0, 1, 1, 10, 20), ("Platelets", 0, 5, 6, 30, 40),
                                               ("RBC", 0, 20, 10, 80, 30)]),
              "img_b": ("img_b.png", 30, 30, [("wbc", 1, 2, 2, 29, 29), ("RBC", 0, 3, 3, 9, 9)])},
    "val": {"img_c": ("img_c.jpg", 60, 30, [("RBC", 0, 11, 2, 60, 30), ("wbc", 0, 1, 1, 5, 5)])},
}


def write_coco_split(folder: Path) -> Path:
    """Two 64x64 images with one box each, the categories of ``make_checkpoint`` (cat, dog, bird); the json."""
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(2):
        cv2.imwrite(str(folder / "images" / f"{i}.png"), make_image(64, 64, seed=i))
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1 + i, "bbox": [8, 8, 30, 20],
                            "area": 600, "iscrowd": 0})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASS_NAMES)]
    path = folder / "val.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def make_coco(images, annotations, categories):
    """pycocotools ground truth built in memory (its index printout silenced)."""
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def annotation(ann_id, image_id, category_id, bbox, crowd=0):
    """A COCO ground-truth annotation, ``bbox`` in xywh."""
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "area": bbox[2] * bbox[3], "iscrowd": crowd}


def det(image_id, category_id, bbox, score):
    """A COCO results entry, ``bbox`` in xywh."""
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}
