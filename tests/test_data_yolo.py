"""The YOLO-format reader (ultralytics dataset YAML) on tiny datasets written here, checked box by box; its bad input
is a clear error naming the file and line; its COCO ground truth scores AP 1 for the true boxes."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from helpers.images import write_image

from detector.data import (DatasetError, DetectionDataModule, YoloDetection, coco_from_dict, yolo_class_names,
                           yolo_to_coco)
from detector.data import yolo
from detector.data.yolo import image_size, label_path

NAMES = ["RBC", "WBC", "Platelets"]
# Split -> {image path under the dataset root: (width, height, label file text or None for no label file)}.
# The images are not square, so a cx/cy or w/h swap changes the pixels.
CONTENT = {
    "train": {"images/train/b.jpg": (100, 50, "0 0.25 0.6 0.2 0.4\n2 0.1 0.2 0.1 0.2\n"),
              "images/train/a.png": (40, 80, None)},
    "val": {"images/val/c.jpg": (64, 32, "1 0.5 0.5 0.5 0.5\n0 0.875 0.5 0.25 0.5\n")},
}


def write_yolo_dataset(folder: Path, names=NAMES, content: dict = CONTENT, yaml_text: str | None = None) -> Path:
    """``folder/data.yaml`` with ``path: ds`` and the images and labels of ``content`` under ``folder/ds``."""
    for images in content.values():
        for name, (width, height, labels) in images.items():
            write_image(folder / "ds" / name, width, height)
            if labels is not None:
                label = (folder / "ds" / name.replace("images/", "labels/")).with_suffix(".txt")
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text(labels)
    path = folder / "data.yaml"
    path.write_text(yaml_text if yaml_text is not None else
                    f"path: ds\ntrain: images/train\nval: images/val\nnames: {names}\n")
    return path


def test_boxes_are_read_back_in_pixels(tmp_path):
    dataset = YoloDetection(write_yolo_dataset(tmp_path), "train")
    assert dataset.class_names == NAMES and dataset.category_ids == [1, 2, 3]
    empty, objects = dataset[0], dataset[1]  # sorted file order: a.png, b.jpg
    assert (empty.image_id, objects.image_id) == (0, 1)
    assert empty.image.shape == (80, 40, 3) and empty.boxes.shape == (0, 4) and empty.labels.shape == (0,)
    assert objects.image.shape == (50, 100, 3)
    # cx 25, cy 30, w 20, h 20; then cx 10, cy 10, w 10, h 10 (pixels of the 100 x 50 image)
    np.testing.assert_allclose(objects.boxes, [[15, 20, 35, 40], [5, 5, 15, 15]], atol=1e-4)
    np.testing.assert_array_equal(objects.labels, [0, 2])
    assert objects.boxes.dtype == np.float32 and objects.labels.dtype == np.int64


def test_names_as_a_dict(tmp_path):
    yaml_text = "path: ds\ntrain: images/train\nval: images/val\nnames:\n  0: RBC\n  1: WBC\n  2: Platelets\n"
    path = write_yolo_dataset(tmp_path, yaml_text=yaml_text)
    assert yolo_class_names(path) == NAMES
    np.testing.assert_array_equal(YoloDetection(path, "train")[1].labels, [0, 2])
    path.write_text(yaml_text.replace("  1: WBC\n", ""))
    with pytest.raises(DatasetError, match=r"data.yaml: the keys of 'names' must be 0..1, got \[0, 2\]"):
        yolo_class_names(path)


def test_yaml_without_path_and_a_txt_list_of_images(tmp_path):
    write_yolo_dataset(tmp_path)
    (tmp_path / "ds" / "train.txt").write_text("./images/train/b.jpg\n\n")
    path = tmp_path / "ds" / "data.yaml"
    path.write_text("train: train.txt\nval: images/val\nnames: [RBC, WBC, Platelets]\n")
    dataset = YoloDetection(path, "train")
    assert len(dataset) == 1 and dataset.annotations[0].file.name == "b.jpg"
    np.testing.assert_allclose(dataset.annotations[0].boxes, [[15, 20, 35, 40], [5, 5, 15, 15]], atol=1e-4)


def test_label_path_replaces_the_last_images_folder():
    assert label_path(Path("/d/images/x/images/train/a.jpeg")) == Path("/d/images/x/labels/train/a.txt")
    assert label_path(Path("/d/pictures/a.png")) == Path("/d/pictures/a.txt")


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.2", "expected 5 fields"),
    ("0 0.5 0.5 0.2 0.2 0.9", "expected 5 fields"),
    ("0 0.5 abc 0.2 0.2", "not a number"),
    ("3 0.5 0.5 0.2 0.2", r"class '3' is not an index in 0..2"),
    ("-1 0.5 0.5 0.2 0.2", r"class '-1' is not an index"),
    ("1.5 0.5 0.5 0.2 0.2", r"class '1.5' is not an index"),
])
def test_bad_label_line_is_an_error_naming_file_and_line(tmp_path, line, message):
    content = {**CONTENT, "train": {**CONTENT["train"], "images/train/b.jpg": (100, 50, f"0 .5 .5 .1 .1\n{line}\n")}}
    path = write_yolo_dataset(tmp_path, content=content)
    with pytest.raises(DatasetError, match=f"b.txt, line 2: {message}"):
        YoloDetection(path, "train")


@pytest.mark.parametrize("yaml_text, split, message", [
    ("path: ds\ntrain: [images/train\nnames: [a]\n", "train", "data.yaml, line 3: malformed YAML"),
    ("- a\n- b\n", "train", "data.yaml: expected a mapping"),
    ("path: ds\ntrain: images/train\nval: images/val\n", "train", "data.yaml: missing or empty key 'names'"),
    ("path: ds\ntrain: images/train\nnames: [a, b, c]\n", "val", "data.yaml: missing the key 'val'"),
    ("path: ds\ntrain: images/nothing\nnames: [a, b, c]\n", "train", "data.yaml: train: .*nothing is neither"),
])
def test_bad_yaml_is_an_error_naming_the_file(tmp_path, yaml_text, split, message):
    path = write_yolo_dataset(tmp_path, yaml_text=yaml_text)
    with pytest.raises(DatasetError, match=message):
        YoloDetection(path, split)


def test_boxes_outside_the_image_are_clipped_and_counted(tmp_path):
    content = {**CONTENT, "val": {"images/val/c.jpg": (64, 32, "1 0.5 0.5 0.5 0.5\n0 0.9375 0.5 0.25 0.5\n"
                                                                 "2 0.5 0.5 0 0.5\n")}}
    with pytest.warns(UserWarning, match=r"1 boxes clipped to their image, 1 boxes dropped .* in 1 files: "
                                         r"\S*labels/val/c\.txt"):  # the label file is named
        dataset = YoloDetection(write_yolo_dataset(tmp_path, content=content), "val")
    # cx 60, w 16 -> x 52..68, clipped to the 64 pixel width; the zero-width box dropped
    np.testing.assert_array_equal(dataset.annotations[0].boxes, [[16, 8, 48, 24], [52, 8, 64, 24]])
    np.testing.assert_array_equal(dataset.annotations[0].labels, [1, 0])


def test_rounding_past_the_border_is_not_counted_as_clipping(tmp_path, recwarn):
    content = {**CONTENT, "val": {"images/val/c.jpg": (64, 32, "1 0.9 0.5 0.20001 0.5\n")}}
    dataset = YoloDetection(write_yolo_dataset(tmp_path, content=content), "val")
    assert not [w for w in recwarn if "clipped" in str(w.message)]
    np.testing.assert_allclose(dataset.annotations[0].boxes, [[51.2, 8, 64, 24]], atol=1e-3)  # x2 64.0003 snapped


def test_unreadable_image_is_left_out_with_a_warning(tmp_path):
    path = write_yolo_dataset(tmp_path)
    (tmp_path / "ds" / "images" / "train" / "a.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="1 images left out.*a.png"):
        dataset = YoloDetection(path, "train")
    assert [a.image_id for a in dataset.annotations] == [1]  # b.jpg keeps its id


def test_image_size_is_exact_from_headers_and_decodes_other_formats(tmp_path, monkeypatch):
    image = (np.arange(37 * 53 * 3) % 251).astype(np.uint8).reshape(37, 53, 3)
    files = {"a.jpg": (image, []), "progressive.jpg": (image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
             "gray.jpg": (image[..., 0], []), "a.png": (image, []), "deep.png": (image.astype(np.uint16) * 257, []),
             "a.bmp": (image, [])}
    for name, (pixels, flags) in files.items():
        cv2.imwrite(str(tmp_path / name), pixels, flags)
        assert image_size(tmp_path / name) == (53, 37), name
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    assert image_size(tmp_path / "bad.jpg") is None and image_size(tmp_path / "missing.png") is None
    monkeypatch.setattr(yolo, "read_image", None)  # JPEG and PNG sizes come from the header alone, no decode
    for name in ("a.jpg", "progressive.jpg", "gray.jpg", "a.png", "deep.png"):
        assert image_size(tmp_path / name) == (53, 37), name


def test_coco_ground_truth_scores_ap_1_for_the_true_boxes(tmp_path):
    dataset = YoloDetection(write_yolo_dataset(tmp_path), "val")
    data = yolo_to_coco(dataset)
    assert data["categories"] == [{"id": 1, "name": "RBC"}, {"id": 2, "name": "WBC"}, {"id": 3, "name": "Platelets"}]
    assert data["images"] == [{"id": 0, "file_name": "c.jpg", "width": 64, "height": 32}]
    gt = coco_from_dict(data)
    detections = [{"image_id": 0, "category_id": 2, "bbox": [16, 8, 32, 16], "score": 0.9},  # by hand, COCO xywh
                  {"image_id": 0, "category_id": 1, "bbox": [48, 8, 16, 16], "score": 0.8}]
    evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_datamodule_builds_yolo_loaders(tmp_path):
    dm = DetectionDataModule("yolo", root=str(write_yolo_dataset(tmp_path)), batch_size=2, num_workers=0,
                             input_size=64, eval_size=64)
    assert dm.num_classes == 3 and dm.class_names == NAMES and dm.category_ids == [1, 2, 3]  # before setup
    dm.setup("fit")
    assert len(dm.train_dataset) == 2 and len(dm.val_dataset) == 1
    assert next(iter(dm.train_dataloader()))["images"].shape == (2, 3, 64, 64)
    batch = next(iter(dm.val_dataloader()))
    assert batch["image_ids"].tolist() == [0] and batch["mask"].sum() == 2
    assert dm.val_coco.getImgIds() == [0] and len(dm.val_coco.getAnnIds()) == 2
