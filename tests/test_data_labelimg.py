"""labelImg's folders (``detector/data/labelimg.py``): the photos are the image files directly in the folder, each
with the XML of its stem beside it or in ``xml_dir``; the classes are the XMLs' sorted names unless given; a photo
without XML is left out and counted, or kept as a negative with its size from the file header; each refusal is a
:class:`DatasetError`. Photos of 48 x 32 pixels written by ``tests/helpers/exports.py``."""
import re
from pathlib import Path

import numpy as np
import pytest
from helpers.exports import CLASS, H, W, Photo, voc_xml, write_photo

from detector.data.labelimg import LabelImgDetection, folder_photos, labelimg_classes, photo_xmls
from detector.errors import DatasetError


def labelled(folder: Path, name: str, boxes: list[tuple[int, int, int, int]], name_of_class: str = CLASS,
             xml_dir: Path | None = None) -> None:
    """A photo with its boxes painted and labelImg's XML of them (in ``xml_dir``, else beside it)."""
    photo = Photo(name, tuple(boxes))
    write_photo(folder / name, photo)
    xml = (xml_dir or folder) / Path(name).with_suffix(".xml").name
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.write_text(voc_xml(photo).replace(f"<name>{CLASS}</name>", f"<name>{name_of_class}</name>"))


def unlabelled(folder: Path, name: str) -> None:
    write_photo(folder / name, Photo(name, ()))


def test_the_photos_are_the_image_files_directly_in_the_folder_sorted(tmp_path):
    for name in ("b.jpg", "a.PNG", "c.jpeg", "notes.txt", "a.xml"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.jpg").mkdir()  # a folder named like a photo
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.jpg").write_bytes(b"")
    assert [p.name for p in folder_photos(tmp_path)] == ["a.PNG", "b.jpg", "c.jpeg"]
    with pytest.raises(DatasetError, match="b.jpg: not a folder of photos"):
        folder_photos(tmp_path / "b.jpg")


def test_each_photo_gets_the_xml_of_its_stem_beside_it_or_in_the_xml_folder(tmp_path):
    beside, photos, xml = tmp_path / "beside", tmp_path / "photos", tmp_path / "xml"
    labelled(beside, "a.jpg", [(2, 2, 10, 10)])
    unlabelled(beside, "b.jpg")
    assert photo_xmls(beside) == [(beside / "a.jpg", beside / "a.xml"), (beside / "b.jpg", None)]
    unlabelled(photos, "a.jpg")
    labelled(photos, "b.jpg", [(2, 2, 10, 10)], xml_dir=xml)
    assert photo_xmls(photos, xml) == [(photos / "a.jpg", None), (photos / "b.jpg", xml / "b.xml")]
    with pytest.raises(DatasetError, match="--data.xml_dir .*nowhere: not a folder"):
        photo_xmls(photos, tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="2 photos and no labelImg XML beside them .*; give the XML folder"):
        photo_xmls(photos)


def test_the_classes_are_the_sorted_names_of_all_the_xmls_and_none_is_refused(tmp_path):
    labelled(tmp_path, "a.jpg", [(2, 2, 10, 10)], "zebra")
    labelled(tmp_path, "b.jpg", [(2, 2, 10, 10), (12, 4, 20, 14)], "ant")
    unlabelled(tmp_path, "c.jpg")
    assert labelimg_classes(photo_xmls(tmp_path)) == ["ant", "zebra"]
    empty = tmp_path / "empty"
    unlabelled(empty, "a.jpg")  # the first photo has no XML, the second an XML without object
    unlabelled(empty, "b.jpg")
    (empty / "b.xml").write_text(voc_xml(Photo("b.jpg", ())))
    with pytest.raises(DatasetError, match=re.escape(f"{empty}: no object in any XML, so no class list")):
        labelimg_classes(photo_xmls(empty))


def test_photos_without_xml_are_left_out_and_counted_or_kept_as_negatives_of_their_size(tmp_path):
    labelled(tmp_path, "k1.jpg", [(2, 1, 16, 13)])
    unlabelled(tmp_path, "u1.jpg")
    labelled(tmp_path, "k2.jpg", [(4, 3, 22, 18)])
    skipped = LabelImgDetection(tmp_path)
    assert [a.file.name for a in skipped.annotations] == ["k1.jpg", "k2.jpg"] and skipped.unlabelled == 1
    assert skipped.unlabelled_message(kept=False) == (
        f"unlabelled: 1 photos of {tmp_path} have no XML; left out (--data.unlabelled negatives trains them as photos "
        "with no object)")
    kept = LabelImgDetection(tmp_path, unlabelled="negatives")
    assert [a.file.name for a in kept.annotations] == ["k1.jpg", "k2.jpg", "u1.jpg"] and kept.unlabelled == 1
    assert [a.image_id for a in kept.annotations] == [0, 1, 2]
    np.testing.assert_array_equal(kept.annotations[0].boxes, [[2, 1, 16, 13]])  # VOC's 1-based xmin converted
    negative = kept.annotations[2]
    assert (negative.boxes.shape, negative.crowd_boxes.shape) == ((0, 4), (0, 4))
    assert (negative.labels.shape, negative.crowd_labels.shape) == ((0,), (0,))
    assert (negative.width, negative.height) == (W, H)  # 48 x 32, from the JPEG header
    assert kept.unlabelled_message(kept=True) == f"unlabelled: 1 photos of {tmp_path} have no XML; kept as negatives " \
                                                 "(no object)"
    (tmp_path / "u1.jpg").unlink()
    assert LabelImgDetection(tmp_path).unlabelled_message(kept=False) is None  # every photo has its XML


def test_a_negative_whose_size_cannot_be_read_is_left_out(tmp_path):
    labelled(tmp_path, "k1.jpg", [(2, 1, 16, 13)])
    (tmp_path / "u1.jpg").write_bytes(b"not an image")
    data = LabelImgDetection(tmp_path, unlabelled="negatives")
    assert [a.file.name for a in data.annotations] == ["k1.jpg"] and data.unlabelled == 1


def test_the_classes_given_or_found_set_the_labels_and_the_category_ids_count_from_one(tmp_path):
    labelled(tmp_path, "a.jpg", [(2, 2, 10, 10)], "dog")
    labelled(tmp_path, "b.jpg", [(2, 2, 10, 10)], "cat")
    found = LabelImgDetection(tmp_path)
    assert (found.class_names, found.category_ids) == (["cat", "dog"], [1, 2])
    assert [a.labels.tolist() for a in found.annotations] == [[1], [0]]
    given = LabelImgDetection(tmp_path, classes=["dog", "cat", "bird"])
    assert (given.class_names, given.category_ids) == (["dog", "cat", "bird"], [1, 2, 3])
    assert [a.labels.tolist() for a in given.annotations] == [[0], [1]]


def test_the_xmls_in_their_own_folder_and_an_unknown_unlabelled_option(tmp_path):
    photos, xml = tmp_path / "photos", tmp_path / "xml"
    labelled(photos, "a.jpg", [(2, 2, 10, 10)], xml_dir=xml)
    unlabelled(photos, "b.jpg")
    data = LabelImgDetection(photos, xml_dir=xml)
    assert [a.file for a in data.annotations] == [photos / "a.jpg"] and data.unlabelled == 1
    with pytest.raises(DatasetError, match="--data.unlabelled 'keep': must be skip or negatives"):
        LabelImgDetection(photos, xml_dir=xml, unlabelled="keep")
