"""The Detector API: ``Detector.predict`` on arrays, paths and lists equals the evaluation path, its contract and
errors; ``predict_many`` on a stream of images in batches, one named result per image, pulling no more than one batch
ahead; ``Detections.to_dict``/``to_json``; tiles, test scales and flip through the Detector."""
import time
import cv2
import numpy as np
import pytest
import torch
import json

from helpers.checkpoints import CLASS_NAMES, INPUT_SIZE, make_checkpoint
from helpers.images import make_image

from detector import Detector
from detector.checkpoint import CheckpointError
from detector.images import ImageReadError
from detector.inference.pipeline import detect
from detector.training.module import CenterNetModule
from detector.preprocess import letterbox, normalize, to_chw_tensor
from detector.detections import Detections


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt")


@pytest.fixture(scope="module")
def detector(checkpoint):
    return Detector.from_checkpoint(checkpoint)


def evaluation_path(detector, image, conf, flip=False):
    """The validation path on one image: letterbox, ``inference.detect``, threshold -> boxes, scores, labels."""
    boxed, meta = letterbox(image, INPUT_SIZE)
    out = detect(detector.model, to_chw_tensor(boxed)[None], torch.from_numpy(meta)[None], flip=flip)
    keep = out["scores"][0] >= conf
    return out["boxes"][0][keep].numpy(), out["scores"][0][keep].numpy(), out["labels"][0][keep].numpy()


def assert_same(detections, reference):
    boxes, scores, labels = reference
    assert len(detections) == len(scores) > 0
    np.testing.assert_allclose(detections.boxes, boxes, atol=1e-4)
    np.testing.assert_allclose(detections.scores, scores, atol=1e-6)
    np.testing.assert_array_equal(detections.labels, labels)


def test_predict_array_path_and_list_agree_with_the_evaluation_path(detector, tmp_path):
    image, other = make_image(90, 140), make_image(150, 100, seed=1)
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))  # lossless: the same pixels come back
    reference = evaluation_path(detector, image, conf=0.3)
    assert_same(detector.predict(image), reference)
    assert_same(detector.predict(path), reference)
    assert_same(detector.predict(str(path)), reference)
    batch = detector.predict([path, other, image])
    assert len(batch) == 3
    assert_same(batch[0], reference)
    assert_same(batch[1], evaluation_path(detector, other, conf=0.3))
    assert_same(batch[2], reference)


def test_flip_test_agrees_with_the_evaluation_path(detector):
    image = make_image(100, 120)
    flipped = detector.predict(image, conf=0.2, flip=True)
    assert_same(flipped, evaluation_path(detector, image, conf=0.2, flip=True))
    assert not np.array_equal(flipped.scores, detector.predict(image, conf=0.2).scores)


def test_detections_contract(detector):
    detections = detector.predict(make_image(90, 140), conf=0.4)
    assert detections.boxes.dtype == np.float32 and detections.boxes.shape == (len(detections), 4)
    assert detections.scores.dtype == np.float32 and detections.labels.dtype == np.int64
    assert (detections.scores >= 0.4).all() and (np.diff(detections.scores) <= 0).all()
    assert (detections.boxes[:, :2] <= detections.boxes[:, 2:]).all()
    assert (detections.boxes >= 0).all() and (detections.boxes[:, [0, 2]] <= 140).all()
    assert (detections.boxes[:, [1, 3]] <= 90).all()
    assert list(detections.names) == [CLASS_NAMES[i] for i in detections.labels]
    assert len(detector.predict(make_image(90, 140), conf=1.01)) == 0


def test_class_filter_by_name_or_index(detector):
    image = make_image(90, 140)
    every = detector.predict(image, conf=0.2)
    assert {0, 2} <= set(every.labels.tolist())
    birds = detector.predict(image, conf=0.2, classes=["bird"])
    np.testing.assert_array_equal(birds.boxes, every.boxes[every.labels == 2])
    cats_and_birds = detector.predict(image, conf=0.2, classes=[0, "2"])
    assert set(cats_and_birds.labels.tolist()) == {0, 2}
    with pytest.raises(ValueError, match="unknown class 'zebra'.*cat"):
        detector.predict(image, classes=["zebra"])
    with pytest.raises(ValueError, match="class index 3 out of range"):
        detector.predict(image, classes=[3])


class _SlowModel(torch.nn.Module):
    """Wraps a network and sleeps ``delay`` seconds in each forward, so the model stage has a known lower bound."""

    def __init__(self, model, delay):
        super().__init__()
        self.model, self.delay, self.stride = model, delay, model.stride

    def forward(self, x):
        time.sleep(self.delay)
        return self.model(x)


