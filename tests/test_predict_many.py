"""``Detections.to_dict``/``to_json`` and ``Detector.predict_many``: a stream of images in batches, one named
result per image, pulling no more than one batch ahead."""
import json

import cv2
import numpy as np
import pytest
import torch
from test_predictor import make_checkpoint, make_image

from detector import Detector
from detector.detections import Detections
from detector.images import ImageReadError


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # the shared 2-core machine (see test_predictor.py)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return Detector.from_checkpoint(make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt"))


def write_rgb(path, image):
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))  # png: lossless
    return path


def assert_same(detections, reference):
    assert len(detections) == len(reference) > 0
    np.testing.assert_allclose(detections.boxes, reference.boxes, atol=1e-3)
    np.testing.assert_allclose(detections.scores, reference.scores, atol=1e-5)
    np.testing.assert_array_equal(detections.labels, reference.labels)


def test_to_dict_is_plain_values_and_round_trips_through_json():
    detections = Detections(np.array([[1.5, 2.0, 30.25, 40.0], [0.0, 1.0, 2.0, 3.0]], dtype=np.float32),
                            np.array([0.9, 0.4], dtype=np.float32), np.array([2, 0]), np.array(["dog", "cat"]))
    data = detections.to_dict()
    assert data == {"boxes": [[1.5, 2.0, 30.25, 40.0], [0.0, 1.0, 2.0, 3.0]], "scores": [pytest.approx(0.9),
                    pytest.approx(0.4)], "labels": [2, 0], "names": ["dog", "cat"]}
    assert type(data["boxes"][0][0]) is float and type(data["labels"][0]) is int and type(data["names"][0]) is str
    back = Detections.from_dict(json.loads(detections.to_json()))
    for name in ("boxes", "scores", "labels", "names"):
        np.testing.assert_array_equal(getattr(back, name), getattr(detections, name))
        assert getattr(back, name).dtype == getattr(detections, name).dtype
    empty = Detections.from_dict(json.loads(detections.select(np.zeros(2, dtype=bool)).to_json()))
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)


def test_a_generator_is_pulled_one_batch_at_a_time(detector):
    pulled = []

    def images():
        for i in range(10_000):
            pulled.append(i)
            yield make_image(40, 50, seed=i)

    stream = detector.predict_many(images(), batch_size=3)
    first = next(stream)
    assert first.name == 0 and len(pulled) == 3
    assert [p.name for p in (next(stream), next(stream), next(stream))] == [1, 2, 3] and len(pulled) == 6


def test_batched_results_equal_one_image_at_a_time_with_names(detector, tmp_path):
    images = [make_image(90, 140), make_image(150, 100, seed=1), make_image(64, 64, seed=2)]
    paths = [write_rgb(tmp_path / f"{i}.png", image) for i, image in enumerate(images)]
    (tmp_path / "notes.txt").write_text("not an image")
    for source in (tmp_path, str(tmp_path / "*.png"), paths, [str(p) for p in paths]):
        results = list(detector.predict_many(source, batch_size=2))
        assert [r.name for r in results] == [str(p) for p in paths]
        for result, image in zip(results, images):
            assert_same(result.detections, detector.predict(image))
    arrays = list(detector.predict_many(images, batch_size=2, classes="dog"))
    assert [r.name for r in arrays] == [0, 1, 2]
    assert all(set(r.detections.names) <= {"dog"} for r in arrays)
    assert_same(arrays[1].detections, detector.predict(images[1], classes="dog"))


def test_video_frames_are_named_by_index(detector, tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(5):
        writer.write(cv2.cvtColor(make_image(48, 64, seed=i), cv2.COLOR_RGB2BGR))
    writer.release()
    results = list(detector.predict_many(path, batch_size=2))
    assert [r.name for r in results] == [0, 1, 2, 3, 4]
    assert all(isinstance(r.detections, Detections) for r in results)


def test_single_image_file_and_array(detector, tmp_path):
    image = make_image(90, 140)
    path = write_rgb(tmp_path / "one.png", image)
    [from_file] = detector.predict_many(path)
    [from_array] = detector.predict_many(image)
    assert from_file.name == str(path) and from_array.name == 0
    assert_same(from_file.detections, from_array.detections)


def test_nothing_to_read_names_the_source(detector, tmp_path):
    with pytest.raises(ImageReadError, match="missing"):
        next(detector.predict_many(tmp_path / "missing" / "*.jpg"))
    with pytest.raises(ValueError, match="batch_size"):
        next(detector.predict_many([make_image(40, 40)], batch_size=0))
