"""Bad input: unreadable images are replaced and counted, odd pixel formats converted, bad files are clear errors,
bad boxes are repaired and counted."""
import json

import cv2
import numpy as np
import pytest

from helpers.datasets import write_coco_dataset, write_voc_devkit
from helpers.images import huge_png

from detector.data import CocoDetection, DatasetError, VocDetection
from detector.images import ImageReadError, read_image


def _encoded(suffix: str) -> bytes:
    image = (np.arange(20 * 30 * 3) % 251).astype(np.uint8).reshape(20, 30, 3)
    return cv2.imencode(suffix, image)[1].tobytes()


BAD_FILES = {
    "empty.jpg": b"",
    "corrupt.jpg": _encoded(".jpg")[:300] + b"\x00" * 400 + _encoded(".jpg")[700:],
    "truncated.png": _encoded(".png")[: len(_encoded(".png")) // 2],
    "text.jpg": b"this is not an image",
}


@pytest.mark.parametrize("name", [*BAD_FILES, "missing.jpg"])
def test_read_image_names_the_bad_file(tmp_path, name):
    path = tmp_path / name
    if name in BAD_FILES:
        path.write_bytes(BAD_FILES[name])
    with pytest.raises(ImageReadError, match=name):
        read_image(path)


def test_bad_image_is_replaced_by_the_next_and_counted(tmp_path):
    json_path = write_coco_dataset(tmp_path)
    (tmp_path / "val2017" / "a.jpg").write_bytes(BAD_FILES["corrupt.jpg"])
    dataset = CocoDetection(json_path, tmp_path / "val2017")
    with pytest.warns(UserWarning, match="a.jpg"):
        sample = dataset[0]
    assert sample.image_id == 20  # the next image
    assert dataset.bad_image_count == 1
    (tmp_path / "val2017" / "c.jpg").unlink()
    with pytest.warns(UserWarning) as record:
        assert dataset[2].image_id == 20  # c.jpg missing, wraps around to a.jpg (corrupt), then b.png
    assert ["c.jpg" in str(r.message) for r in record] == [True, False]
    assert dataset.bad_image_count == 3 and dataset.bad_image_files == 2  # reads, distinct files
    dataset.reset_bad_image_count()
    assert dataset.bad_image_count == 0 and dataset.bad_image_files == 0


def test_bad_files_are_counted_once_across_workers_and_epochs(tmp_path):
    """One broken file read in three epochs by two worker processes: 1 file, 3 replaced reads."""
    import warnings

    import torch

    json_path = write_coco_dataset(tmp_path)
    (tmp_path / "val2017" / "a.jpg").write_bytes(BAD_FILES["corrupt.jpg"])
    dataset = CocoDetection(json_path, tmp_path / "val2017")
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2, collate_fn=lambda sample: 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(3):
            list(loader)
    assert dataset.bad_image_files == 1 and dataset.bad_image_count == 3


def test_no_decodable_image_is_an_error(tmp_path):
    json_path = write_coco_dataset(tmp_path)
    for path in (tmp_path / "val2017").iterdir():
        path.write_bytes(b"")
    dataset = CocoDetection(json_path, tmp_path / "val2017")
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="no image"):
        dataset[0]


