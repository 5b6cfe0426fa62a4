"""Which runtime runs the network (``runtime="auto"``: the fastest installed for the device and precision) and the
network built in it.

``Detector.from_checkpoint`` and the demo default to ``runtime="auto"``:

- fp32 on a CPU (no ``compile``): the first installed runtime of :data:`CPU_PREFERENCE`, else torch;
- int8 (CPU only): the first installed runtime of :data:`INT8_PREFERENCE` (quantizing needs ONNX Runtime's quantizer
  either way; OpenVINO runs the quantized network 1.1x as fast as ONNX Runtime here, the same AP within 0.15);
- on a GPU, in bf16 or compiled: torch.

The orders are the latency measured on this project's 2-core CPU (bench/latency.py, bench/RESULTS.md 2026-12-05:
the paper's plain network ~300 ms; ours fp32 in torch 0.41-0.43x of it, in ONNX Runtime 0.36x; int8 in ONNX Runtime
0.136-0.141x, in OpenVINO 0.125x). torch is the package's own dependency; ONNX Runtime and OpenVINO are extras, used
when installed. In fp32 OpenVINO is not in the order: its time equals ONNX Runtime's within the runs' spread.
``Detector(model, ...)`` (a module given directly) stays on torch unless asked.

:func:`runtime_network` exports the network to ONNX (any input size) and loads it in ONNX Runtime or OpenVINO,
through the cache of exported networks (``detector.inference.cache``) when the checkpoint's digest is known.
"""
from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

import torch
from torch import nn

from detector.inference.cache import cached_export, entry_key
from detector.inference.runtime import OnnxNetwork, open_session, require_cpu, require_onnxruntime, trace_network
from detector.model.fuse import fold_batchnorm

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
# Runtimes that run the network exported to ONNX.
EXPORTED_RUNTIMES = ("onnxruntime", "openvino")
# The fp32 runtimes on a CPU, fastest first (see the module docstring); the first installed one is "auto"'s.
CPU_PREFERENCE = ("onnxruntime", "torch")
# The int8 runtimes (CPU only), fastest first; the first installed one is "auto"'s.
INT8_PREFERENCE = ("openvino", "onnxruntime")


def installed(runtime: str) -> bool:
    """Whether ``runtime``'s Python package imports (torch always): a broken install counts as none, so ``"auto"``
    falls back to torch instead of failing."""
    if runtime == "torch":
        return True
    try:
        importlib.import_module(runtime)
    except ImportError:
        return False
    return True


def check_runtime(runtime: str) -> None:
    """``ValueError`` naming the choices unless ``runtime`` is one of :data:`RUNTIMES`."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(map(repr, RUNTIMES))}")


def pick_runtime(runtime: str, device: torch.device, precision: str = "fp32", compile: bool = False) -> str:
    """``runtime`` itself, or for ``"auto"`` the fastest installed one for ``device``, ``precision`` and
    ``compile`` (see the module docstring). int8 runs in ONNX Runtime or OpenVINO: ``ValueError`` for torch."""
    check_runtime(runtime)
    if precision == "int8":
        if runtime == "torch":
            raise ValueError("precision='int8' runs the quantized network in ONNX Runtime or OpenVINO, not torch: "
                             "use runtime='auto', 'onnxruntime' or 'openvino'")
        if runtime == "auto":
            return next((name for name in INT8_PREFERENCE if installed(name)), "onnxruntime")
        return runtime
    if runtime != "auto":
        return runtime
    if torch.device(device).type != "cpu" or precision != "fp32" or compile:
        return "torch"
    return next(name for name in CPU_PREFERENCE if installed(name))


def runtime_version(runtime: str) -> str:
    """The installed version of ``runtime``'s package (the cache key holds it)."""
    if runtime == "onnxruntime":
        return require_onnxruntime().__version__
    from detector.inference.openvino_runtime import require_openvino

    return require_openvino().__version__


def loader(runtime: str, stride: int, threads: int | None):
    """A function that loads an exported network file in ``runtime`` as a network object."""
    if runtime == "onnxruntime":
        return lambda path: OnnxNetwork(open_session(path, threads), stride)
    from detector.inference.openvino_runtime import OpenVinoNetwork, compile_openvino

    return lambda path: OpenVinoNetwork(compile_openvino(path, threads), stride)


def runtime_network(model: nn.Module, input_size: int, runtime: str, threads: int | None = None,
                    weights: str | None = None):
    """``model`` (on the CPU) with BatchNorm folded, exported (traced at ``input_size``; any size, any batch) and
    loaded in ``runtime`` (``"onnxruntime"`` or ``"openvino"``), fp32. ``weights``: the checkpoint's digest
    (``cache.file_digest``): the exported file is then kept in, or read from, the cache (a hit neither folds nor
    exports); None: exported to a temporary folder."""
    version = runtime_version(runtime)  # the runtime's error first, before any export
    require_cpu(model, f"runtime={runtime!r}")
    load = loader(runtime, model.stride, threads)

    def export(path: Path) -> None:
        trace_network(fold_batchnorm(model), input_size, path)

    if weights is not None:
        return cached_export(entry_key(weights, input_size, runtime, version), export, load)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "network.onnx"
        export(path)
        return load(path)
