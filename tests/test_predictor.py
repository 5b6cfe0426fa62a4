"""The Python API: Detector.predict on arrays, paths and lists equals the evaluation path; its contract and errors."""
import time

import cv2
import numpy as np
import pytest
import torch

from detector import Detector
from detector.checkpoint import CheckpointError
from detector.images import ImageReadError
from detector.inference.pipeline import detect
from detector.training.module import CenterNetModule
from detector.preprocess import letterbox, normalize, to_chw_tensor

CLASS_NAMES = ["cat", "dog", "bird"]
INPUT_SIZE = 128


def make_checkpoint(path, seed=0):
    """A checkpoint of a random-init model whose heatmap bias is 0, so that many peaks score above 0.3."""
    torch.manual_seed(seed)
    module = CenterNetModule(num_classes=3, class_names=CLASS_NAMES, input_size=INPUT_SIZE)
    torch.nn.init.zeros_(module.model.head.heatmap[-1].bias)
    torch.save({"detector": module.description().to_dict(), "state_dict": module.state_dict()}, path)
    return path


def make_image(height, width, seed=0):
    """An ``[H, W, 3]`` uint8 RGB image with a few coloured rectangles on noise."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    for _ in range(3):
        x, y = rng.integers(0, width - 20), rng.integers(0, height - 20)
        image[y:y + 20, x:x + 30] = rng.integers(100, 255, 3)
    return image


@pytest.fixture(autouse=True)
def _one_thread():
    # On the shared 2-core machine two OpenMP threads spin against other processes (~50x slower forwards).
    torch.set_num_threads(1)


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