def test_predict_frame_times_each_stage_and_returns_the_heatmap(detector):
    image = make_image(90, 140)
    slow = Detector(_SlowModel(detector.model, 0.2), CLASS_NAMES, INPUT_SIZE, prepare=False)
    start = time.perf_counter()
    result = slow.predict_frame(image, conf=0.3, heatmap=True)
    elapsed = time.perf_counter() - start
    times = result.times
    assert set(times) == {"preprocess", "model", "decode"} and min(times.values()) > 0
    assert times["model"] >= 0.2 and times["preprocess"] < 0.2 and times["decode"] < 0.2  # each stage its own
    assert sum(times.values()) <= elapsed  # the stages do not overlap
    # the heatmap is the model's probabilities: its maximum is the top detection, same class and score
    assert result.heatmap.shape == (3, INPUT_SIZE // 4, INPUT_SIZE // 4)
    top = np.unravel_index(result.heatmap.argmax(), result.heatmap.shape)
    assert result.detections.labels[0] == top[0]
    assert result.heatmap.max() == pytest.approx(result.detections.scores[0], abs=1e-6)
    boxed, _ = letterbox(image, INPUT_SIZE)
    with torch.no_grad():
        logits = detector.model(normalize(to_chw_tensor(boxed)[None]))["heatmap"][0]
    np.testing.assert_allclose(result.heatmap, logits.sigmoid().numpy(), atol=1e-5)
    assert_same(result.detections, evaluation_path(detector, image, conf=0.3))


def test_bad_inputs_raise_clear_errors(detector, tmp_path):
    with pytest.raises(ImageReadError, match="missing.jpg"):
        detector.predict(tmp_path / "missing.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        detector.predict([make_image(50, 50), corrupt])
    with pytest.raises(ValueError, match=r"shape \(50, 60\)"):
        detector.predict(np.zeros((50, 60), dtype=np.uint8))
    with pytest.raises(ValueError, match="float32"):
        detector.predict(np.zeros((50, 60, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="int"):
        detector.predict(7)
    with pytest.raises(ValueError, match="empty list"):
        detector.predict([])


def test_from_checkpoint_refuses_a_file_that_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        Detector.from_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        Detector.from_checkpoint(tmp_path / "none.ckpt")


# predict_many -------------------------------------------------------------------------------------------------------

def write_rgb(path, image):
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))  # png: lossless
    return path


def assert_same_detections(detections, reference):
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
            assert_same_detections(result.detections, detector.predict(image))
    arrays = list(detector.predict_many(images, batch_size=2, classes="dog"))
    assert [r.name for r in arrays] == [0, 1, 2]
    assert all(set(r.detections.names) <= {"dog"} for r in arrays)
    assert_same_detections(arrays[1].detections, detector.predict(images[1], classes="dog"))


def test_video_frames_are_named_by_index(detector, tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(5):
        writer.write(cv2.cvtColor(make_image(48, 64, seed=i), cv2.COLOR_RGB2BGR))
    writer.release()
    results = list(detector.predict_many(path, batch_size=2, conf=0.01))
    assert [r.name for r in results] == [0, 1, 2, 3, 4]
    assert all(isinstance(r.detections, Detections) and len(r.detections) for r in results)
    # each result is that frame's: the frames decoded here, in order, each predicted alone
    capture, frames = cv2.VideoCapture(str(path)), []
    while (frame := capture.read()[1]) is not None:
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    assert len(frames) == 5 and len({frame.tobytes() for frame in frames}) == 5
    for frame, result in zip(frames, results):
        assert_same_detections(result.detections, detector.predict(frame, conf=0.01))


@pytest.fixture(scope="module")
def sized_detector(checkpoint, tmp_path_factory):
    """The checkpoint's network predicting boxes of 4 x 7 cells (random weights predict sizes near 0: boxes of no
    area, which overlap nothing, not even themselves a frame later)."""
    state = torch.load(checkpoint, weights_only=True)
    size_bias = [key for key in state["state_dict"] if key.startswith("model.head.size.") and key.endswith(".bias")]
    state["state_dict"][size_bias[-1]] = torch.tensor([4.0, 7.0])
    path = tmp_path_factory.mktemp("sized") / "model.ckpt"
    torch.save(state, path)
    return Detector.from_checkpoint(path)


def test_track_gives_a_still_scene_the_same_ids_in_every_frame(sized_detector):
    detector = sized_detector
    frames = [make_image(90, 140)] * 4
    tracked = list(detector.track(iter(frames), batch_size=3))
    assert [name for name, _ in tracked] == [0, 1, 2, 3]
    first = tracked[0].detections
    assert len(first) == len(detector.predict(frames[0])) > 0  # the first frame: every box above conf, confirmed
    assert sorted(first.track_ids) == list(range(1, len(first) + 1))
    def with_area(found):  # boxes clipped to nothing at the image's border overlap nothing: no track continues
        x1, y1, x2, y2 = found.boxes.T
        return {(tuple(box), label): track_id for box, label, track_id, area in
                zip(found.boxes.round(2).tolist(), found.labels.tolist(), found.track_ids.tolist(),
                    (x2 - x1) * (y2 - y1)) if area > 0}

    assert len(with_area(first)) > len(first) // 2
    for _, found in tracked[1:]:
        assert with_area(found) == with_area(first)


def test_track_refuses_bad_options_before_reading_anything(detector):
    def frames():
        raise AssertionError("read")
        yield

    with pytest.raises(ValueError, match="low 0.5 is above conf 0.3"):
        detector.track(frames(), low=0.5)
    with pytest.raises(ValueError, match="buffer 0"):
        detector.track(frames(), buffer=0)


def test_single_image_file_and_array(detector, tmp_path):
    image = make_image(90, 140)
    path = write_rgb(tmp_path / "one.png", image)
    [from_file] = detector.predict_many(path)
    [from_array] = detector.predict_many(image)
    assert from_file.name == str(path) and from_array.name == 0
    assert_same_detections(from_file.detections, from_array.detections)


def test_nothing_to_read_names_the_source(detector, tmp_path):
    with pytest.raises(ImageReadError, match="missing"):
        next(detector.predict_many(tmp_path / "missing" / "*.jpg"))
    with pytest.raises(ValueError, match="batch_size"):
        next(detector.predict_many([make_image(40, 40)], batch_size=0))


def test_one_tile_over_the_whole_photo_and_the_scale_1_are_the_plain_prediction(detector):
    image = make_image(90, 140)
    plain = detector.predict(image, conf=0.1)
    for tiled in (detector.predict(image, conf=0.1, tile=140), detector.predict(image, conf=0.1, scales=[1])):
        np.testing.assert_allclose(tiled.boxes, plain.boxes, atol=1e-4)
        np.testing.assert_allclose(tiled.scores, plain.scores, atol=1e-6)


def test_tiles_scales_and_flip_combine_and_stay_in_the_photo(checkpoint):
    detector = Detector.from_checkpoint(checkpoint, runtime="torch")  # test scales: the network at other sizes
    image = make_image(100, 150)
    found = detector.predict([image], conf=0.2, tile=96, overlap=0.25, whole=True, scales=[0.75, 1.25], flip=True)[0]
    assert len(found) > 0 and (found.boxes >= 0).all()
    assert (found.boxes[:, [0, 2]] <= 150).all() and (found.boxes[:, [1, 3]] <= 100).all()
    assert (np.diff(found.scores) <= 0).all()
    frame = detector.predict_frame(image, 0.2, passes=detector.passes(tile=96, scales=[0.75]))
    assert len(frame.detections) > 0 and frame.times["model"] > 0
    with pytest.raises(ValueError, match="heatmap"):
        detector.predict_frame(image, 0.2, heatmap=True, passes=detector.passes(tile=96))


def test_the_exported_network_of_the_default_runtime_runs_test_scales_as_torch_does(checkpoint, detector):
    """The network the default runtime exports takes any multiple of 32: scales 0.75 and 1.25 (96 and 160 px from
    128) give torch's detections (measured: boxes within 7.6e-6 px, scores within 6e-8)."""
    assert detector.runtime == "onnxruntime"  # "auto" on a CPU with onnxruntime installed (the dev extra)
    image = make_image(100, 150)
    found = detector.predict(image, conf=0.05, scales=[0.75, 1, 1.25])
    expected = Detector.from_checkpoint(checkpoint, runtime="torch").predict(image, conf=0.05, scales=[0.75, 1, 1.25])
    assert len(found) == len(expected) > 0
    np.testing.assert_allclose(found.boxes, expected.boxes, atol=1e-3)
    np.testing.assert_allclose(found.scores, expected.scores, atol=1e-5)


def test_a_fixed_input_network_refuses_test_scales_but_takes_tiles(detector, monkeypatch):
    from detector.errors import OptionError

    monkeypatch.setattr(type(detector), "fixed_input", property(lambda self: True))
    with pytest.raises(OptionError, match="--test_scales: this ONNX file takes 128 px inputs only .*export"):
        detector.passes(scales=[1, 1.25], flags={"scales": "--test_scales"})
    assert len(detector.predict(make_image(200, 300), conf=0.2, tile=96)) > 0
