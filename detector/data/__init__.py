"""Readers (COCO-format, VOC-format, labelImg, YOLO-format, synthetic), format detection, the held-out split,
transforms, collate and the LightningDataModule.

Frames: a reader returns boxes xyxy in original pixels (:class:`Sample`); a transform maps them to xyxy input
pixels; :func:`collate_detection` pads them into the batch contract.
"""
from detector.data.coco import CocoDetection, coco_from_dict, load_coco_json
from detector.data.cocoformat import dataset_to_coco, write_dataset_json
from detector.data.dataset import DatasetError, DetectionDataset, Sample
from detector.data.datamodule import AugmentOptions, DetectionDataModule, seed_worker
from detector.data.detect import detect_dataset, with_detected_dataset
from detector.data.labelimg import LabelImgDetection
from detector.data.split import hashed_validation, split_dataset
from detector.data.synthetic import SYNTHETIC_CLASSES, synthetic_cache_root, synthetic_dataset
from detector.data.transforms import EvalTransform, TrainTransform, collate_detection
from detector.data.voc import (VOC_CLASSES, VocDetection, collect_voc_classes, voc_layout, voc_to_coco,
                               write_voc_coco_json)
from detector.data.yolo import YoloDetection, yolo_class_names, yolo_to_coco

__all__ = [
    "AugmentOptions", "CocoDetection", "DatasetError", "DetectionDataModule", "DetectionDataset", "EvalTransform",
    "LabelImgDetection", "detect_dataset", "hashed_validation", "split_dataset", "with_detected_dataset",
    "SYNTHETIC_CLASSES", "Sample", "TrainTransform", "VOC_CLASSES", "VocDetection", "YoloDetection", "coco_from_dict",
    "collate_detection", "collect_voc_classes", "dataset_to_coco", "load_coco_json", "seed_worker",
    "synthetic_cache_root", "synthetic_dataset", "voc_layout", "voc_to_coco", "write_dataset_json",
    "write_voc_coco_json", "yolo_class_names", "yolo_to_coco",
]
