"""The VOC reader: a VOCdevkit checked box by box (1-based pixels, difficult as crowd, empty images), a user's own
VOC-format folder (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``) with its own classes, and the VOCdevkit
layout keeping Pascal's classes."""
from pathlib import Path
import numpy as np
import pytest
import json
import cv2
from pycocotools.cocoeval import COCOeval

from helpers.datasets import VOC_FOLDER_CLASSES as CLASSES
from helpers.datasets import VOC_FOLDER_CONTENT as CONTENT
from helpers.datasets import write_voc_devkit, write_voc_folder
from helpers.images import write_image
from helpers.datasets import COCO_CATEGORIES, write_coco_dataset, write_voc_devkit

from detector.data import VOC_CLASSES, DatasetError, DetectionDataModule, VocDetection, collect_voc_classes, voc_to_coco
from detector.data import CocoDetection, VocDetection, coco_from_dict, voc_to_coco, write_voc_coco_json


def test_single_folder_reads_boxes_with_custom_classes(tmp_path):
    dataset = VocDetection(write_voc_folder(tmp_path), ["train"])
    assert dataset.class_names == CLASSES and dataset.category_ids == [1, 2, 3]
    first = dataset[0]
    assert first.image.shape == (40, 50, 3) and first.image_id == 0
    np.testing.assert_array_equal(first.boxes, [[0, 0, 10, 20], [4, 5, 30, 40]])  # 1-based inclusive -> continuous
    np.testing.assert_array_equal(first.labels, [1, 0])  # RBC, Platelets
    second = dataset[1]
    assert second.image.shape == (30, 30, 3) and second.boxes.shape == (0, 4)
    np.testing.assert_array_equal(second.crowd_boxes, [[1, 1, 29, 29]])  # difficult
    np.testing.assert_array_equal(second.crowd_labels, [2])  # wbc


@pytest.mark.parametrize("with_filename", [True, False])
def test_image_that_is_not_jpg_is_found(tmp_path, with_filename):
    dataset = VocDetection(write_voc_folder(tmp_path, with_filename=with_filename), "train")
    assert dataset.annotations[1].file == tmp_path / "JPEGImages" / "img_b.png"


def test_classes_are_collected_sorted_from_the_training_split(tmp_path):
    root = write_voc_folder(tmp_path)
    assert collect_voc_classes(root, ["train"]) == CLASSES
    assert VocDetection(root, ["val"]).class_names == CLASSES  # the training split's, not only 'RBC'
    given = VocDetection(root, ["train"], classes=["wbc", "RBC", "Platelets"])
    np.testing.assert_array_equal(given.annotations[0].labels, [1, 2])
    with pytest.raises(ValueError, match="distinct"):
        VocDetection(root, ["train"], classes=["RBC", "RBC"])


def test_class_only_in_validation_is_an_error_naming_the_file(tmp_path):
    content = {**CONTENT, "val": {"img_c": ("img_c.jpg", 60, 30, [("Eosinophil", 0, 11, 2, 60, 30)])}}
    root = write_voc_folder(tmp_path, content)
    with pytest.raises(DatasetError, match=r"img_c.xml: unknown class 'Eosinophil'; known classes are "
                                           r"\['Platelets', 'RBC', 'wbc'\]"):
        VocDetection(root, ["val"])


def test_converter_uses_the_dataset_classes(tmp_path):
    data = voc_to_coco(VocDetection(write_voc_folder(tmp_path), ["train"]))
    assert data["categories"] == [{"id": 1, "name": "Platelets"}, {"id": 2, "name": "RBC"}, {"id": 3, "name": "wbc"}]
    by_box = {tuple(a["bbox"]): (a["category_id"], a["iscrowd"]) for a in data["annotations"]}
    assert by_box == {(0, 0, 10, 20): (2, 0), (4, 5, 26, 35): (1, 0), (1, 1, 28, 28): (3, 1)}


def test_layout_is_detected_and_a_wrong_split_kind_is_clear(tmp_path):
    with pytest.raises(DatasetError, match="nothing: not a VOC dataset"):
        VocDetection(tmp_path / "nothing")
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(DatasetError, match=f"{tmp_path}: not a VOC dataset .*Annotations/, JPEGImages/"):
        VocDetection(tmp_path)
    folder = write_voc_folder(tmp_path / "folder")
    with pytest.raises(DatasetError, match="single VOC folder: a split is an image set name"):
        VocDetection(folder, [("2007", "train")])
    devkit = write_voc_devkit(tmp_path / "devkit")
    with pytest.raises(DatasetError, match=r"VOCdevkit: a split is a \(year, image_set\) pair"):
        VocDetection(devkit, ["trainval"])


def test_devkit_keeps_pascal_classes_and_accepts_an_int_year(tmp_path):
    root = write_voc_devkit(tmp_path)
    dataset = VocDetection(root, [(2007, "trainval")])
    assert dataset.class_names == list(VOC_CLASSES) and dataset.category_ids == list(range(1, 21))
    np.testing.assert_array_equal(dataset.annotations[0].labels, [8])  # chair
    xml = root / "VOC2007" / "Annotations" / "000005.xml"
    xml.write_text(xml.read_text().replace("chair", "Chair"))
    with pytest.raises(DatasetError, match="000005.xml: unknown class 'Chair'"):  # case is kept
        VocDetection(root, [("2007", "trainval")])


def test_datamodule_on_a_single_folder(tmp_path):
    dm = DetectionDataModule("voc", root=str(write_voc_folder(tmp_path)), batch_size=2, num_workers=0,
                             input_size=64, eval_size=64)
    assert dm.class_names == CLASSES and dm.num_classes == 3 and dm.category_ids == [1, 2, 3]  # before setup
    dm.setup("fit")
    assert len(dm.train_dataset) == 2 and len(dm.val_dataset) == 1  # default image sets: train, val
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (2, 3, 64, 64)
    assert next(iter(dm.val_dataloader()))["image_ids"].tolist() == [0]
    assert dm.val_coco.getImgIds() == [0] and dm.val_coco.getCatIds() == [1, 2, 3]


def test_datamodule_single_folder_falls_back_to_trainval_and_test(tmp_path):
    root = write_voc_folder(tmp_path, {"trainval": CONTENT["train"], "test": CONTENT["val"]})
    dm = DetectionDataModule("voc", root=str(root), num_workers=0)
    assert dm.num_classes == 3
    dm.setup("fit")
    assert len(dm.train_dataset) == 2 and len(dm.val_dataset) == 1


def test_datamodule_devkit_int_years_and_explicit_classes(tmp_path):
    root = str(write_voc_devkit(tmp_path))
    dm = DetectionDataModule("voc", root=root, voc_train_splits=[[2007, "trainval"]], voc_val_splits=[[2007, "test"]],
                             num_workers=0)
    assert dm.num_classes == 20
    dm.setup("fit")
    assert len(dm.train_dataset) == 1 and len(dm.val_dataset) == 2
    folder = str(write_voc_folder(tmp_path / "folder"))
    dm = DetectionDataModule("voc", root=folder, classes=["wbc", "RBC", "Platelets", "extra"], num_workers=0)
    assert dm.num_classes == 4
    dm.setup("fit")
    assert dm.train_dataset.class_names == dm.val_dataset.class_names == ["wbc", "RBC", "Platelets", "extra"]


# a VOCdevkit, box by box --------------------------------------------------------------------------------------------

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
