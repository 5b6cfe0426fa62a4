"""The COCO and VOC readers on tiny datasets written in the real layouts, checked box by box.

Also holds the writers of those tiny datasets, imported by the other ``test_data_*`` files.
"""
import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools.cocoeval import COCOeval

from detector.data import CocoDetection, VocDetection, coco_from_dict, voc_to_coco, write_voc_coco_json

# Categories with gaps in the ids, listed out of order: labels follow the id order.
COCO_CATEGORIES = [{"id": 7, "name": "kite"}, {"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}]


def write_image(path: Path, width: int, height: int, value: int = 120) -> Path:
    """A uniform BGR image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), value, dtype=np.uint8))
    return path


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


def test_coco_reader_labels_follow_category_id_order(tmp_path):
    dataset = CocoDetection(write_coco_dataset(tmp_path), tmp_path / "val2017")
    assert dataset.class_names == ["person", "kite", "toothbrush"]
    assert dataset.category_ids == [1, 7, 90]
    assert len(dataset) == 3


def test_coco_reader_decodes_boxes_crowd_and_background(tmp_path):
    dataset = CocoDetection(write_coco_dataset(tmp_path), tmp_path / "val2017")
    first, background, last = dataset[0], dataset[1], dataset[2]
    assert first.image.shape == (48, 64, 3) and first.image.dtype == np.uint8
    np.testing.assert_array_equal(first.boxes, [[4, 5, 14, 25], [30, 10, 50.5, 18]])
    assert first.boxes.dtype == np.float32 and first.labels.dtype == np.int64
    np.testing.assert_array_equal(first.labels, [1, 2])
    np.testing.assert_array_equal(first.crowd_boxes, [[0, 0, 16, 16]])
    np.testing.assert_array_equal(first.crowd_labels, [0])
    assert (first.image_id, background.image_id, last.image_id) == (10, 20, 30)
    assert background.boxes.shape == (0, 4) and background.labels.shape == (0,)
    np.testing.assert_array_equal(last.boxes, [[1, 2, 4, 6]])
    np.testing.assert_array_equal(last.labels, [0])


def test_coco_reader_keeps_original_ids_for_evaluation(tmp_path):
    dataset = CocoDetection(write_coco_dataset(tmp_path), tmp_path / "val2017")
    assert sorted(dataset.coco.getImgIds()) == [10, 20, 30]
    assert sorted(dataset.coco.getCatIds()) == [1, 7, 90]


def test_voc_reader_converts_one_based_pixels_and_difficult(tmp_path):
    dataset = VocDetection(write_voc_devkit(tmp_path), [("2007", "trainval"), ("2012", "trainval")])
    assert len(dataset) == 3 and dataset.num_classes == 20
    chair = dataset[0]
    assert chair.image.shape == (40, 50, 3) and chair.image_id == 5
    np.testing.assert_array_equal(chair.boxes, [[0, 0, 10, 20]])
    np.testing.assert_array_equal(chair.labels, [8])  # chair
    np.testing.assert_array_equal(chair.crowd_boxes, [[4, 5, 30, 40]])  # the difficult person
    np.testing.assert_array_equal(chair.crowd_labels, [14])
    tv, plane = dataset[1], dataset[2]
    assert (tv.image_id, plane.image_id) == (2008000008, 2007000005)  # unique across the two years
    np.testing.assert_array_equal(tv.boxes, [[2, 3, 13, 14]])
    np.testing.assert_array_equal(tv.labels, [19])
    np.testing.assert_array_equal(plane.boxes, [[1, 1, 29, 29]])
    np.testing.assert_array_equal(plane.labels, [0])


def test_voc_converter_writes_difficult_as_crowd_and_cocoeval_ignores_it(tmp_path):
    dataset = VocDetection(write_voc_devkit(tmp_path), [("2007", "trainval")])
    path = write_voc_coco_json(dataset, tmp_path / "gt.json")
    data = json.loads(path.read_text())
    assert data["images"] == [{"id": 5, "file_name": "000005.jpg", "width": 50, "height": 40}]
    by_crowd = {a["iscrowd"]: a for a in data["annotations"]}
    assert by_crowd[0]["bbox"] == [0, 0, 10, 20] and by_crowd[0]["category_id"] == 9
    assert by_crowd[1]["bbox"] == [4, 5, 26, 35] and by_crowd[1]["category_id"] == 15
    gt = coco_from_dict(voc_to_coco(dataset))
    detections = [{"image_id": 5, "category_id": 9, "bbox": [0, 0, 10, 20], "score": 0.9},
                  {"image_id": 5, "category_id": 15, "bbox": [4, 5, 26, 35], "score": 0.8}]
    evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
    evaluator.evaluate()
    person = next(e for e in evaluator.evalImgs if e and e["category_id"] == 15 and e["aRng"] == [0, 1e10])
    assert person["gtIgnore"].tolist() == [1] and person["dtIgnore"].all()  # neither true nor false positive
    chair = next(e for e in evaluator.evalImgs if e and e["category_id"] == 9 and e["aRng"] == [0, 1e10])
    assert chair["gtIgnore"].tolist() == [0] and (chair["dtMatches"] > 0).all()


def test_voc_reader_empty_image_is_background(tmp_path):
    dataset = VocDetection(write_voc_devkit(tmp_path), [("2007", "test")])
    background = dataset[1]
    assert background.image_id == 2 and background.boxes.shape == (0, 4)
    np.testing.assert_array_equal(dataset[0].boxes, [[10, 1, 60, 30]])
