"""The COCO reader on a tiny dataset written in the official layout, checked box by box (the writer is in
``tests/helpers/datasets.py``)."""
import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools.cocoeval import COCOeval

from helpers.datasets import COCO_CATEGORIES, write_coco_dataset, write_voc_devkit

from detector.data import CocoDetection, VocDetection, coco_from_dict, voc_to_coco, write_voc_coco_json


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
