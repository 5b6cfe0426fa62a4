"""A network run by ONNX Runtime: export to ONNX (torch's ``torch.export``-based exporter), sessions, the fp32 network.

:func:`trace_onnx` is the one exporter of the package (``detector.inference.export`` writes its files with it, and
``detector.inference.quantize`` quantizes what it writes). It is torch's ``torch.export``-based exporter
(``torch.onnx.export(dynamo=True)``, which needs ``onnxscript``); the TorchScript-based one it replaced is deprecated
since torch 2.9. Batch and, with ``any_size``, height and width are dynamic (``torch.export.Dim``: any multiple of 32).
ONNX files use opset 18, except for networks with deformable convolutions (the ``dcn`` neck): their
``torchvision::deform_conv2d`` becomes the standard ``DeformConv`` of opset 19 (onnxscript's translation, from 0.7.1),
which needs a recent ONNX Runtime (tested with 1.32; 1.18 and 1.19 have no kernel for it). The exporter names nodes
by their operator; :func:`trace_onnx` renames the network's after their module (``/model/neck/...``), as
``detector.inference.quantize`` picks the nodes to quantize by that scope.

``Detector(..., runtime="onnxruntime")`` runs the network alone exported by :func:`trace_network` (any input size,
any batch) and loaded in a session (``detector.inference.fastest.runtime_network``): on this project's 2-core CPU
about 0.85x the time torch takes for the same network (bench/RESULTS.md), outputs equal to ~1e-5. The int8 network
(``detector.inference.quantize``) is the same file with its network quantized. Sessions run on the CPU, with threads
that sleep rather than spin while waiting.

Where it cannot run (onnxruntime missing, a GPU device) the error says so in one line (:class:`QuantizationError`);
without onnxscript, exporting says so in one line (:class:`ExportError`).
"""
from __future__ import annotations

import ast
import importlib.util
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torchvision.ops import DeformConv2d

from detector.errors import ExportError, QuantizationError

ONNX_OPSET = 18  # the exporter's own (its translations are written for it)
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
    """Silence TorchScript's ``TracerWarning`` (``export_torchscript``): what its tracer freezes (normalisation
    statistics, K for the fixed input size) is constant by design."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def onnx_opset(model: nn.Module) -> int:
    """18, or 19 for a network with deformable convolutions (see the module docstring)."""
    deformable = any(isinstance(module, DeformConv2d) for module in model.modules())
    return DEFORM_CONV_OPSET if deformable else ONNX_OPSET


def dynamic_shapes(any_size: bool) -> tuple[dict[int, object]]:
    """The dynamic axes of the one input ``images [B, 3, H, W]``: the batch, and with ``any_size`` the height and
    the width, each any multiple of 32 (the network's stride)."""
    axes = {0: torch.export.Dim("batch", min=1)}
    if any_size:
        axes.update({2: 32 * torch.export.Dim("height_32", min=1), 3: 32 * torch.export.Dim("width_32", min=1)})
    return (axes,)


def trace_example(input_size: int, dtype: torch.dtype = torch.uint8, any_size: bool = False) -> torch.Tensor:
    """What to export with: zeros of ``dtype``, a batch of 2 at ``input_size`` (with ``any_size``, at least 64).
    ``torch.export`` takes a dynamic axis of size 1 (a batch of 1, a 32-pixel side is 1 x 32) for a constant."""
    size = max(input_size, 64) if any_size else input_size
    return torch.zeros(2, 3, size, size, dtype=dtype)


def require_onnxscript() -> None:
    """:class:`ExportError` naming the install when onnxscript (what torch's exporter writes ONNX with) is missing."""
    if importlib.util.find_spec("onnxscript") is None:
        raise ExportError("ONNX export runs torch's exporter, which needs onnxscript: pip install onnxscript "
                          "(or pip install -e \".[export]\")")


def trace_onnx(module: nn.Module, example: torch.Tensor, path: Path, output_names: list[str], opset: int,
               any_size: bool = False) -> None:
    """``module`` exported on ``example`` (:func:`trace_example`) to the ONNX file ``path`` by torch's
    ``torch.export``-based exporter: input ``images`` with a dynamic batch, and with ``any_size`` any height and
    width that are multiples of 32 (:func:`dynamic_shapes`); deformable convolutions as ``DeformConv``; nodes named
    after their module (:func:`name_by_module`)."""
    import onnx

    require_onnxscript()
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's notes on its internals, nothing to act on
        program = torch.onnx.export(module, (example,), input_names=["images"], output_names=output_names,
                                    opset_version=opset, dynamo=True, dynamic_shapes=dynamic_shapes(any_size),
                                    verbose=False)
    proto = program.model_proto
    name_by_module(proto.graph)
    onnx.save(proto, str(path))


def name_by_module(graph) -> None:
    """Rename each node of ``graph`` that the exporter tagged with its module (metadata
    ``pkg.torch.onnx.name_scopes``) to ``/<module path>/<name>``, e.g. ``/model/neck/smooth/0/node_conv2d_3``
    (the module path with ``/`` for ``.``, as the TorchScript-based exporter named nodes); others keep their name."""
    for node in graph.node:
        scopes = next((entry.value for entry in node.metadata_props if entry.key == "pkg.torch.onnx.name_scopes"), None)
        try:
            modules = ast.literal_eval(scopes)[:-1] if scopes else []  # ["", "model", "model.neck", ...]
        except (ValueError, SyntaxError):
            modules = []
        if modules and modules[0] == "" and modules[-1]:  # the root module's "", then the module paths
            path = modules[-1]
            node.name = f"/{path.replace('.', '/')}/{node.name}"


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


def trace_network(model: nn.Module, input_size: int, path: Path) -> Path:
    """The network ``model`` alone (:class:`NetworkOutputs`, normalised float32 images in) exported to the ONNX file
    ``path``, traced at ``input_size``, taking any batch and any height and width that are multiples of 32 (the
    test scales resize the input): on this project's CPU the any-size file ran as fast as one fixed at the size
    (bench/RESULTS.md, ONNX Runtime and OpenVINO)."""
    trace_onnx(NetworkOutputs(model), trace_example(input_size, torch.float32, any_size=True), path, NETWORK_OUTPUTS,
               onnx_opset(model), any_size=True)
    return path
