"""A network run by ONNX Runtime: tracing to ONNX (opset, deformable convolutions), sessions, the fp32 network.

:func:`trace_onnx` is the one tracer of the package (``detector.inference.export`` writes its files with it, and
``detector.inference.quantize`` quantizes what it traces). ONNX files use opset 17, except for networks with
deformable convolutions (the ``dcn`` neck): their ``torchvision::deform_conv2d`` becomes the standard ``DeformConv``
of opset 19, which needs a recent ONNX Runtime (tested with 1.32; 1.18 and 1.19 have no kernel for it).

``Detector(..., runtime="onnxruntime")`` (:func:`fp32_network`) runs the network exported in memory by ONNX
Runtime instead of torch: on this project's CPU its fp32 kernels took half the time of torch's for the same network
(bench/RESULTS.md, 2026-12-01), outputs equal to ~1e-5. The int8 network (``detector.inference.quantize``) is the
same with its network quantized. Sessions run on the CPU, with threads that sleep rather than spin while waiting.

Where it cannot run (onnxruntime missing, a GPU device) the error says so in one line (:class:`QuantizationError`).
"""
from __future__ import annotations

import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.onnx import symbolic_helper
from torchvision.ops import DeformConv2d

from detector.errors import QuantizationError

ONNX_OPSET = 17
DEFORM_CONV_OPSET = 19  # the first opset with DeformConv
# The network's outputs, in the order of the traced graph (:class:`NetworkOutputs`).
NETWORK_OUTPUTS = ["heatmap", "offset", "size"]


def require_onnxruntime(quantizer: bool = False):
    """The ``onnxruntime`` module (with its quantizer if ``quantizer``: importing it takes ~2 s, which a session
    does not need), or :class:`QuantizationError` naming the install."""
    try:
        import onnxruntime
        if quantizer:
            import onnxruntime.quantization  # noqa: F401  (the quantizer, shipped with onnxruntime)
    except ImportError as error:
        raise QuantizationError(f"int8 and runtime='onnxruntime' run through ONNX Runtime, which is not installed "
                                f"({error}): pip install onnxruntime") from error
    return onnxruntime


def session_options(threads: int | None = None):
    """ONNX Runtime session options: ``threads`` intra-op threads (None: one per core), and threads that sleep
    instead of spinning while they wait (as ``OMP_WAIT_POLICY=PASSIVE`` does for torch, see bench/latency.py)."""
    onnxruntime = require_onnxruntime()
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session of the file ``path`` (``session_options(threads)``)."""
    onnxruntime = require_onnxruntime()
    return onnxruntime.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


# tracing ------------------------------------------------------------------------------------------------------------

@contextmanager
def quiet_tracer():
    """Silence ``TracerWarning``: what the tracer freezes (normalisation statistics, K for the fixed input size)
    is constant by design."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


@symbolic_helper.parse_args("v", "v", "v", "v", "v", "i", "i", "i", "i", "i", "i", "i", "i", "b")
def _deform_conv2d_symbolic(g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dilation_h,
                            dilation_w, groups, offset_groups, use_mask):
    """``torchvision::deform_conv2d`` as ONNX ``DeformConv``: the same inputs (mask last) and offset layout."""
    inputs = [input, weight, offset, bias, mask] if use_mask else [input, weight, offset, bias]
    return g.op("DeformConv", *inputs, kernel_shape_i=symbolic_helper._get_tensor_sizes(weight)[2:],
                strides_i=[stride_h, stride_w], pads_i=[pad_h, pad_w, pad_h, pad_w],
                dilations_i=[dilation_h, dilation_w], group_i=groups, offset_group_i=offset_groups)


def onnx_opset(model: nn.Module) -> int:
    """17, or 19 for a network with deformable convolutions (see the module docstring)."""
    deformable = any(isinstance(module, DeformConv2d) for module in model.modules())
    return DEFORM_CONV_OPSET if deformable else ONNX_OPSET


def trace_onnx(module: nn.Module, example: torch.Tensor, path: Path, output_names: list[str], opset: int) -> None:
    """``module(example)`` traced to the ONNX file ``path`` (input ``images``, dynamic batch; deformable
    convolutions as ``DeformConv``)."""
    torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", _deform_conv2d_symbolic, DEFORM_CONV_OPSET)
    with quiet_tracer():
        torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=output_names,
                          opset_version=opset, dynamo=False,
                          dynamic_axes={name: {0: "batch"} for name in ["images", *output_names]})


# the network in a session -------------------------------------------------------------------------------------------

class NetworkOutputs(nn.Module):
    """The network alone with tuple outputs ``heatmap, offset, size`` (normalised float32 images in), for export."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        outputs = self.model(x)
        return tuple(outputs[name] for name in NETWORK_OUTPUTS)


class OnnxNetwork:
    """An ONNX Runtime session standing in for a CenterNet: ``network(x)`` with ``x [B, 3, S, S]`` normalised
    float32 returns the network's dict (``heatmap`` logits ``[B, C, S/4, S/4]``, ``offset``, ``size``) as CPU
    float32 tensors; ``stride`` as the network's."""

    def __init__(self, session, stride: int):
        self.session = session
        self.stride = stride

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.session.run(NETWORK_OUTPUTS, {"images": x.cpu().numpy()})
        return {name: torch.from_numpy(value) for name, value in zip(NETWORK_OUTPUTS, outputs)}


def require_cpu(model: nn.Module, what: str) -> None:
    """:class:`QuantizationError` unless ``model`` is on the CPU (ONNX Runtime runs there)."""
    if next(model.parameters()).device.type != "cpu":
        raise QuantizationError(f"{what} runs on the CPU (ONNX Runtime); use device='cpu', or bf16 on a GPU")


def trace_network(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """The network ``model`` alone (:class:`NetworkOutputs`) traced on ``example`` to the ONNX file ``path``."""
    with torch.no_grad():
        trace_onnx(NetworkOutputs(model), example, path, NETWORK_OUTPUTS, onnx_opset(model))
    return path


def fp32_network(model: nn.Module, input_size: int, threads: int | None = None) -> OnnxNetwork:
    """``model`` (eval mode, on the CPU) exported at ``input_size`` (any batch) and loaded in ONNX Runtime, fp32."""
    require_onnxruntime()
    require_cpu(model, "runtime='onnxruntime'")
    with tempfile.TemporaryDirectory() as folder:
        path = trace_network(model, torch.zeros(1, 3, input_size, input_size), Path(folder) / "network.onnx")
        return OnnxNetwork(open_session(path, threads), model.stride)
