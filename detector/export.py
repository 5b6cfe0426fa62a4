"""Export a trained detector to ONNX or TorchScript, with decoding inside the graph.

The exported graph (:class:`ExportedDetector`) takes letterboxed images exactly as the predictor prepares them and
returns the top-K detections in input pixels:

- input ``images``: ``[B, 3, S, S]`` uint8 RGB, 0..255, letterboxed with ``detector.preprocess.letterbox`` at the
  checkpoint's input size ``S`` (normalisation is inside the graph); the batch size is dynamic;
- outputs ``boxes [B, K, 4]`` float32 xyxy in input pixels, ``scores [B, K]`` float32 probabilities in descending
  order, ``labels [B, K]`` int64 class indices. Map boxes back to original pixels with
  ``detector.preprocess.unletterbox_boxes`` and the letterbox ``meta``.

Both files carry a description (class names, the dataset's category ids, input size, K) as JSON: the ONNX
metadata entry ``detector``, and the TorchScript extra file ``detector.json``.

``export_checkpoint(..., precision="int8", calibration=<training images>)`` writes the same graph with its
network quantized by ONNX Runtime (``detector.quantize``); its description says ``"precision": "int8"``.

ONNX files use opset 17, except for networks with deformable convolutions (the ``dcn`` neck): their
``torchvision::deform_conv2d`` becomes the standard ``DeformConv`` of opset 19, which needs a recent ONNX Runtime
(tested with 1.32; 1.18 and 1.19 have no kernel for it).
"""
from __future__ import annotations

import json
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.onnx import symbolic_helper
from torchvision.ops import DeformConv2d

from detector.checkpoint import build_model, load_checkpoint, read_description
from detector.decode import decode
from detector.errors import ExportError
from detector.preprocess import normalize

ExportFormat = Literal["onnx", "torchscript"]
ExportPrecision = Literal["fp32", "int8"]
OUTPUT_NAMES = ["boxes", "scores", "labels"]
ONNX_OPSET = 17
DEFORM_CONV_OPSET = 19  # the first opset with DeformConv
# Key of the ONNX metadata entry describing the exported model (the TorchScript extra file is "<key>.json").
EXPORT_METADATA_KEY = "detector"


class ExportedDetector(nn.Module):
    """normalise -> network -> decode, as one module (contract in the module docstring)."""

    def __init__(self, model: nn.Module, k: int = 100):
        super().__init__()
        self.model = model.eval()
        self.k = k
        self.stride = model.stride

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        detections = decode(self.model(normalize(images)), k=self.k, stride=self.stride)
        return detections["boxes"], detections["scores"], detections["labels"]


def description(class_names: list[str], input_size: int, k: int, category_ids: list[int] | None = None,
                precision: str = "fp32") -> str:
    """The JSON stored with an exported file (read back by :func:`read_onnx_description`); ``category_ids`` (the
    dataset's id of each label, for results files) is stored when given."""
    ids = {} if category_ids is None else {"category_ids": [int(i) for i in category_ids]}
    return json.dumps({"class_names": list(class_names), "input_size": input_size, "max_detections": k, **ids,
                       "input": "images uint8 [B, 3, S, S] RGB letterboxed", "outputs": OUTPUT_NAMES,
                       "precision": precision})


def read_onnx_description(metadata: dict[str, str], path: str | Path) -> dict:
    """The :func:`description` in an ONNX file's ``custom_metadata_map``; :class:`ExportError` when it has none."""
    if EXPORT_METADATA_KEY not in metadata:
        raise ExportError(f"{path} has no '{EXPORT_METADATA_KEY}' metadata: was it written by tools/export.py?")
    return json.loads(metadata[EXPORT_METADATA_KEY])


@contextmanager
def _quiet_tracer():
    """Silence ``TracerWarning``: what the tracer freezes (normalisation statistics, K for the fixed input size)
    is constant by design."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def example_input(input_size: int, batch: int = 1) -> torch.Tensor:
    """A ``[batch, 3, S, S]`` uint8 image batch to trace with."""
    return torch.randint(0, 256, (batch, 3, input_size, input_size), dtype=torch.uint8)


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
    with _quiet_tracer():
        torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=output_names,
                          opset_version=opset, dynamo=False,
                          dynamic_axes={name: {0: "batch"} for name in ["images", *output_names]})


def export_onnx(model: nn.Module, path: str | Path, class_names: list[str], input_size: int, k: int = 100,
                category_ids: list[int] | None = None, precision: str = "fp32") -> Path:
    """Write ``model`` wrapped in :class:`ExportedDetector` as ONNX (``onnx_opset(model)``, dynamic batch) to
    ``path``; ``precision`` is only recorded (``detector.quantize`` quantizes the file)."""
    import onnx

    path = Path(path)
    trace_onnx(ExportedDetector(model, k), example_input(input_size), path, OUTPUT_NAMES, onnx_opset(model))
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = EXPORT_METADATA_KEY, description(class_names, input_size, k, category_ids, precision)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def export_torchscript(model: nn.Module, path: str | Path, class_names: list[str], input_size: int,
                       k: int = 100, category_ids: list[int] | None = None) -> Path:
    """Write ``model`` wrapped in :class:`ExportedDetector` as a traced TorchScript module to ``path``."""
    path = Path(path)
    with torch.no_grad(), _quiet_tracer():
        traced = torch.jit.trace(ExportedDetector(model, k), (example_input(input_size),))
    extra = {f"{EXPORT_METADATA_KEY}.json": description(class_names, input_size, k, category_ids)}
    torch.jit.save(traced, str(path), _extra_files=extra)
    return path


def export_checkpoint(checkpoint: str | Path, fmt: ExportFormat, output: str | Path, k: int = 100,
                      precision: ExportPrecision = "fp32", calibration: str | Path | None = None) -> Path:
    """Rebuild the network from ``checkpoint`` and export it in format ``fmt`` to ``output`` (its folder is made if
    missing). ``precision="int8"`` (ONNX only): the network quantized on the ``calibration`` images (a folder or
    a glob of training images; see ``detector.quantize``)."""
    exporters = {"onnx": export_onnx, "torchscript": export_torchscript}
    if fmt not in exporters:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {sorted(exporters)}")
    if precision not in ("fp32", "int8"):
        raise ValueError(f"unknown export precision {precision!r}; choose 'fp32' or 'int8'")
    if precision == "int8" and fmt != "onnx":
        raise ValueError("int8 export is ONNX only (ONNX Runtime runs it): use --format onnx")
    state = load_checkpoint(checkpoint)
    info = read_description(state)
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)  # as the demo and eval make theirs
    except OSError as error:
        raise ExportError(f"cannot create output folder {output.parent}: {error}") from error
    if precision == "int8":
        return _export_int8(build_model(state), output, info.class_names, info.input_size, k, info.category_ids,
                            calibration)
    return exporters[fmt](build_model(state), output, info.class_names, info.input_size, k, info.category_ids)


def _export_int8(model: nn.Module, output: Path, class_names: list[str], input_size: int, k: int,
                 category_ids: list[int] | None, calibration: str | Path | None) -> Path:
    """The fp32 export, then its network quantized on ``calibration`` into ``output``."""
    from detector.quantize import calibration_batches, quantize_onnx

    batches = calibration_batches(calibration, input_size)  # checked before the export's time is spent
    with tempfile.TemporaryDirectory() as folder:
        fp32 = export_onnx(model, Path(folder) / "fp32.onnx", class_names, input_size, k, category_ids,
                           precision="int8")
        return quantize_onnx(fp32, output, batches)
