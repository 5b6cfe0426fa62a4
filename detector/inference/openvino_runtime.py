"""A network in OpenVINO: the exported ONNX file compiled for the CPU, in fp32, on a given number of threads.

OpenVINO (``pip install openvino``, an extra like onnxruntime) reads the same ONNX file ONNX Runtime runs
(``detector.inference.runtime.trace_network``). Its CPU plugin would run in bfloat16 on CPUs with AVX512-BF16/AMX
unless told otherwise, so the network is compiled with the fp32 precision hint: outputs equal torch's to float
rounding, like ONNX Runtime's. Where it is not installed the error says so in one line (:class:`QuantizationError`,
the error of every runtime beside torch).
"""
from __future__ import annotations

from pathlib import Path

import torch

from detector.errors import QuantizationError
from detector.inference.runtime import NETWORK_OUTPUTS


def require_openvino():
    """The ``openvino`` module, or :class:`QuantizationError` naming the install."""
    try:
        import openvino
    except ImportError as error:
        raise QuantizationError(f"runtime='openvino' needs OpenVINO, which is not installed ({error}): "
                                "pip install openvino, or use runtime='onnxruntime' or 'torch'") from error
    return openvino


def compile_openvino(path: str | Path, threads: int | None = None, precision: str | None = "f32"):
    """The ONNX file ``path`` compiled for OpenVINO's CPU plugin: ``threads`` inference threads (None: its default),
    latency hint, inference precision ``precision`` (``"f32"``; None: the plugin's own choice, bf16 on CPUs with
    bfloat16 units)."""
    openvino = require_openvino()
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return openvino.Core().compile_model(str(path), "CPU", config)


class OpenVinoNetwork:
    """A compiled OpenVINO model standing in for a CenterNet, as ``runtime.OnnxNetwork`` does for a session:
    ``network(x)`` with ``x [B, 3, S, S]`` normalised float32 returns ``heatmap`` logits, ``offset`` and ``size`` as
    CPU float32 tensors; ``stride`` as the network's."""

    def __init__(self, compiled, stride: int):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.stride = stride

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        results = self.request.infer({"images": x.cpu().numpy()})
        by_name = {output.get_any_name(): value for output, value in results.items()}
        return {name: torch.from_numpy(by_name[name].copy()) for name in NETWORK_OUTPUTS}
