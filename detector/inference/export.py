"""Exported files: ONNX or TorchScript with decoding inside the graph, and the description they carry.

The exported graph (:class:`ExportedDetector`) takes letterboxed images exactly as the predictor prepares them and
returns the top-K detections in input pixels:

- input ``images``: ``[B, 3, S, S]`` uint8 RGB, 0..255, letterboxed with ``detector.preprocess.letterbox`` at the
  checkpoint's input size ``S`` (normalisation is inside the graph); the batch size is dynamic. An ONNX file also
  runs at any other size that is a multiple of 32 (``[B, 3, H, W]``, e.g. ``OnnxDetector(path, input_size=512)``);
  the TorchScript file at ``S`` only;
- outputs ``boxes [B, K, 4]`` float32 xyxy in input pixels, ``scores [B, K]`` float32 probabilities in descending
  order, ``labels [B, K]`` int64 class indices (``K`` = max_detections, or the heatmap's cells if fewer). Map boxes
  back to original pixels with ``detector.preprocess.unletterbox_boxes`` and the letterbox ``meta``.

Both files carry a description (class names, the dataset's category ids, the training input size, K) as JSON: the
ONNX metadata entry ``detector``, and the TorchScript extra file ``detector.json``.

``export_checkpoint(..., precision="int8", calibration=<training images>)`` writes the same graph with its
network quantized by ONNX Runtime (``detector.inference.quantize``); its description says ``"precision": "int8"``.

ONNX is written by torch's ``torch.export``-based exporter (opset 18, or 19 for the ``dcn`` neck's deformable
convolutions; ``detector.inference.runtime.trace_onnx``). TorchScript (``torch.jit.trace``) is deprecated by torch
and kept while torch ships it. The files are run by ``detector.inference.detectors.OnnxDetector``.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from detector.checkpoint import build_model, load_checkpoint, read_description
from detector.decode import decode
from detector.errors import ExportError
from detector.inference.quantize import calibration_batches, quantize_onnx
from detector.inference.runtime import onnx_opset, quiet_tracer, trace_example, trace_onnx
from detector.overwrite import Outputs, replacing
from detector.preprocess import normalize

ExportFormat = Literal["onnx", "torchscript"]
ExportPrecision = Literal["fp32", "int8"]
OUTPUT_NAMES = ["boxes", "scores", "labels"]
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
    try:
        info = json.loads(metadata[EXPORT_METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ExportError(f"{path}: its '{EXPORT_METADATA_KEY}' metadata is not json ({error})") from error
    names, size = (info.get("class_names"), info.get("input_size")) if isinstance(info, dict) else (None, None)
    if not isinstance(names, list) or not names or not isinstance(size, int) or size < 32 or size % 32:
        raise ExportError(f"{path}: its '{EXPORT_METADATA_KEY}' metadata lacks class names or a positive input size "
                          "(a multiple of 32); export the checkpoint again")
    return info


def example_input(input_size: int, batch: int = 1) -> torch.Tensor:
    """A random ``[batch, 3, S, S]`` uint8 image batch (to trace TorchScript with, and for tests)."""
    return torch.randint(0, 256, (batch, 3, input_size, input_size), dtype=torch.uint8)


def export_onnx(model: nn.Module, path: str | Path, class_names: list[str], input_size: int, k: int = 100,
                category_ids: list[int] | None = None, precision: str = "fp32") -> Path:
    """Write ``model`` wrapped in :class:`ExportedDetector` as ONNX (``onnx_opset(model)``; dynamic batch, any
    height and width that are multiples of 32) to ``path``; its description records ``input_size`` (the training
    size, what ``OnnxDetector`` letterboxes to by default). ``precision`` is only recorded
    (``detector.inference.quantize`` quantizes the file)."""
    import onnx

    path = Path(path)
    trace_onnx(ExportedDetector(model, k), trace_example(input_size, any_size=True), path, OUTPUT_NAMES,
               onnx_opset(model), any_size=True)
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
    with torch.no_grad(), quiet_tracer():
        traced = torch.jit.trace(ExportedDetector(model, k), (example_input(input_size),))
    extra = {f"{EXPORT_METADATA_KEY}.json": description(class_names, input_size, k, category_ids)}
    torch.jit.save(traced, str(path), _extra_files=extra)
    return path


def export_checkpoint(checkpoint: str | Path, fmt: ExportFormat, output: str | Path, k: int = 100,
                      precision: ExportPrecision = "fp32", calibration: str | Path | None = None,
                      exist_ok: bool = False) -> Path:
    """Rebuild the network from ``checkpoint`` and export it in format ``fmt`` to ``output`` (its folder is made if
    missing). ``precision="int8"`` (ONNX only): the network quantized on the ``calibration`` images (a folder or
    a glob of training images; see ``detector.inference.quantize``).

    ``output`` follows the overwrite rule (``detector.overwrite``): never the checkpoint or a calibration image, a
    checkpoint, an annotation or label file; an existing file (an earlier export) only with ``exist_ok``
    (:class:`ExportError` otherwise, before anything is read). The file is written beside ``output`` under a
    temporary name and renamed over it when complete."""
    exporters = {"onnx": export_onnx, "torchscript": export_torchscript}
    if fmt not in exporters:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {sorted(exporters)}")
    if precision not in ("fp32", "int8"):
        raise ValueError(f"unknown export precision {precision!r}; choose 'fp32' or 'int8'")
    if precision == "int8" and fmt != "onnx":
        raise ValueError("int8 export is ONNX only (ONNX Runtime runs it): use --format onnx")
    output = Outputs([checkpoint, *_calibration_files(calibration)], exist_ok, ExportError).check("--output", output)
    state = load_checkpoint(checkpoint)
    info = read_description(state)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)  # as the demo and eval make theirs
    except OSError as error:
        raise ExportError(f"cannot create output folder {output.parent}: {error}") from error
    model = build_model(state, name=checkpoint)
    if precision == "int8":
        batches = calibration_batches(calibration, info.input_size)  # checked before the export's time is spent
    with replacing(output) as temporary:
        if precision == "int8":
            _export_int8(model, temporary, info.class_names, info.input_size, k, info.category_ids, batches)
        else:
            exporters[fmt](model, temporary, info.class_names, info.input_size, k, info.category_ids)
    return output


def _calibration_files(calibration: str | Path | None) -> list[Path]:
    """The files a calibration folder or file holds (inputs the export must not overwrite)."""
    if calibration is None or not isinstance(calibration, (str, Path)):
        return []
    path = Path(calibration)
    if path.is_dir():
        return [file for file in path.iterdir() if file.is_file()]
    return [path] if path.is_file() else []


def _export_int8(model: nn.Module, output: Path, class_names: list[str], input_size: int, k: int,
                 category_ids: list[int] | None, batches: list) -> Path:
    """The fp32 export, then its network quantized on the calibration ``batches`` into ``output``."""
    with tempfile.TemporaryDirectory() as folder:
        fp32 = export_onnx(model, Path(folder) / "fp32.onnx", class_names, input_size, k, category_ids,
                           precision="int8")
        return quantize_onnx(fp32, output, batches)
