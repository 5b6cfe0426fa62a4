"""Which dataset a folder or file holds (``detector/data/detect.py``): each layout of its docstring's table found from
the file names alone, the choice between two files of one kind, a folder of none or of two refused with what it
holds, the command line turned into the reader's options (``--data.root`` in either spelling), and the name of a
COCO-format dataset's runs. The folders hold empty files made in the test (detection never opens an image)."""
import re
from pathlib import Path

import pytest

from detector.data.detect import Found, argument_value, detect_dataset, json_data_name, with_detected_dataset
from detector.errors import DatasetError

ROBOFLOW = "_annotations.coco.json"


def touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def refused(folder: Path, message: str, xml_dir: str | None = None) -> None:
    with pytest.raises(DatasetError, match=re.escape(message)):
        detect_dataset(folder, xml_dir)


# Found ---------------------------------------------------------------------------------------------------------------

def test_a_coco_dataset_sets_the_paths_it_does_not_use_to_null_and_the_others_give_their_options():
    coco = Found("coco", {"train_json": "t.json", "train_images": "imgs"}, "COCO-format json t.json", "t.json", None)
    assert coco.arguments() == ["--data.dataset", "coco", "--data.root", "null", "--data.val_images", "null",
                                "--data.val_json", "null", "--data.train_json", "t.json", "--data.train_images", "imgs"]
    assert Found("yolo", {"root": "d.yaml"}, "YOLO", "a", "b").arguments() == ["--data.dataset", "yolo",
                                                                                "--data.root", "d.yaml"]


def test_the_line_names_the_reader_and_where_training_and_validation_come_from():
    assert Found("voc", {}, "VOC folder", "m/train.txt", "m/val.txt").message() == \
        "data: VOC folder (--data.dataset voc): train m/train.txt; validation m/val.txt"
    assert Found("voc", {}, "labelImg folder", "the photos", None).message() == (
        "data: labelImg folder (--data.dataset voc): train the photos; validation held out of the training images by "
        "a hash of each file name (--data.val_fraction)")


# the command line ----------------------------------------------------------------------------------------------------

def test_argument_value_reads_both_spellings_and_a_flag_without_its_value_gives_none():
    assert argument_value(["--a", "1", "--data.root", "x"], "--data.root") == "x"
    assert argument_value(["--data.root=a=b"], "--data.root") == "a=b"
    assert argument_value(["x", "--data.root"], "--data.root") is None  # the last word: no value
    assert argument_value(["--data.rooted", "x", "--data.root_dir=y"], "--data.root") is None


def test_the_root_alone_becomes_the_readers_options_with_one_line_in_either_spelling(tmp_path, capsys):
    root = tmp_path / "mine"
    touch(root / "cells.json")
    options = ["--data.dataset", "coco", "--data.root", "null", "--data.val_images", "null", "--data.val_json", "null",
               "--data.train_json", str(root / "cells.json"), "--data.train_images", str(root)]
    args = ["--trainer.max_epochs", "1", "--data.root", str(root), "--data.input_size", "64"]
    assert with_detected_dataset(args) == ["--trainer.max_epochs", "1", "--data.input_size", "64", *options]
    assert capsys.readouterr().out == (f"data: COCO-format json cells.json (--data.dataset coco): train "
                                       f"{root / 'cells.json'}; validation held out of the training images by a hash "
                                       "of each file name (--data.val_fraction)\n")
    assert with_detected_dataset(["--a", f"--data.root={root}", "--b"]) == ["--a", "--b", *options]


@pytest.mark.parametrize("given", [["--data.dataset", "voc"], ["--data.dataset=voc"], ["--help"], ["-h"]])
def test_an_explicit_dataset_or_a_help_request_leaves_the_command_line_alone(tmp_path, capsys, given):
    args = ["--data.root", str(tmp_path / "nowhere"), *given]  # detecting would refuse the missing folder
    assert with_detected_dataset(args) == args
    assert with_detected_dataset(["--data.input_size", "64"]) == ["--data.input_size", "64"]
    assert capsys.readouterr().out == ""


# a file as the root --------------------------------------------------------------------------------------------------

