"""A user's own VOC-format folder (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``) with its own classes,
and the VOCdevkit layout keeping Pascal's classes."""
from pathlib import Path

import numpy as np
import pytest
from test_data_readers import write_image, write_voc_devkit

from detector.data import VOC_CLASSES, DatasetError, DetectionDataModule, VocDetection, collect_voc_classes, voc_to_coco

XML = """<annotation><folder>JPEGImages</folder>{filename}
<size><width>{width}</width><height>{height}</height><depth>3</depth></size>{objects}</annotation>"""
OBJECT = """<object><name>{cls}</name><difficult>{difficult}</difficult>
<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"""

# image set -> {name: (image file, width, height, [(class, difficult, xmin, ymin, xmax, ymax)])}, 1-based pixels.
CONTENT = {
    "train": {"img_a": ("img_a.jpg", 50, 40, [("RBC", 0, 1, 1, 10, 20), ("Platelets", 0, 5, 6, 30, 40)]),
              "img_b": ("img_b.png", 30, 30, [("wbc", 1, 2, 2, 29, 29)])},
    "val": {"img_c": ("img_c.jpg", 60, 30, [("RBC", 0, 11, 2, 60, 30)])},
}
CLASSES = ["Platelets", "RBC", "wbc"]  # sorted, case kept


def write_voc_folder(root: Path, content: dict = CONTENT, with_filename: bool = True) -> Path:
    """A single VOC folder with the given image sets; ``with_filename`` writes the xml ``<filename>`` tag."""
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(exist_ok=True)
    for image_set, images in content.items():
        (root / "ImageSets" / "Main" / f"{image_set}.txt").write_text("\n".join(images) + "\n")
        for name, (file, width, height, objects) in images.items():
            xml = "".join(OBJECT.format(cls=c, difficult=d, x1=x1, y1=y1, x2=x2, y2=y2)
                          for c, d, x1, y1, x2, y2 in objects)
            filename = f"<filename>{file}</filename>" if with_filename else ""
            (root / "Annotations" / f"{name}.xml").write_text(
                XML.format(filename=filename, width=width, height=height, objects=xml))
            write_image(root / "JPEGImages" / file, width, height)
    return root


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
