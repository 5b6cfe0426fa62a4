"""The runtime choice: ``"auto"`` is the first installed runtime of the CPU preference on a CPU in fp32, torch on a
GPU, in bf16 or compiled, OpenVINO or ONNX Runtime for int8; an explicit runtime is kept; a module given to
``Detector`` stays on torch; OpenVINO missing says how to install it."""
import sys

import pytest
import torch

from detector import Detector
from detector.errors import QuantizationError
from detector.inference import fastest
from detector.inference.fastest import pick_runtime
from detector.model import CenterNet

CPU, GPU = torch.device("cpu"), torch.device("cuda", 0)


def test_auto_on_a_cpu_in_fp32_is_the_first_installed_of_the_preference(monkeypatch):
    monkeypatch.setattr(fastest, "installed", lambda runtime: True)
    assert pick_runtime("auto", CPU) == fastest.CPU_PREFERENCE[0] == "onnxruntime"
    monkeypatch.setattr(fastest, "installed", lambda runtime: runtime != "onnxruntime")
    assert pick_runtime("auto", CPU) == "torch"


def test_the_preference_is_one_table_to_flip(monkeypatch):
    monkeypatch.setattr(fastest, "installed", lambda runtime: True)
    monkeypatch.setattr(fastest, "CPU_PREFERENCE", ("openvino", "onnxruntime", "torch"))
    assert pick_runtime("auto", CPU) == "openvino"


def test_auto_is_torch_on_a_gpu_in_bf16_or_compiled(monkeypatch):
    monkeypatch.setattr(fastest, "installed", lambda runtime: True)
    assert pick_runtime("auto", GPU) == "torch"
    assert pick_runtime("auto", CPU, "bf16") == "torch"
    assert pick_runtime("auto", CPU, compile=True) == "torch"


def test_int8_runs_in_openvino_when_installed_else_onnxruntime_never_torch(monkeypatch):
    """The int8 order (OpenVINO ran our quantized network 1.1x as fast as ONNX Runtime, bench/RESULTS.md); with
    neither installed, ONNX Runtime (whose error says how to install it); torch asked for int8 is refused."""
    monkeypatch.setattr(fastest, "installed", lambda runtime: True)
    assert pick_runtime("auto", CPU, "int8") == fastest.INT8_PREFERENCE[0] == "openvino"
    monkeypatch.setattr(fastest, "installed", lambda runtime: runtime != "openvino")
    assert pick_runtime("auto", CPU, "int8") == "onnxruntime"
    monkeypatch.setattr(fastest, "installed", lambda runtime: runtime == "torch")
    assert pick_runtime("auto", CPU, "int8") == "onnxruntime"
    assert pick_runtime("onnxruntime", CPU, "int8") == "onnxruntime"
    assert pick_runtime("openvino", CPU, "int8") == "openvino"
    with pytest.raises(ValueError, match="precision='int8' runs .* ONNX Runtime or OpenVINO, not torch"):
        pick_runtime("torch", CPU, "int8")


def test_an_explicit_runtime_is_kept_and_an_unknown_one_refused():
    assert [pick_runtime(name, CPU) for name in ("torch", "onnxruntime", "openvino")] == [
        "torch", "onnxruntime", "openvino"]
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'; choose one of 'auto', 'torch'"):
        pick_runtime("tensorrt", CPU)


def test_torch_is_always_installed_and_a_missing_or_broken_package_is_not(monkeypatch):
    assert fastest.installed("torch")
    assert not fastest.installed("no_such_runtime_package_here")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    assert not fastest.installed("onnxruntime") and pick_runtime("auto", CPU) == "torch"


def test_a_module_given_to_detector_stays_on_torch():
    model = CenterNet(2, neck="lean", weights=None)
    detector = Detector(model, ["a", "b"], 64)
    assert detector.runtime == "torch" and detector.network is detector.model


def test_openvino_missing_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(QuantizationError, match="pip install openvino"):
        Detector(CenterNet(2, neck="lean", weights=None), ["a", "b"], 64, runtime="openvino")