def test_a_dataset_file_as_root_is_read_by_its_suffix(tmp_path):
    yaml = write(tmp_path / "y" / "mine.yaml", "train: images/train\nval: images/val\nnames: [cat, dog]\n")
    found = detect_dataset(yaml)
    assert (found.dataset, found.options, found.what) == ("yolo", {"root": str(yaml)},
                                                          "YOLO dataset YAML mine.yaml (2 classes)")
    images = tmp_path / "y" / "images"
    assert (found.train, found.val) == (str(images / "train"), str(images / "val"))
    data = write(tmp_path / "d" / "obj.data", "classes = 1\ntrain = train.txt\nnames = obj.names\n")
    write(tmp_path / "d" / "obj.names", "cat\n")
    found = detect_dataset(data)
    assert (found.what, found.train, found.val) == ("darknet obj.data (1 classes)", str(tmp_path / "d" / "train.txt"),
                                                    None)
    gt = write(tmp_path / "c" / "gt.json", "{}")
    found = detect_dataset(gt)
    assert (found.dataset, found.options, found.what) == ("coco", {"train_json": str(gt),
                                                                   "train_images": str(tmp_path / "c")},
                                                          "COCO-format json gt.json")
    refused(write(tmp_path / "c" / "list.txt", ""), "not a dataset file")


def test_a_yaml_with_a_path_a_list_of_folders_and_the_validation_key(tmp_path):
    write(tmp_path / "data.yaml", "path: ds\ntrain: [a, b]\nvalidation: v\nnames: {0: cat}\n")
    found = detect_dataset(tmp_path)
    assert found.what == "YOLO dataset YAML data.yaml (1 classes)"
    assert (found.train, found.val) == (f"{tmp_path / 'ds' / 'a'}, {tmp_path / 'ds' / 'b'}", str(tmp_path / "ds" / "v"))


# YOLO folders --------------------------------------------------------------------------------------------------------

def test_of_several_yamls_data_yaml_is_chosen_one_alone_is_chosen_and_two_others_are_refused(tmp_path):
    names = "names: [cat]\n"
    write(tmp_path / "a" / "another.yaml", names), write(tmp_path / "a" / "data.yaml", names)
    assert detect_dataset(tmp_path / "a").what == "YOLO dataset YAML data.yaml (1 classes)"
    write(tmp_path / "b" / "mine.yml", names), write(tmp_path / "b" / "README.txt", "exported\n")
    found = detect_dataset(tmp_path / "b")
    assert (found.what, found.train, found.val) == ("YOLO dataset YAML mine.yml (1 classes)", "?", None)
    write(tmp_path / "c" / "one.yaml", names), write(tmp_path / "c" / "two.yaml", names)
    refused(tmp_path / "c", "2 YAML files (one.yaml, two.yaml); give the dataset YAML itself as --data.root")


def test_darknet_and_label_studio_yolo_folders(tmp_path):
    darknet = tmp_path / "darknet"
    write(darknet / "obj.data", "classes = 1\ntrain = train.txt\nnames = obj.names\n")
    write(darknet / "obj.names", "cat\n")
    found = detect_dataset(darknet)
    assert (found.dataset, found.options, found.what) == ("yolo", {"root": str(darknet / "obj.data")},
                                                          "darknet obj.data (CVAT YOLO 1.1) (1 classes)")
    studio = tmp_path / "studio"
    write(studio / "classes.txt", "cat\ndog\n"), write(studio / "notes.json", "{}")
    (studio / "images").mkdir(), (studio / "labels").mkdir()
    found = detect_dataset(studio)
    assert (found.dataset, found.options, found.train, found.val) == ("yolo", {"root": str(studio)},
                                                                      str(studio / "images"), None)
    assert found.what == "YOLO folder with classes.txt, images/, labels/ (Label Studio YOLO) (2 classes)"
    (studio / "labels").rmdir()  # classes.txt and images/ without labels/: not Label Studio's layout
    refused(studio, "no dataset recognised (0 images and classes.txt, images/, notes.json)")


# COCO folders --------------------------------------------------------------------------------------------------------

