"""int8 by ONNX Runtime: calibration on training images, static quantization of the traced network, the int8 network.

The network (never the decoding) is quantized: ``onnxruntime.quantization.quantize_static`` in QDQ format, weights
int8 per output channel, activations uint8 with ranges calibrated (min-max) on a few training images prepared
exactly as at inference (``preprocess.letterbox``, then the normalisation, which stays float32 in the graph). Every
node of the network is quantized (convolutions, ReLU, residual additions, upsampling, max-pool) but the last 1x1
convolution of each head: quantizing those outputs cost 2 AP on BCCD (38.3 -> 36.4), keeping them float32 none
(38.6), for little time (bench/RESULTS.md). The normalisation and the decoding run in float32.

Two ways in, one quantizer:

- ``export --precision int8 --calibration <images>`` (``detector.inference.export.export_checkpoint``, then
  :func:`quantize_onnx`): the exported file (uint8 images in, decoded boxes out) with its network quantized;
  ``OnnxDetector`` and the demo's ``--backend onnx`` run it, its metadata says ``"precision": "int8"``.
- ``Detector(..., precision="int8", calibration=<images>)`` (:func:`int8_network`): the network alone, quantized in
  memory and run by OpenVINO (when installed: 1.1x as fast on this project's CPU, bench/RESULTS.md) or ONNX Runtime
  in place of the torch network; letterbox, flip test, test scales, heatmaps and decoding stay the torch ones.

Tracing and sessions are ``detector.inference.runtime``'s (``trace_network`` writes the same network unquantized).

Where it cannot run (onnxruntime missing, a GPU device, no calibration images) the error says so in one line
(:class:`QuantizationError`). bench/RESULTS.md has the speed and the AP against fp32 with the same weights.
"""
from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch
from torch import nn

from detector.errors import QuantizationError
from detector.images import ImageInput, as_image
from detector.inference.runtime import OnnxNetwork, open_session, require_cpu, require_onnxruntime, trace_network
from detector.inference.sources import iter_images
from detector.preprocess import letterbox, normalize, to_chw_tensor

# Calibration images used when a caller gives more: min-max ranges settle after a few dozen.
CALIBRATION_IMAGES = 32
# The network's nodes in an exported graph: ``ExportedDetector.model`` and ``NetworkOutputs.model`` scope them
# (``detector.inference.runtime.name_by_module`` names each node after its module).
NETWORK_SCOPE = "/model/"
Network = TypeVar("Network")


def calibration_batches(source: str | Path | Iterable[ImageInput], input_size: int,
                        count: int = CALIBRATION_IMAGES) -> list[np.ndarray]:
    """Up to ``count`` images of ``source`` (a folder, a glob, a video, or images; see ``iter_images``) as
    letterboxed ``[1, 3, S, S]`` uint8 arrays, the inference's preparation; :class:`QuantizationError` if none."""
    if source is None:
        raise QuantizationError("int8 needs calibration images (a few training images, e.g. calibration='train/' "
                                "or --calibration train/)")
    try:
        items = [image for _, image in itertools.islice(iter_images(source), count)]
    except OSError as error:
        raise QuantizationError(f"calibration images: {error}") from error
    if not items:
        raise QuantizationError(f"calibration images: {source} holds none")
    return [to_chw_tensor(letterbox(as_image(item), input_size)[0])[None].numpy() for item in items]


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` protocol over a list of input arrays."""

    def __init__(self, name: str, batches: Iterable[np.ndarray]):
        self.feeds: Iterator[dict[str, np.ndarray]] = iter({name: batch} for batch in batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)

    def __iter__(self):
        return self.feeds


def quantized_nodes(graph) -> list[str]:
    """The names of the network's nodes to quantize: every node in ``NETWORK_SCOPE`` but the last convolution of
    each head (its output, read by the decoding, stays float32; see the module docstring)."""
    network = [node for node in graph.node if node.name.startswith(NETWORK_SCOPE)]
    read = {name for node in network for name in node.input}
    outputs = {node.name for node in network if node.op_type == "Conv" and not read & set(node.output)}
    return [node.name for node in network if node.name not in outputs]


def quantize_onnx(source: Path, output: Path, batches: Iterable[np.ndarray],
                  select: Callable[[object], list[str]] = quantized_nodes) -> Path:
    """Quantize the network nodes (scope ``NETWORK_SCOPE``) of the ONNX file ``source`` into ``output``: QDQ,
    per-channel int8 weights, uint8 activations calibrated by min-max on ``batches`` (inputs of the graph's
    first input). Metadata is kept. ``select``: the graph -> the names of the nodes to quantize (another network's
    file, e.g. bench/latency.py's peer, names its own)."""
    require_onnxruntime(quantizer=True)
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        nodes = select(graph)
        if not nodes:  # ONNX Runtime would read an empty list as "every node", the decoding included
            raise QuantizationError(f"{source}: no node of the network (named {NETWORK_SCOPE}...) to quantize; "
                                    "export it with detector.inference.runtime.trace_onnx")
        quantize_static(str(prepared), str(output), _Reader(graph.input[0].name, batches),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_quantize=nodes)
    return output


def int8_network(model: nn.Module, input_size: int, calibration: str | Path | Iterable[ImageInput],
                 load: Callable[[Path], Network] | None = None, count: int = CALIBRATION_IMAGES) -> Network:
    """``model`` (eval mode, on the CPU) exported (traced at ``input_size``, any size), quantized on ``calibration``
    images and loaded by ``load`` (the quantized file -> a network: ``fastest.loader`` of ONNX Runtime or
    OpenVINO; None: an ONNX Runtime session on torch's thread count)."""
    require_onnxruntime(quantizer=True)
    require_cpu(model, "precision='int8'")
    batches = [normalize(torch.from_numpy(batch)).numpy()
               for batch in calibration_batches(calibration, input_size, count)]
    with tempfile.TemporaryDirectory() as folder:
        fp32 = trace_network(model, input_size, Path(folder) / "network.onnx")
        path = quantize_onnx(fp32, Path(folder) / "network_int8.onnx", batches)
        return load(path) if load else OnnxNetwork(open_session(path, torch.get_num_threads()), model.stride)