def test_grayscale_rgba_and_16_bit_images_become_rgb_uint8(tmp_path):
    gray = np.full((10, 12), 200, dtype=np.uint8)
    bgra = np.zeros((10, 12, 4), dtype=np.uint8)
    bgra[..., 0], bgra[..., 3] = 255, 100  # blue, half transparent
    deep = np.zeros((10, 12, 3), dtype=np.uint16)
    deep[..., 2] = 65535  # red at full 16-bit scale
    for name, image in (("gray.png", gray), ("rgba.png", bgra), ("deep.png", deep)):
        cv2.imwrite(str(tmp_path / name), image)
    assert cv2.imread(str(tmp_path / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    expected = {"gray.png": (200, 200, 200), "rgba.png": (0, 0, 255), "deep.png": (255, 0, 0)}
    for name, rgb in expected.items():
        image = read_image(tmp_path / name)
        assert image.shape == (10, 12, 3) and image.dtype == np.uint8, name
        assert tuple(image[0, 0]) == rgb, name


def _coco_json(tmp_path, text: str):
    path = tmp_path / "bad.json"
    path.write_text(text)
    return path


VALID = {"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
         "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5]}],
         "categories": [{"id": 3, "name": "thing"}]}


@pytest.mark.parametrize("text, message", [
    ("{not json", "malformed json"),
    (json.dumps([1, 2]), "json object"),
    (json.dumps({k: v for k, v in VALID.items() if k != "categories"}), "'categories'"),
    (json.dumps({k: v for k, v in VALID.items() if k != "images"}), "'images'"),
    (json.dumps({**VALID, "annotations": [{**VALID["annotations"][0], "category_id": 4}]}), "unknown category 4"),
    (json.dumps({**VALID, "annotations": [{**VALID["annotations"][0], "image_id": 9}]}), "unknown image 9"),
    (json.dumps({**VALID, "annotations": [{"id": 1, "image_id": 1, "category_id": 3}]}), r"annotations\[0\]"),
    (json.dumps({**VALID, "annotations": [{**VALID["annotations"][0], "bbox": [1, 2]}]}), "4 numbers"),
    (json.dumps({**VALID, "images": [], "annotations": []}), "no images"),
])
def test_bad_coco_json_is_a_clear_error(tmp_path, text, message):
    path = _coco_json(tmp_path, text)
    with pytest.raises(DatasetError, match=message) as error:
        CocoDetection(path, tmp_path)
    assert "bad.json" in str(error.value)


def test_bad_boxes_are_clipped_or_dropped_and_counted(tmp_path):
    boxes = [[2, 2, 4, 4], [8, 8, 5, 5], [3, 3, 0, 5], [3, 3, -2, 4], [20, 20, 5, 5], [-3, 1, 5, float("nan")],
             [-2, -2, 4, 4]]
    data = {**VALID, "annotations": [{"id": i, "image_id": 1, "category_id": 3, "bbox": box}
                                     for i, box in enumerate(boxes)]}
    path = _coco_json(tmp_path, json.dumps(data))
    with pytest.warns(UserWarning, match="2 boxes clipped to their image, 4 boxes dropped"):
        dataset = CocoDetection(path, tmp_path)
    np.testing.assert_array_equal(dataset.annotations[0].boxes, [[2, 2, 6, 6], [8, 8, 10, 10], [0, 0, 2, 2]])


def test_bad_voc_files_are_clear_errors(tmp_path):
    root = write_voc_devkit(tmp_path)
    with pytest.raises(DatasetError, match="2012.*nosuchset.txt"):
        VocDetection(root, [("2012", "nosuchset")])
    (root / "VOC2007" / "ImageSets" / "Main" / "empty.txt").write_text("\n")
    with pytest.raises(DatasetError, match="empty.txt: the image set is empty"):
        VocDetection(root, [("2007", "empty")])
    (root / "VOC2007" / "Annotations" / "000001.xml").write_text("<annotation><size>")
    with pytest.raises(DatasetError, match="000001.xml"):
        VocDetection(root, [("2007", "test")])
    xml = (root / "VOC2012" / "Annotations" / "2008_000008.xml")
    xml.write_text(xml.read_text().replace("tvmonitor", "unicorn"))
    with pytest.raises(DatasetError, match="2008_000008.xml: unknown class 'unicorn'"):
        VocDetection(root, [("2012", "trainval")])


@pytest.mark.parametrize("entry, message", [
    ({"id": "a7"}, r"images\[0\] has the id 'a7'; image ids must be integers"),
    ({"id": 1.5}, r"images\[0\] has the id 1.5"),
    ({"width": float("nan")}, r"images\[0\] \(id 1, a.jpg\) has the width nan"),
    ({"height": 0}, r"images\[0\] \(id 1, a.jpg\) has the height 0"),
    ({"width": -4}, "has the width -4"),
    ({"width": "10"}, "has the width '10'"),
])
def test_an_image_entry_with_a_bad_id_or_size_is_refused_naming_it(tmp_path, entry, message):
    data = {**VALID, "images": [{**VALID["images"][0], **entry}]}
    with pytest.raises(DatasetError, match=message):
        CocoDetection(_coco_json(tmp_path, json.dumps(data)), tmp_path)


def test_duplicate_image_ids_are_named(tmp_path):
    images = [{**VALID["images"][0], "id": i, "file_name": f"{i}.jpg"} for i in (1, 5, 5, 1, 2)]
    with pytest.raises(DatasetError, match=r"duplicate image ids \[1, 5\]"):
        CocoDetection(_coco_json(tmp_path, json.dumps({**VALID, "images": images})), tmp_path)


@pytest.mark.parametrize("name", ["../outside.png", "sub/../../outside.png", "ABSOLUTE"])
def test_a_file_name_leaving_the_image_folder_is_refused_unless_allowed(tmp_path, name):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)  # the OS resolves sub/.. only when sub exists
    cv2.imwrite(str(tmp_path / "outside.png"), np.zeros((10, 10, 3), np.uint8))
    name = str(tmp_path / "outside.png") if name == "ABSOLUTE" else name
    data = {**VALID, "images": [{**VALID["images"][0], "file_name": name}]}
    path = _coco_json(tmp_path, json.dumps(data))
    with pytest.raises(DatasetError, match="outside the image folder.*--data.allow_outside_images true"):
        CocoDetection(path, folder)
    dataset = CocoDetection(path, folder, allow_outside_images=True)
    assert dataset[0].image.shape == (10, 10, 3)


def test_a_name_inside_the_folder_through_dots_is_read(tmp_path):
    (tmp_path / "images" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((10, 10, 3), np.uint8))
    data = {**VALID, "images": [{**VALID["images"][0], "file_name": "sub/../a.png"}]}
    assert CocoDetection(_coco_json(tmp_path, json.dumps(data)), tmp_path / "images")[0].image.shape == (10, 10, 3)


def test_a_box_far_outside_its_image_is_dropped_not_clipped_to_the_whole_image(tmp_path):
    boxes = [[0, 0, 1e30, 1e30], [-1e30, 2, 1e30, 3], [2, 2, 12, 4], [-5, -5, 8, 8]]  # 10 x 10 image
    data = {**VALID, "annotations": [{"id": i, "image_id": 1, "category_id": 3, "bbox": box}
                                     for i, box in enumerate(boxes)]}
    with pytest.warns(UserWarning, match="2 boxes clipped to their image, 2 boxes dropped"):
        dataset = CocoDetection(_coco_json(tmp_path, json.dumps(data)), tmp_path)
    np.testing.assert_array_equal(dataset.annotations[0].boxes, [[2, 2, 10, 6], [0, 0, 3, 3]])


def test_box_repairs_name_the_annotation_files(tmp_path):
    root = write_voc_devkit(tmp_path)
    xml = root / "VOC2007" / "Annotations" / "000001.xml"
    text = xml.read_text()
    start = text.index("<xmax>") + len("<xmax>")
    xml.write_text(text[:start] + "70" + text[text.index("</xmax>"):])  # past the 60 px image: clipped
    with pytest.warns(UserWarning, match=r"1 boxes clipped .* in 1 files: \S*000001\.xml") as caught:
        VocDetection(root, [("2007", "test")])
    assert "000002.xml" not in str(caught[0].message)


def test_an_image_of_another_size_than_declared_has_its_boxes_rescaled_with_a_warning(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((20, 40, 3), np.uint8))  # the file: 40 x 20
    data = {**VALID, "images": [{**VALID["images"][0], "width": 20, "height": 10}],  # declared: 20 x 10
            "annotations": [{**VALID["annotations"][0], "bbox": [2, 4, 10, 5], "iscrowd": 0}]}
    dataset = CocoDetection(_coco_json(tmp_path, json.dumps(data)), tmp_path)
    with pytest.warns(UserWarning, match=r"a.jpg: the image is 40x20 pixels but its annotation declares 20x10"):
        sample = dataset[0]
    np.testing.assert_allclose(sample.boxes, [[4, 8, 24, 18]])
    with pytest.warns(UserWarning, match="declares"):
        np.testing.assert_allclose(dataset[0].boxes, [[4, 8, 24, 18]])  # the stored annotation is unchanged


def test_an_image_header_beyond_opencvs_pixel_limit_is_an_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="huge.png.*OpenCV's limit"):
        read_image(huge_png(tmp_path / "huge.png"))
