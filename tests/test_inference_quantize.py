"""int8 (ONNX Runtime static quantization, detector/inference/quantize.py): the boxes of a trained tiny model agree
with fp32, the Detector, exporter and demo take the precision, and where int8 cannot run the error says why in one
line."""
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from detector import Detector
from detector.boxes import iou_xyxy
from detector.losses import CenterNetLoss
from detector.model import CenterNet
from detector.training.module import CenterNetModule
from detector.inference.detectors import OnnxDetector
from detector.inference.fastest import installed
from detector.preprocess import normalize, to_chw_tensor
from detector.errors import QuantizationError
from detector.inference.quantize import calibration_batches
from detector.targets import encode
from helpers.commands import run_in_process
from helpers.onnx_models import identity_onnx

CLASS_NAMES = ["red", "blue"]
SIZE = 96


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # trains a tiny model; see tests/conftest.py


def shapes_image(seed: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """A 96x96 noisy image with two red squares (class 0) and a blue bar (class 1), placed by ``seed``."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
    x, y = rng.integers(0, 12, 2)
    boxes = np.array([[4, 6, 34, 36], [50, 44, 80, 74], [14, 56, 44, 80]], dtype=np.float32) + [x, y, x, y]
    boxes = boxes.astype(np.float32)
    for (x1, y1, x2, y2), colour in zip(boxes.astype(int), [(230, 40, 40), (230, 40, 40), (40, 200, 240)]):
        image[y1:y2, x1:x2] = colour
    return image, torch.from_numpy(boxes), torch.tensor([0, 0, 1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint, folder of its 3 training images): a tiny lean network overfit on them (~10 s on a quiet
    2-core machine)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    module = CenterNetModule(num_classes=2, class_names=CLASS_NAMES, input_size=SIZE, weights=None)
    samples = [shapes_image(seed) for seed in range(3)]
    x = normalize(torch.stack([to_chw_tensor(image) for image, _, _ in samples]))
    boxes, labels = torch.stack([b for _, b, _ in samples]), torch.stack([c for _, _, c in samples])
    targets = encode(boxes, labels, torch.ones(3, 3, dtype=torch.bool), 2, (SIZE // 4, SIZE // 4), 4)
    model, criterion = module.model, CenterNetLoss()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(100):
        loss = criterion(model(x), targets)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    folder = tmp_path_factory.mktemp("int8")
    (folder / "train").mkdir()
    for i, (image, _, _) in enumerate(samples):
        cv2.imwrite(str(folder / "train" / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    checkpoint = folder / "model.ckpt"
    torch.save({"detector": module.description().to_dict(), "state_dict": module.state_dict()}, checkpoint)
    return checkpoint, folder / "train"


def assert_boxes_agree(int8, fp32, image):
    """Each fp32 box (score >= 0.25) has an int8 box of its class at IoU > 0.95 with a score within 0.03 (int8 read
    down to 0.15, so that a box at the threshold is not lost to rounding), and the other way round. Measured on the
    two test images: IoU >= 0.987, scores within 0.011; the bounds leave about 3x that for other CPUs' kernels."""
    want, got = fp32.predict(image, conf=0.25), int8.predict(image, conf=0.15)
    assert len(want) >= 2, want
    for a, b in ((want, got), (int8.predict(image, conf=0.25), fp32.predict(image, conf=0.15))):
        ious = iou_xyxy(torch.from_numpy(a.boxes), torch.from_numpy(b.boxes))  # [a, b]
        best, match = ious.max(dim=1)
        assert (best > 0.95).all(), best
        np.testing.assert_array_equal(b.labels[match.numpy()], a.labels)
        np.testing.assert_allclose(b.scores[match.numpy()], a.scores, atol=0.03)


@pytest.fixture(scope="module")
def int8(trained):
    """The int8 Detector of ``trained`` (its network exported and quantized once for the tests that read it)."""
    checkpoint, train = trained
    return Detector.from_checkpoint(checkpoint, precision="int8", calibration=train)


def test_int8_detector_finds_the_fp32_boxes(trained, int8):
    checkpoint, train = trained
    fp32 = Detector.from_checkpoint(checkpoint)
    images = [shapes_image(seed)[0] for seed in (10, 11)]  # not the calibration images
    for image in images:
        assert_boxes_agree(int8, fp32, image)
        assert not np.array_equal(int8.predict(image).scores, fp32.predict(image).scores)  # int8 did run
    # flip test and heatmaps keep working: the torch side around the quantized network is unchanged
    assert int8.predict_frame(images[0], flip=True, heatmap=True).heatmap.shape == (2, SIZE // 4, SIZE // 4)


def test_int8_runs_in_openvino_when_installed_and_both_runtimes_find_the_fp32_boxes(trained, int8):
    """int8's "auto" runtime is OpenVINO when installed (the dev extra installs it), else ONNX Runtime: the same
    quantized file, run by either, finds the fp32 boxes, and the two runtimes agree with each other (measured
    OpenVINO against ONNX Runtime: IoU >= 0.994, scores within 0.015, inside ``assert_boxes_agree``'s bounds; their
    int8 kernels round apart)."""
    from detector.inference.runtime import OnnxNetwork

    checkpoint, train = trained
    onnxruntime = Detector.from_checkpoint(checkpoint, precision="int8", calibration=train, runtime="onnxruntime")
    assert isinstance(onnxruntime.network, OnnxNetwork) and onnxruntime.runtime == "onnxruntime"
    assert int8.runtime == ("openvino" if installed("openvino") else "onnxruntime")
    if installed("openvino"):
        from detector.inference.openvino_runtime import OpenVinoNetwork

        assert isinstance(int8.network, OpenVinoNetwork)
    fp32 = Detector.from_checkpoint(checkpoint)
    for seed in (10, 11):
        image = shapes_image(seed)[0]
        assert_boxes_agree(onnxruntime, fp32, image)
        assert_boxes_agree(int8, onnxruntime, image)


def test_int8_network_is_quantized_not_the_fp32_one(trained, int8):
    """Guards against an int8 path that silently runs fp32: its heatmap is close to fp32's, but not equal."""
    checkpoint, train = trained
    x = normalize(to_chw_tensor(shapes_image(10)[0])[None])
    with torch.no_grad():
        want = Detector.from_checkpoint(checkpoint).model(x)["heatmap"].sigmoid()
    got = int8.network(x)["heatmap"].sigmoid()
    assert 1e-4 < (got - want).abs().max() < 0.15


def test_exported_int8_file_runs_behind_the_onnx_detector(trained, tmp_path, capsys):
    checkpoint, train = trained
    result = run_in_process(capsys, "export.py", "--checkpoint", str(checkpoint), "--output",
                            str(tmp_path / "int8.onnx"), "--precision", "int8", "--calibration", str(train))
    assert result.returncode == 0, result.stderr
    assert "int8" in result.stdout
    detector = OnnxDetector(tmp_path / "int8.onnx")
    assert detector.precision == "int8"
    assert_boxes_agree(detector, Detector.from_checkpoint(checkpoint), shapes_image(12)[0])


def test_demo_runs_int8_from_a_checkpoint_and_refuses_an_fp32_file_as_int8(trained, tmp_path, capsys):
    checkpoint, train = trained
    result = run_in_process(capsys, "demo.py", "--checkpoint", str(checkpoint), "--source", str(train), "--show", "false",
                      "--precision", "int8", "--calibration", str(train), "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "3 frames" in result.stdout, result.stdout
    runtime = "openvino" if installed("openvino") else "onnxruntime"
    assert result.stdout.splitlines()[0] == f"device: cpu (1 thread); torch backend, int8, network run by {runtime}"
    torch_asked = run_in_process(capsys, "demo.py", "--checkpoint", str(checkpoint), "--source", str(train),
                                 "--precision", "int8", "--calibration", str(train), "--runtime", "torch")
    assert torch_asked.returncode == 2
    assert torch_asked.stderr.strip().splitlines()[-1].endswith("--precision int8 runs the quantized network in "
                                                                "onnxruntime or openvino, not torch: leave --runtime "
                                                                "out (auto) or give --runtime onnxruntime or openvino")
    from detector.inference.export import description

    fp32 = identity_onnx(tmp_path / "fp32.onnx", SIZE, description(CLASS_NAMES, SIZE, 100))  # refused unread
    result = run_in_process(capsys, "demo.py", "--backend", "onnx", "--onnx", str(fp32), "--source", str(train), "--show",
                      "false", "--precision", "int8")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {fp32} is fp32, not int8: for int8, export it with "
                                                  "centernet export --precision int8 --calibration <training images>"]


def test_int8_without_calibration_images_is_one_line(trained, tmp_path, capsys):
    checkpoint, train = trained
    result = run_in_process(capsys, "demo.py", "--checkpoint", str(checkpoint), "--source", str(train), "--show", "false",
                      "--precision", "int8")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: int8 needs calibration images (a few training images, "
                                                  "e.g. calibration='train/' or --calibration train/)"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(QuantizationError, match="calibration images: .*empty"):
        calibration_batches(tmp_path / "empty", SIZE)


def test_int8_torchscript_export_is_refused_as_usage(trained, tmp_path, capsys):
    checkpoint, train = trained
    result = run_in_process(capsys, "export.py", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "m.pt"),
                      "--format", "torchscript", "--precision", "int8", "--calibration", str(train))
    assert result.returncode == 2 and "--precision int8 exports ONNX only" in result.stderr


def test_int8_on_a_gpu_device_or_without_onnxruntime_says_so(monkeypatch):
    model = CenterNet(2, neck="lean", weights=None)
    with pytest.raises(QuantizationError, match="runs on the CPU"):
        from detector.inference.quantize import int8_network

        int8_network(_OnGpu(model), SIZE, [shapes_image(0)[0]])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(QuantizationError, match="pip install onnxruntime"):
        Detector(model, CLASS_NAMES, SIZE, precision="int8", calibration=[shapes_image(0)[0]])


class _OnGpu(torch.nn.Module):
    """A network whose parameters claim a CUDA device (none is needed: the device check comes first)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.stride = model, model.stride

    def parameters(self, recurse=True):
        yield SimpleNamespace(device=torch.device("cuda", 0))


def test_onnxruntime_fp32_runtime_gives_the_torch_detections(trained):
    """``runtime="onnxruntime"`` runs the same fp32 network in ONNX Runtime: detections and heatmaps equal the torch
    runtime's to float rounding (flip test included; the bounds below are measured), and the network really is the
    session."""
    from detector.inference.runtime import OnnxNetwork

    checkpoint, _ = trained
    torch_runtime = Detector.from_checkpoint(checkpoint, runtime="torch")
    onnx_runtime = Detector.from_checkpoint(checkpoint)  # "auto": ONNX Runtime on a CPU when it is installed
    assert isinstance(onnx_runtime.network, OnnxNetwork) and onnx_runtime.runtime == "onnxruntime"
    assert torch_runtime.runtime == "torch"
    assert_same_frames(torch_runtime, onnx_runtime)


def test_openvino_fp32_runtime_gives_the_torch_detections(trained):
    """``runtime="openvino"`` runs the same exported network in OpenVINO in fp32 (not the bf16 its CPU plugin picks
    by itself on CPUs with bfloat16 units): the torch runtime's detections and heatmaps, flip test included."""
    pytest.importorskip("openvino")
    from detector.inference.openvino_runtime import OpenVinoNetwork

    checkpoint, _ = trained
    openvino_runtime = Detector.from_checkpoint(checkpoint, runtime="openvino")
    assert isinstance(openvino_runtime.network, OpenVinoNetwork) and openvino_runtime.runtime == "openvino"
    assert_same_frames(Detector.from_checkpoint(checkpoint, runtime="torch"), openvino_runtime)


def assert_same_frames(torch_runtime, other):
    """Two detectors give the same detections and heatmaps to float rounding, with and without flip test."""
    for seed, flip in ((10, False), (11, True)):
        image = shapes_image(seed)[0]
        want, got = torch_runtime.predict_frame(image, flip=flip, heatmap=True), other.predict_frame(
            image, flip=flip, heatmap=True)
        assert len(want.detections) >= 2
        # measured: boxes (up to 79 px) within 7.6e-6 px (one float32 step at 64-128), probabilities within 2e-7;
        # ONNX Runtime picks its own convolution kernels, so the bounds allow ~100x that, and stay far under a
        # pixel or a rounding of the score
        np.testing.assert_allclose(got.detections.boxes, want.detections.boxes, atol=1e-3)
        np.testing.assert_allclose(got.detections.scores, want.detections.scores, atol=1e-5)
        np.testing.assert_array_equal(got.detections.labels, want.detections.labels)
        np.testing.assert_allclose(got.heatmap, want.heatmap, atol=1e-5)


def test_onnxruntime_runtime_refuses_what_only_torch_runs(trained):
    model = CenterNet(2, neck="lean", weights=None)
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        Detector(model, CLASS_NAMES, SIZE, runtime="tensorrt")
    with pytest.raises(ValueError, match="runtime='onnxruntime' run the exported network: pick one"):
        Detector(model, CLASS_NAMES, SIZE, runtime="onnxruntime", compile=True)


def test_demo_runtime_onnxruntime_names_it_in_the_first_line(trained, capsys):
    checkpoint, train = trained
    result = run_in_process(capsys, "demo.py", "--checkpoint", str(checkpoint), "--source", str(train), "--show", "false",
                      "--runtime", "onnxruntime", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "device: cpu (1 thread); torch backend, fp32, network run by onnxruntime"
    assert "3 frames" in result.stdout, result.stdout


def test_a_graph_without_the_network_scope_is_not_quantized_whole(tmp_path):
    """ONNX Runtime reads an empty node list as every node: a graph whose nodes lack the ``/model/`` names (an
    exporter that stopped naming them) is refused rather than quantized with its decoding."""
    from detector.inference.quantize import quantize_onnx

    source = identity_onnx(tmp_path / "unnamed.onnx", SIZE)
    with pytest.raises(QuantizationError, match="unnamed.onnx: no node of the network"):
        quantize_onnx(source, tmp_path / "int8.onnx", [np.zeros((1, 3, SIZE, SIZE), np.uint8)])
