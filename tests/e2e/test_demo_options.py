"""The demo and the predictor as the README shows them: labels of one object, the FPS counter, the heatmap of the
chosen classes, an image file as output, the ONNX backend's options, one class as a string, export's output folder,
and mapping the exported model's boxes back to the image (the README's lines run here)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers.checkpoints import CLASS_NAMES, INPUT_SIZE, make_checkpoint
from helpers.images import make_image

from detector import Detector
from detector.demo.loop import DemoOptions, run_demo
from detector.demo.outputs import open_sink
from detector.detections import Detections, FrameResult
from detector.inference.export import ExportError, export_checkpoint
from detector.inference.detectors import BaseDetector, OnnxDetector
from detector.inference.pipeline import suppress_duplicates
from detector.inference.sources import ImageSource
from detector.preprocess import letterbox, unletterbox_boxes
from detector.visualize import annotate, class_color, draw_detections, heatmap_overlay

ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt")


@pytest.fixture(scope="module")
def detector(checkpoint):
    return Detector.from_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def onnx_model(exported_onnx):
    """The suite's one ONNX export of ``make_checkpoint``'s model, the ``checkpoint`` above (tests/conftest.py)."""
    return exported_onnx.onnx


def run_demo_tool(*args):
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(ROOT / "tools" / "demo.py"), "--no-show", "--threads", "1", *args],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def write_image(path, image):
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


# labels of one object -----------------------------------------------------------------------------------------------

def two_classes_on_one_box():
    """Two peaks on one object, by descending score as the predictor returns them: label 1 at 0.57, label 0 at 0.31
    (the same name, so both labels have the same width and the lower one cannot peek out)."""
    box = [20.0, 40.0, 90.0, 100.0]
    return Detections(np.array([box, box], dtype=np.float32), np.array([0.57, 0.31], dtype=np.float32),
                      np.array([1, 0]), np.array(["shape", "shape"]))


def test_the_highest_score_label_is_drawn_on_top():
    drawn = draw_detections(np.zeros((120, 120, 3), dtype=np.uint8), two_classes_on_one_box())
    strip = {tuple(p) for p in drawn[28:38, 22:60].reshape(-1, 3)}  # inside the label box, above the box's top edge
    assert class_color(1) in strip and class_color(0) not in strip


def test_agnostic_suppression_keeps_the_best_of_one_place_only():
    far = Detections(np.array([[0.0, 0.0, 10.0, 10.0]], dtype=np.float32), np.array([0.2], dtype=np.float32),
                     np.array([2]), np.array(["other"]))
    both = two_classes_on_one_box()
    kept = suppress_duplicates(Detections(*(np.concatenate([a, b]) for a, b in
                                            zip((both.boxes, both.scores, both.labels, both.names),
                                                (far.boxes, far.scores, far.labels, far.names)))))
    assert kept.labels.tolist() == [1, 2] and kept.scores.tolist() == pytest.approx([0.57, 0.2])


class CannedDetector(BaseDetector):
    """A backend whose network always finds label 1 (0.57) and label 0 (0.31) on one box and label 2 elsewhere."""

    class_names, input_size = CLASS_NAMES, INPUT_SIZE

    def infer(self, batch, meta, flip=False, heatmap=False):
        boxes = torch.tensor([[[20.0, 40.0, 90.0, 100.0], [21.0, 40.0, 90.0, 101.0], [0.0, 0.0, 10.0, 10.0]]])
        found = {"boxes": boxes, "scores": torch.tensor([[0.57, 0.31, 0.2]]), "labels": torch.tensor([[1, 0, 2]])}
        return found, None, 0.0


def test_predict_agnostic_is_off_by_default_and_removes_other_classes_on_one_place():
    image = make_image(90, 140)
    assert CannedDetector().predict(image, conf=0.1).labels.tolist() == [1, 0, 2]
    assert CannedDetector().predict(image, conf=0.1, agnostic=True).labels.tolist() == [1, 2]
    assert CannedDetector().predict_frame(image, 0.1, agnostic=True).detections.labels.tolist() == [1, 2]


# the FPS counter ----------------------------------------------------------------------------------------------------

def test_the_frame_rate_is_not_written_into_saved_images(detector, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    image = make_image(96, 128)
    paths = [write_image(folder / f"{i}.png", image) for i in range(2)]  # the second frame has a frame rate
    source = ImageSource(paths)
    report = run_demo(detector, source, open_sink(tmp_path / "out", source), DemoOptions())
    assert report.frames == 2
    first, second = (cv2.imread(str(tmp_path / "out" / p.name)) for p in paths)
    np.testing.assert_array_equal(first, second)


# the heatmap of the chosen classes ----------------------------------------------------------------------------------

def test_the_heatmap_overlay_shows_the_chosen_classes_only():
    image = np.zeros((64, 128, 3), dtype=np.uint8)
    heat = np.zeros((3, INPUT_SIZE // 4, INPUT_SIZE // 4), dtype=np.float32)
    heat[2, 7, 10] = 1.0  # only class 2 is hot
    cold = heatmap_overlay(image, np.zeros_like(heat), INPUT_SIZE)
    np.testing.assert_array_equal(heatmap_overlay(image, heat, INPUT_SIZE, classes=[0, 1]), cold)
    assert not np.array_equal(heatmap_overlay(image, heat, INPUT_SIZE, classes=[2]), cold)
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                       np.zeros(0, str))
    np.testing.assert_array_equal(annotate(image, FrameResult(empty, heat), INPUT_SIZE, classes=[0]), cold)


# an image file as the output ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_output_with_an_image_suffix_is_a_file_for_one_image(checkpoint, tmp_path):
    source = write_image(tmp_path / "photo.png", make_image(96, 128))
    result = run_demo_tool("--checkpoint", str(checkpoint), "--source", str(source), "--output",
                           str(tmp_path / "out" / "single.jpg"), "--agnostic")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "single.jpg").is_file()
    assert cv2.imread(str(tmp_path / "out" / "single.jpg")).shape == (96, 128, 3)


def test_an_image_file_output_for_several_images_is_refused(tmp_path):
    from detector.errors import DemoError

    paths = [write_image(tmp_path / f"{i}.png", make_image(40, 40)) for i in range(2)]
    with pytest.raises(DemoError, match="one image, the source has 2"):
        open_sink(tmp_path / "single.jpg", ImageSource(paths))
    assert not (tmp_path / "single.jpg").exists()


# the ONNX backend ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_onnx_backend_refuses_bf16(tmp_path):
    result = run_demo_tool("--backend", "onnx", "--onnx", str(tmp_path / "model.onnx"), "--source",
                           str(tmp_path), "--precision", "bf16")
    assert result.returncode == 2 and "bf16" in result.stderr


@pytest.mark.slow  # onnx_model: the suite's one export, by tools/export.py in a subprocess
def test_the_onnx_backend_runs_with_the_threads_asked_for(onnx_model, tmp_path, monkeypatch):
    import detector.inference.detectors
    from detector.cli import demo_main

    assert OnnxDetector(onnx_model, threads=1).session.get_session_options().intra_op_num_threads == 1
    made = []

    class Recorded(OnnxDetector):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.session.get_session_options().intra_op_num_threads)

    monkeypatch.setattr(detector.inference.detectors, "OnnxDetector", Recorded)
    write_image(tmp_path / "a.png", make_image(64, 64))
    demo_main(["--backend", "onnx", "--onnx", str(onnx_model), "--source", str(tmp_path / "a.png"), "--show",
               "false", "--threads", "1"])
    assert made == [1]


# the Python API -----------------------------------------------------------------------------------------------------

def test_the_onnx_backend_tracks_as_the_torch_one(onnx_model, detector):
    frames = [make_image(90, 140, seed=i // 2) for i in range(4)]  # two scenes, two frames each
    ours = [found.track_ids.tolist() for _, found in OnnxDetector(onnx_model, threads=1).track(frames)]
    assert ours == [found.track_ids.tolist() for _, found in detector.track(frames)] and len(ours[0]) > 0


def test_one_class_given_as_a_string_is_one_class(detector):
    image = make_image(90, 140)
    birds = detector.predict(image, conf=0.2, classes=["bird"])
    assert len(birds) > 0
    np.testing.assert_array_equal(detector.predict(image, conf=0.2, classes="bird").boxes, birds.boxes)
    np.testing.assert_array_equal(detector.predict(image, conf=0.2, classes=2).boxes, birds.boxes)


# export's output folder ---------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_export_makes_its_output_folder_as_the_demo_and_eval_do(checkpoint, tmp_path):
    path = export_checkpoint(checkpoint, "torchscript", tmp_path / "new" / "folder" / "model.pt")
    assert path.is_file()
    (tmp_path / "file.txt").write_text("a file where the folder should be")
    with pytest.raises(ExportError, match="file.txt"):
        export_checkpoint(checkpoint, "torchscript", tmp_path / "file.txt" / "model.pt")


# mapping the exported model's boxes back ----------------------------------------------------------------------------

def test_unletterbox_boxes_takes_one_image_meta_as_well_as_a_batch():
    _, meta = letterbox(make_image(90, 140), INPUT_SIZE)
    boxes = torch.tensor([[10.0, 20.0, 60.0, 70.0], [100.0, 10.0, 130.0, 90.0]])  # input pixels
    one = unletterbox_boxes(boxes, torch.from_numpy(meta))
    batched = unletterbox_boxes(boxes[None], torch.from_numpy(meta)[None])[0]
    assert one.shape == (2, 4)
    torch.testing.assert_close(one, batched)
    scale_x, scale_y = meta[:2].tolist()
    torch.testing.assert_close(one[0], boxes[0] / torch.tensor([scale_x, scale_y, scale_x, scale_y]))


def readme_onnx_lines() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    onnx = [block for block in blocks if "unletterbox_boxes" in block]
    assert len(onnx) == 1, "the README shows one Python block mapping the ONNX boxes back"
    return onnx[0]


@pytest.mark.slow  # onnx_model: the suite's one export, by tools/export.py in a subprocess
def test_the_readme_onnx_lines_give_the_predictor_boxes(onnx_model, detector, tmp_path, monkeypatch):
    image = make_image(90, 140)
    write_image(tmp_path / "photo.png", image)
    (tmp_path / "model.onnx").write_bytes(Path(onnx_model).read_bytes())
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(readme_onnx_lines().replace("photo.jpg", "photo.png"), scope)
    reference = detector.predict(image, conf=0.3)
    assert len(reference) > 0
    np.testing.assert_allclose(scope["boxes"], reference.boxes, atol=1e-3)
    assert [scope["names"][i] for i in scope["labels"]] == list(reference.names)
