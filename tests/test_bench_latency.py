"""bench/latency.py cannot be fooled by a runner that changes the thread counts: ``measure`` stops naming it, ONNX
Runtime sessions and OpenVINO models must have torch's count, and the peer process times its rows (its ONNX ones too)
on the run's counts after its library changed them; the runtime candidates' pieces: the peer's int8 nodes, the
shared calibration, the compiled rows skipped without a compiler."""
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "latency.py"
_spec = importlib.util.spec_from_file_location("bench_latency", SCRIPT)  # bench/ is no package of the install
latency = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(latency)

IMAGE = np.zeros((8, 8, 3), dtype=np.uint8)


def test_a_runner_that_resets_torch_threads_stops_the_benchmark_naming_it():
    torch.set_num_threads(2)
    runners = {"ours": lambda image: torch.ones(4).sum(),
               "peer that resets threads": lambda image: torch.set_num_threads(1)}
    with pytest.raises(RuntimeError, match="'peer that resets threads'.*torch 2 -> 1"):
        latency.measure(runners, IMAGE, repeats=2, warmup=0)


def test_the_check_covers_the_warm_up_and_opencv_threads():
    before = cv2.getNumThreads()
    runners = {"opencv to one thread": lambda image: cv2.setNumThreads(1 if before != 1 else 2)}
    try:
        with pytest.raises(RuntimeError, match="'opencv to one thread'.*opencv"):
            latency.measure(runners, IMAGE, repeats=0, warmup=1)
    finally:
        cv2.setNumThreads(before)


def test_threads_changed_while_building_are_caught_before_the_first_call():
    torch.set_num_threads(2)
    expected = latency.thread_state()
    torch.set_num_threads(1)
    with pytest.raises(RuntimeError, match="before the first runner"):
        latency.measure({"ours": lambda image: None}, IMAGE, repeats=1, warmup=0, expected=expected)


def test_runners_that_keep_the_threads_are_timed_round_robin():
    torch.set_num_threads(2)
    calls = []
    runners = {name: (lambda image, name=name: calls.append(name)) for name in ("a", "b")}
    times = latency.measure(runners, IMAGE, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 3}


def test_an_onnx_runtime_session_on_other_threads_than_torch_is_refused():
    onnxruntime = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from detector.inference.runtime import session_options
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for threads, expected in ((2, 2), (None, 2), (1, 2)):
        session = onnxruntime.InferenceSession(model.SerializeToString(), session_options(threads),
                                               providers=["CPUExecutionProvider"])
        if threads == expected:
            latency.check_onnx_threads(session, expected, "ours")
        else:
            with pytest.raises(RuntimeError, match="ours: ONNX Runtime session has"):
                latency.check_onnx_threads(session, expected, "ours")


def test_the_peer_process_times_on_the_run_s_threads_after_its_library_changed_them(monkeypatch, tmp_path):
    seen = []

    def fake_peer(size):  # what ultralytics does: OpenCV to one thread on import, torch's on the first predict
        cv2.setNumThreads(0)
        torch.set_num_threads(1)
        return {"peer, own process": lambda image: seen.append(latency.thread_state())}, "chose 1"

    before = cv2.getNumThreads()
    def fake_onnx(size, threads, folder):  # its ONNX export resets torch's threads again
        torch.set_num_threads(1)
        return {"peer onnx, own process": lambda image: seen.append(latency.thread_state())}, "exported"

    monkeypatch.setattr(latency, "yolov8n_runners", fake_peer)
    monkeypatch.setattr(latency, "yolov8n_onnx_runners", fake_onnx)
    try:
        latency.run_peer(64, repeats=2, warmup=1, threads=2, output=str(tmp_path / "peer.json"), onnx=True)
    finally:
        cv2.setNumThreads(before)
    result = json.loads((tmp_path / "peer.json").read_text())
    assert len(result["times"]["peer, own process"]) == len(result["times"]["peer onnx, own process"]) == 2
    assert result["note"] == "chose 1; exported"
    assert seen == [{"torch": 2, "opencv": before}] * 6


def test_the_peer_int8_quantizes_what_ours_does_the_network_but_the_last_head_convolutions_and_the_decoding():
    names = ["images_cast", "/model.0/conv/Conv", "/model.0/act/Sigmoid", "/model.21/cv1/conv/Conv",
             "/model.22/cv2.0/cv2.0.0/conv/Conv", "/model.22/cv2.0/cv2.0.0/act/Mul", "/model.22/cv2.0/cv2.0.2/Conv",
             "/model.22/cv3.1/cv3.1.2/Conv", "/model.22/dfl/conv/Conv", "/model.22/Sigmoid", "/model.22/Concat_3"]
    graph = SimpleNamespace(node=[SimpleNamespace(name=name) for name in names])
    assert latency.yolo_quantized_nodes(graph) == names[1:6]


def test_without_a_cxx_compiler_the_compiled_rows_are_skipped_with_a_note(monkeypatch, capsys):
    monkeypatch.setattr(latency.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert latency.cxx_compiler() is None
    assert latency.compiled_runners(None, None, None, 64) == {}
    assert "needs a C++ compiler" in capsys.readouterr().out


def test_every_int8_row_calibrates_on_the_same_images():
    first, second = latency.calibration_images(32), latency.calibration_images(32)
    assert len(first) == latency.CALIBRATION_IMAGES and first[0].shape == (1, 3, 32, 32)
    assert all((a == b).all() for a, b in zip(first, second)) and not (first[0] == first[1]).all()


def test_an_openvino_model_on_other_threads_than_torch_is_refused(tmp_path):
    pytest.importorskip("openvino")
    from onnx import TensorProto, helper

    from detector.inference.openvino_runtime import compile_openvino
    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["boxes"])], "relu",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "relu.onnx").write_bytes(model.SerializeToString())
    compiled = compile_openvino(tmp_path / "relu.onnx", threads=1)
    latency.check_openvino_threads(compiled, 1, "ours")
    with pytest.raises(RuntimeError, match="ours: OpenVINO compiled with 1 inference threads, torch 2"):
        latency.check_openvino_threads(compiled, 2, "ours")
    session = latency.OpenVinoSession(compiled)
    assert session.run(["boxes"], {"images": np.array([[-1, 2, -3, 4]], np.float32)})[0].tolist() == [[0, 2, 0, 4]]