def test_coco_itself_is_read_from_its_root_only_with_train2017_beside_the_annotations(tmp_path):
    coco = tmp_path / "coco"
    touch(coco / "annotations" / "instances_train2017.json", coco / "annotations" / "instances_val2017.json")
    (coco / "train2017").mkdir()
    found = detect_dataset(coco)
    assert (found.dataset, found.options) == ("coco", {"root": str(coco)})
    assert found.what == "COCO (annotations/instances_*2017.json)"
    assert (found.train, found.val) == (str(coco / "annotations" / "instances_train2017.json"),
                                        str(coco / "annotations" / "instances_val2017.json"))
    (coco / "train2017").rmdir()  # the images elsewhere: each subset's json and folder given
    (coco / "images" / "train2017").mkdir(parents=True), (coco / "val2017").mkdir()
    assert detect_dataset(coco).options == {
        "train_json": str(coco / "annotations" / "instances_train2017.json"),
        "train_images": str(coco / "images" / "train2017"),
        "val_json": str(coco / "annotations" / "instances_val2017.json"), "val_images": str(coco / "val2017")}


def test_annotations_jsons_of_cvat_or_of_one_subset_of_any_name(tmp_path):
    cvat = tmp_path / "cvat"
    touch(cvat / "annotations" / "instances_default.json")
    (cvat / "images").mkdir()
    found = detect_dataset(cvat)
    assert found.options == {"train_json": str(cvat / "annotations" / "instances_default.json"),
                             "train_images": str(cvat / "images")}
    assert (found.what, found.val) == ("COCO jsons in annotations/ (COCO, CVAT COCO 1.0)", None)
    one = tmp_path / "one"
    touch(one / "annotations" / "instances_mine.json")
    assert detect_dataset(one).options == {"train_json": str(one / "annotations" / "instances_mine.json"),
                                           "train_images": str(one)}  # no image folder: the folder itself
    two = tmp_path / "two"
    touch(two / "annotations" / "instances_a.json", two / "annotations" / "instances_b.json")
    refused(two, "no training json among ['a', 'b']")


def test_roboflow_coco_has_a_json_per_split_folder(tmp_path):
    export = tmp_path / "export"
    touch(*(export / split / ROBOFLOW for split in ("train", "valid", "test")))
    found = detect_dataset(export)
    assert found.options == {"train_json": str(export / "train" / ROBOFLOW), "train_images": str(export / "train"),
                             "val_json": str(export / "valid" / ROBOFLOW), "val_images": str(export / "valid")}
    assert (found.what, found.val) == (f"Roboflow COCO ({ROBOFLOW} per split)", str(export / "valid" / ROBOFLOW))
    found = detect_dataset(export / "train")  # a split folder given itself: one dataset, not also "a COCO json"
    assert (found.what, found.options) == (f"Roboflow COCO ({ROBOFLOW} per split)", {
        "train_json": str(export / "train" / ROBOFLOW), "train_images": str(export / "train")})
    one = tmp_path / "one"
    touch(one / "photos" / ROBOFLOW)
    assert detect_dataset(one).options == {"train_json": str(one / "photos" / ROBOFLOW),
                                           "train_images": str(one / "photos")}
    touch(one / "test" / ROBOFLOW)
    refused(one, f"{ROBOFLOW} in ['photos', 'test'] but none in train/")


def test_label_studio_result_json_or_the_one_json_of_a_folder(tmp_path):
    studio = tmp_path / "studio"
    touch(studio / "result.json", studio / "other.json")
    (studio / "images").mkdir()
    found = detect_dataset(studio)
    assert (found.what, found.options) == ("Label Studio COCO result.json", {"train_json": str(studio / "result.json"),
                                                                             "train_images": str(studio)})
    mine = tmp_path / "mine"
    touch(mine / "cells.json", mine / "notes.json")  # Label Studio's notes.json is no dataset
    assert detect_dataset(mine).what == "COCO-format json cells.json"
    two = tmp_path / "two"
    touch(two / "a.json", two / "b.json")
    refused(two, "no dataset recognised (0 images and a.json, b.json)")


# VOC and labelImg folders --------------------------------------------------------------------------------------------

