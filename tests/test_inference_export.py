"""Export: the ONNX (onnxruntime) and TorchScript files give the eager model's detections, at batch 1 and 2; the
ONNX file at the training size and at another multiple of 32 too."""
import json

import numpy as np
import onnxruntime
import pytest
import torch

from helpers.checkpoints import CLASS_NAMES, INPUT_SIZE
from helpers.images import make_image

from detector import Detector
from detector.inference.export import (ExportError, ExportedDetector, description, example_input,
                                       export_checkpoint, export_torchscript)
from detector.inference.detectors import OnnxDetector
from helpers.commands import run_tool
from helpers.onnx_models import identity_onnx


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


OTHER_SIZE = 160  # a multiple of 32 that is not the training size (INPUT_SIZE)


@pytest.fixture(scope="module")
def exported(exported_onnx):
    """(checkpoint, ONNX file written by tools/export.py): the suite's one export (tests/conftest.py)."""
    return exported_onnx.checkpoint, exported_onnx.onnx


@pytest.fixture(scope="module")
def eager(exported):
    return ExportedDetector(Detector.from_checkpoint(exported[0]).model).eval()


def assert_same_topk(outputs, reference):
    """Top-K arrays compared position by position (random weights: no tied scores)."""
    boxes, scores, labels = (np.asarray(o) for o in outputs)
    ref_boxes, ref_scores, ref_labels = (r.numpy() for r in reference)
    assert boxes.shape == ref_boxes.shape and scores.shape == labels.shape == ref_scores.shape
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_allclose(boxes, ref_boxes, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("size", [INPUT_SIZE, OTHER_SIZE])
@pytest.mark.parametrize("batch", [1, 2])
def test_onnx_gives_the_eager_detections(exported, eager, batch, size):
    session = onnxruntime.InferenceSession(str(exported[1]), providers=["CPUExecutionProvider"])
    images = example_input(size, batch)
    outputs = session.run(["boxes", "scores", "labels"], {"images": images.numpy()})
    with torch.no_grad():
        reference = eager(images)
    assert outputs[0].shape == (batch, 100, 4)
    assert_same_topk(outputs, reference)


@pytest.mark.slow
def test_the_export_tool_prints_no_warnings(exported_onnx):
    assert exported_onnx.result.stderr == ""
    assert "wrote" in exported_onnx.result.stdout


@pytest.mark.slow
def test_onnx_detector_runs_at_another_size_and_the_file_keeps_the_training_size(exported):
    checkpoint, onnx_path = exported
    detector = OnnxDetector(onnx_path, input_size=OTHER_SIZE)
    assert (detector.input_size, detector.training_size) == (OTHER_SIZE, INPUT_SIZE)
    assert OnnxDetector(onnx_path).input_size == INPUT_SIZE
    reference = Detector.from_checkpoint(checkpoint, runtime="torch")
    reference.input_size = OTHER_SIZE  # the torch detector letterboxes to the same size
    images = [make_image(90, 140), make_image(200, 150, seed=1)]
    for got, want in zip(detector.predict(images), reference.predict(images)):
        assert len(want) > 0
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-4)
        np.testing.assert_array_equal(got.names, want.names)


@pytest.mark.parametrize("size", [100, 16, 0, 320.0, True])
def test_onnx_detector_refuses_a_size_that_is_no_multiple_of_32(size, tmp_path):
    with pytest.raises(ValueError, match="multiple of 32"):
        OnnxDetector(tmp_path / "never_read.onnx", input_size=size)


def test_a_file_of_one_fixed_size_runs_at_that_size_only(tmp_path):
    """Files exported before any-size export have a fixed input: the other size is refused in one line."""
    path = identity_onnx(tmp_path / "old.onnx", INPUT_SIZE, description(CLASS_NAMES, INPUT_SIZE, 100))
    assert OnnxDetector(path).input_size == INPUT_SIZE
    with pytest.raises(ExportError, match=f"old.onnx runs at {INPUT_SIZE}x{INPUT_SIZE} only .* export the "):
        OnnxDetector(path, input_size=OTHER_SIZE)


@pytest.mark.slow
def test_onnx_file_describes_itself_and_runs_behind_the_predictor_api(exported):
    checkpoint, onnx_path = exported
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    info = json.loads(session.get_modelmeta().custom_metadata_map["detector"])
    assert info["class_names"] == CLASS_NAMES and info["input_size"] == INPUT_SIZE
    images = [make_image(90, 140), make_image(120, 100, seed=1)]
    reference = Detector.from_checkpoint(checkpoint).predict(images)
    for got, want in zip(OnnxDetector(onnx_path).predict(images), reference):
        assert len(want) > 0
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-4)
        np.testing.assert_array_equal(got.names, want.names)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # torch deprecates TorchScript; it still works
def test_torchscript_gives_the_eager_detections(exported, eager, tmp_path):
    path = export_torchscript(eager.model, tmp_path / "model.pt", CLASS_NAMES, INPUT_SIZE)
    extra = {"detector.json": ""}
    scripted = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["detector.json"])["class_names"] == CLASS_NAMES
    for batch in (1, 2):
        images = example_input(INPUT_SIZE, batch)
        with torch.no_grad():
            assert_same_topk(scripted(images), eager(images))


@pytest.mark.slow
def test_demo_runs_the_onnx_model(exported, tmp_path):
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), make_image(90, 140))
    result = run_tool("demo.py", "--backend", "onnx", "--onnx", str(exported[1]), "--source", str(folder),
                      "--output", str(tmp_path / "out"), "--no-show")
    assert result.returncode == 0, result.stderr
    assert "1 frames" in result.stdout and (tmp_path / "out" / "a.png").is_file()


@pytest.mark.slow
def test_export_refuses_bad_format_and_an_output_folder_it_cannot_make(exported, tmp_path):
    with pytest.raises(ValueError, match="'tflite'"):
        export_checkpoint(exported[0], "tflite", tmp_path / "m.tflite")
    (tmp_path / "blocker").write_text("a file where the output folder should be")
    with pytest.raises(ExportError, match="blocker"):  # an OSError
        export_checkpoint(exported[0], "onnx", tmp_path / "blocker" / "m.onnx")


def test_onnx_export_without_onnxscript_says_what_to_install(monkeypatch, tmp_path):
    import detector.inference.runtime as runtime

    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ExportError, match="needs onnxscript: pip install onnxscript"):
        runtime.trace_onnx(torch.nn.Identity(), torch.zeros(2, 3, 64, 64), tmp_path / "m.onnx", ["boxes"], 18)
    assert not (tmp_path / "m.onnx").exists()