def test_a_voc_folder_gives_its_image_sets_and_a_vocdevkit_its_years(tmp_path):
    voc = tmp_path / "voc"
    main = voc / "ImageSets" / "Main"
    (voc / "Annotations").mkdir(parents=True), (voc / "JPEGImages").mkdir(), main.mkdir(parents=True)
    touch(main / "train.txt", main / "val.txt")
    found = detect_dataset(voc)
    assert (found.dataset, found.options, found.train, found.val) == ("voc", {"root": str(voc)},
                                                                      str(main / "train.txt"), str(main / "val.txt"))
    (main / "train.txt").unlink(), (main / "val.txt").unlink()
    touch(main / "default.txt")  # CVAT's one subset
    found = detect_dataset(voc)
    assert (found.train, found.val) == (str(main / "default.txt"), None)
    assert found.what == "VOC folder (Annotations/, JPEGImages/, ImageSets/Main/; CVAT Pascal VOC 1.1)"
    devkit = tmp_path / "VOCdevkit"
    (devkit / "VOC2007" / "ImageSets" / "Main").mkdir(parents=True)
    assert (detect_dataset(devkit).what, detect_dataset(devkit).options) == ("VOCdevkit", {"root": str(devkit)})
    partial = tmp_path / "partial"  # two of the three folders
    (partial / "Annotations").mkdir(parents=True), (partial / "JPEGImages").mkdir()
    refused(partial, "no dataset recognised (0 images and Annotations/, JPEGImages/)")


def test_a_labelimg_folder_counts_its_photos_and_their_xmls_beside_them_or_apart(tmp_path):
    beside = tmp_path / "beside"
    touch(*(beside / name for name in ("a.jpg", "a.xml", "b.png", "c.jpg", "c.xml", "notes.txt")))
    found = detect_dataset(beside)
    assert (found.dataset, found.options, found.val) == ("voc", {"root": str(beside)}, None)
    assert (found.what, found.train) == ("labelImg folder (3 photos, 2 with an XML beside them)",
                                         f"the labelled photos of {beside}")
    photos, xml = tmp_path / "photos", tmp_path / "xml"
    touch(photos / "a.jpg", photos / "b.jpg", xml / "b.xml")
    found = detect_dataset(photos, str(xml))
    assert found.options == {"root": str(photos), "xml_dir": str(xml)}
    assert found.what == f"labelImg folder (2 photos, 1 with an XML in {xml})"


# refusals ------------------------------------------------------------------------------------------------------------

def test_a_missing_root_and_a_folder_of_two_datasets_are_refused(tmp_path):
    refused(tmp_path / "nowhere", f"--data.root {tmp_path / 'nowhere'}: does not exist")
    write(tmp_path / "data.yaml", "names: [cat]\n"), touch(tmp_path / "result.json")
    refused(tmp_path, "more than one dataset here (YOLO dataset YAML data.yaml (1 classes); Label Studio COCO "
                      "result.json); choose one with --data.dataset")


EIGHT = [f"f{i}.md" for i in range(8)]


@pytest.mark.parametrize("names, shown", [
    ([], "it is empty"),
    (["a.jpg", "b.PNG", "c.jpeg"], "3 images"),
    (["a.jpg", "notes.md", "sub/"], "1 images and notes.md, sub/"),
    (EIGHT, "0 images and " + ", ".join(EIGHT)),  # eight others: all named
    ([*EIGHT, "f8.md"], "0 images and " + ", ".join(EIGHT) + " ..."),  # more: the first eight
])
def test_a_folder_of_no_dataset_is_refused_with_what_it_holds(tmp_path, names, shown):
    for name in names:
        (tmp_path / name).mkdir() if name.endswith("/") else touch(tmp_path / name)
    refused(tmp_path, f"no dataset recognised ({shown}); expected a dataset YAML")


# run names -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("json_path, name", [
    ("x/cells_train.json", "cells_train"),
    ("exp/annotations/instances_default.json", "exp"), ("exp/other/instances_train.json", "other"),
    ("exp/train/_annotations.coco.json", "exp"), ("exp/valid/_annotations.coco.json", "exp"),
    ("exp/_annotations.coco.json", "exp"),
    ("exp/result.json", "exp"), ("exp/train/result.json", "train"),  # only Roboflow's json sits in a split folder
])
def test_a_tool_named_json_is_named_after_its_export_folder_and_any_other_after_itself(tmp_path, json_path, name):
    assert json_data_name(tmp_path / json_path) == name
