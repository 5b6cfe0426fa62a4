"""The Detector API: ``Detector`` (torch) and ``OnnxDetector`` (an exported file) behind one ``BaseDetector``.

``Detector.from_checkpoint(path).predict(image_or_path_or_list)``: the path into the network is the evaluation's,
``preprocess.letterbox`` at the checkpoint's input size, then ``detector.inference.pipeline`` (normalisation,
network, optional flip, decode, inverse letterbox, threshold, class filter). :class:`OnnxDetector` runs a file
written by ``detector.inference.export.export_onnx`` with ONNX Runtime instead of torch, behind the same interface.
What they can be fed is ``detector.inference.sources``'s. ``track`` follows objects through a video with
``detector.inference.track.Tracker``. :func:`pick_device` is the one device rule (the demo's ``--device`` too).
"""
from __future__ import annotations

import itertools
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from detector.checkpoint import build_model, load_checkpoint, read_description
from detector.detections import DEFAULT_SCORE_THRESHOLD, Detections, FrameResult, Prediction
from detector.errors import DeviceError, ExportError, OptionError, QuantizationError
from detector.images import ImageInput, as_image
from detector.inference.cache import file_digest
from detector.inference.export import read_onnx_description
from detector.inference.fastest import (EXPORTED_RUNTIMES, check_runtime, loader, pick_runtime, runtime_network,
                                        runtime_version)
from detector.inference.pipeline import (TILE_OVERLAP, Passes, Precision, check_passes, check_precision,
                                         detect_scales, detect_tiles, forward_images, postprocess, resolve_classes,
                                         stack_detections, to_detections)
from detector.inference.quantize import int8_network
from detector.inference.runtime import open_session
from detector.inference.sources import iter_images
from detector.inference.track import BUFFER_FRAMES, Tracker, check_tracker_options
from detector.model.compiled import CompiledNetwork
from detector.model.fuse import fold_batchnorm, prepare_for_inference
from detector.preprocess import letterbox, to_chw_tensor, unletterbox_boxes


def pick_device(device: str | torch.device | None = "auto", onnxruntime: bool = False,
                name: str = "device") -> torch.device:
    """The one device rule: ``"auto"`` (or None) is the CPU when ONNX Runtime runs the network (``onnxruntime``:
    int8, ``runtime="onnxruntime"``), else CUDA when present, else the CPU; any other device is checked to exist
    (:class:`DeviceError` naming ``name``, e.g. ``--device``, and the fix)."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() and not onnxruntime else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise DeviceError(f"{name} {device}: not a torch device ({error}); use auto, cpu, cuda or cuda:N") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{name} {device}: CUDA is not available here; leave {name} out (the CPU is then used) or "
                          f"give {name} cpu")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"{name} {device}: this machine has {torch.cuda.device_count()} GPU(s), numbered from 0; "
                          f"give {name} cuda:0")
    return resolved




class BaseDetector(ABC):
    """What every backend shares: input checks, letterbox, thresholds, timing. Subclasses implement ``infer``.

    Attributes: ``class_names`` (``C`` names, index = label), ``input_size`` (square letterbox size),
    ``category_ids`` (the dataset's category id of each label, for results files; None when unknown).
    """

    class_names: list[str]
    input_size: int
    category_ids: list[int] | None = None
    max_detections: int = 100

    def predict(self, x: ImageInput | list[ImageInput], conf: float = DEFAULT_SCORE_THRESHOLD, flip: bool = False,
                classes: Sequence[int | str] | int | str | None = None, agnostic: bool = False,
                tile: int | None = None, overlap: float = TILE_OVERLAP, whole: bool = False,
                scales: Sequence[float] | None = None) -> Detections | list[Detections]:
        """Detect objects in one image or a list of images (run as one batch).

        ``x``: an ``[H, W, 3]`` uint8 RGB array, an image path, or a list of them. Returns :class:`Detections`
        (a list of them for a list) with ``score >= conf``, optionally only of ``classes`` (names or indices, or
        one of them). ``flip``: average with the mirrored image (test-time augmentation, as in evaluation).
        ``agnostic``: of detections of different classes in one place, keep the best (``suppress_duplicates``).
        ``tile``: cut each photo into overlapping tiles of this many photo pixels (at least 32; ``overlap``: the
        fraction of a tile its neighbour shares, in [0, 1)), each letterboxed to the input size and run as a batch,
        the boxes mapped back and the duplicates across tile borders merged (``pipeline.merge_tiles``); ``whole``:
        the whole photo letterboxed too. For small objects in large photos; every detection is kept up to ``conf``
        (no top-K over the photo). ``scales``: run the letterboxed input resized by each scale (e.g. ``[0.75, 1,
        1.25]``; sides rounded to multiples of 32), merged by soft-NMS as the paper's code does
        (``pipeline.detect_scales``; the torch network only). Scales, flip and tiles combine.
        """
        images = [as_image(item) for item in x] if isinstance(x, list) else [as_image(x)]
        if not images:
            raise ValueError("predict got an empty list of images")
        test = self.passes(flip, scales, tile, overlap, whole)
        detections, _, _ = self.detect(images, test)
        results = self.to_detections(detections, conf, resolve_classes(classes, self.class_names), agnostic)
        return results if isinstance(x, list) else results[0]

    def predict_many(self, source: str | Path | Iterable[ImageInput], batch_size: int = 8,
                     conf: float = DEFAULT_SCORE_THRESHOLD, flip: bool = False,
                     classes: Sequence[int | str] | int | str | None = None, agnostic: bool = False,
                     tile: int | None = None, overlap: float = TILE_OVERLAP, whole: bool = False,
                     scales: Sequence[float] | None = None) -> Iterator[Prediction]:
        """Detect objects in many images, ``batch_size`` at a time, yielding one :class:`Prediction` per image in
        order as soon as its batch is done (memory stays flat however many images ``source`` holds).

        ``source``: a folder (its image files, sorted), a glob pattern (``"photos/*.jpg"``), a video file (its
        frames, named by index), an image file, or any iterable of ``[H, W, 3]`` uint8 RGB arrays and image paths
        (read lazily: a generator is pulled one batch ahead at most). Other options as in :meth:`predict`.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        classes = resolve_classes(classes, self.class_names)
        test = self.passes(flip, scales, tile, overlap, whole)
        items = iter_images(source)
        while chunk := list(itertools.islice(items, batch_size)):
            detections, _, _ = self.detect([as_image(image) for _, image in chunk], test)
            for (name, _), result in zip(chunk, self.to_detections(detections, conf, classes, agnostic)):
                yield Prediction(name, result)

    def track(self, source: str | Path | Iterable[ImageInput], conf: float = DEFAULT_SCORE_THRESHOLD,
              low: float | None = None, buffer: int = BUFFER_FRAMES, batch_size: int = 8, flip: bool = False,
              classes: Sequence[int | str] | int | str | None = None,
              agnostic: bool = False) -> Iterator[Prediction]:
        """Follow objects through the frames of ``source`` (as :meth:`predict_many` reads it: a video file, a
        folder's images in name order, a glob, an iterable of frames), yielding one :class:`Prediction` per frame
        whose :class:`Detections` carry ``track_ids``: one id per object, stable from frame to frame.

        ByteTrack (``detector.inference.track``): boxes scoring ``>= conf`` are matched first and start tracks (above
        ``conf + 0.1``); boxes from ``low`` (None: 0.1, or ``conf`` if lower) up to ``conf`` only continue tracks
        already there, so a yielded box may score below ``conf``. A track unmatched for more than ``buffer`` frames
        ends; its id is never reused. Only boxes of confirmed tracks are yielded (a new object appears from its second
        frame, except in the first frame). One tracker per call: call again for another video. Raises ValueError for a
        threshold outside 0..1, ``low > conf`` or ``buffer < 1``.
        """
        check_tracker_options(conf, low, buffer, names=("conf", "low", "buffer", "new"))
        tracker = Tracker(high=conf, low=low, buffer=buffer)
        predictions = self.predict_many(source, batch_size, tracker.low, flip, classes, agnostic)
        return (Prediction(name, tracker.update(detections)) for name, detections in predictions)

    def predict_frame(self, image: np.ndarray, conf: float = DEFAULT_SCORE_THRESHOLD, classes: list[int] | None = None,
                      flip: bool = False, heatmap: bool = False, agnostic: bool = False,
                      passes: Passes | None = None) -> FrameResult:
        """One ``[H, W, 3]`` uint8 RGB frame, timed by stage; ``classes``: indices (see ``resolve_classes``).
        ``passes``: scales and tiles (:meth:`passes`; its flip replaces ``flip``); with them the letterboxing of
        the passes counts as ``decode``, and there is no heatmap."""
        start = time.perf_counter()
        test = passes or Passes(flip)
        if test.plain:
            batch, meta = self.prepare([image])
            prepared = time.perf_counter()
            detections, heat, model_time = self.infer(batch, meta, test.flip, heatmap)
        else:
            prepared = start
            detections, heat, model_time = self.detect([image], test, heatmap)
        detections = self.to_detections(detections, conf, classes, agnostic)[0]
        times = {"preprocess": prepared - start, "model": model_time}
        times["decode"] = time.perf_counter() - prepared - model_time
        return FrameResult(detections, heat, times)

    def passes(self, flip: bool = False, scales: Sequence[float] | None = None, tile: int | None = None,
                  overlap: float = TILE_OVERLAP, whole: bool = False,
                  flags: dict[str, str] | None = None) -> Passes:
        """The checked test-time passes (``pipeline.check_passes``; ``flags``: the names errors give the options);
        scales other than 1 refused where the network's input is fixed (an ONNX file exported before 2026-12-04)."""
        test = check_passes(flip, scales, tile, overlap, whole, flags)
        if tuple(test.scales) != (1.0,) and self.fixed_input:
            name = (flags or {}).get("scales", "scales")
            raise OptionError(f"{name}: this ONNX file takes {self.input_size} px inputs only (exported before "
                              "any-size files): export the checkpoint again, or run the checkpoint itself (tiles "
                              "work)")
        return test

    @property
    def fixed_input(self) -> bool:
        """Whether the network takes only ``input_size`` inputs (no test scales)."""
        return False

    def detect(self, images: list[np.ndarray], test: Passes,
               heatmap: bool = False) -> tuple[dict[str, torch.Tensor], np.ndarray | None, float]:
        """RGB uint8 images through ``test``'s passes -> (batched ``postprocess``-style dict in original pixels, the
        first image's heatmap for a plain pass if asked, seconds spent in the network)."""
        if test.plain:
            return self.infer(*self.prepare(images), test.flip, heatmap)
        if heatmap:
            raise ValueError("the heatmap shows one pass of the network: leave out tiles and test scales to draw it")
        model_time = 0.0

        def run(batch: torch.Tensor, meta: torch.Tensor) -> dict[str, torch.Tensor]:
            nonlocal model_time
            detections, _, seconds = self.infer(batch, meta, test.flip)
            model_time += seconds
            return detections

        if test.tile is None:
            return detect_scales(run, *self.prepare(images), test.scales, self.max_detections), None, model_time
        found = [detect_tiles(run, image, test, self.input_size, self.max_detections) for image in images]
        return stack_detections(found), None, model_time

    def prepare(self, images: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB uint8 images -> letterboxed ``[B, 3, S, S]`` uint8 batch and ``meta [B, 4]`` float32."""
        boxed = [letterbox(image, self.input_size) for image in images]
        batch = torch.stack([to_chw_tensor(image) for image, _ in boxed])
        meta = torch.from_numpy(np.stack([m for _, m in boxed]))
        return batch, meta

    @abstractmethod
    def infer(self, batch: torch.Tensor, meta: torch.Tensor, flip: bool = False,
              heatmap: bool = False) -> tuple[dict[str, torch.Tensor], np.ndarray | None, float]:
        """Prepared ``[B, 3, S, S]`` uint8 batch and ``meta [B, 4]`` -> (``postprocess``-style dict in original
        pixels, the first image's ``[C, h, w]`` heatmap probabilities or None, seconds spent in the network)."""

    def to_detections(self, detections: dict[str, torch.Tensor], conf: float, classes: list[int] | None,
                      agnostic: bool = False) -> list[Detections]:
        """Batched ``postprocess`` output -> one :class:`Detections` per image (``pipeline.to_detections``)."""
        return to_detections(detections, self.class_names, conf, classes, agnostic)


class Detector(BaseDetector):
    """A CenterNet in eval mode (torch backend).

    Args:
        model: a ``CenterNet`` (its ``stride`` is used for decoding).
        class_names: ``C`` names, index = label.
        input_size: the square letterbox size the model was trained at (a multiple of 32).
        max_detections: top-K of decoding, before the score threshold.
        nms_iou: optional class-wise NMS after decoding (None: the peaks are the NMS, as in evaluation's default).
        precision: ``"fp32"`` or ``"bf16"`` (bfloat16 autocast: ~3x faster on CPUs with AVX512-BF16/AMX, see
            bench/RESULTS.md; an error where the device lacks it). Check
            ``detector.inference.pipeline.bf16_supported``. ``"int8"``: the network quantized by ONNX Runtime's
            quantizer on the ``calibration`` images and run by ``runtime`` (ONNX Runtime or OpenVINO; CPU only, needs
            onnxruntime; ``detector.inference.quantize``); letterbox, flip, heatmaps and decoding stay the same.
        prepare: run a copy with BatchNorm folded into the convolutions and channels_last weights
            (``prepare_for_inference``; same outputs to ~1e-5, faster). False: run ``model`` itself in eval mode.
        category_ids: the dataset's category id of each label (None: the labels ``0..C-1`` themselves).
        compile: run the network through ``torch.compile`` with frozen weights (``detector.model.compiled``):
            the first image of each input size compiles (tens of seconds on a small CPU, cached on disk), later
            ones run 0-11% faster (bench/RESULTS.md). Falls back to eager with a one-line note where it cannot.
        calibration: with ``precision="int8"``, a few training images (a folder, a glob, or images; up to 32 are
            read) to calibrate the activation ranges on.
        runtime: what runs the network: ``"torch"``, ``"onnxruntime"`` (the network exported, any input size,
            and run by ONNX Runtime on the CPU: about 1.2x as fast as torch on this project's 2-core CPU,
            bench/RESULTS.md; outputs equal to ~1e-5), ``"openvino"`` (the same file in OpenVINO, fp32), or
            ``"auto"`` (the fastest installed for the device and precision,
            ``detector.inference.fastest.pick_runtime``: the default of :meth:`from_checkpoint`; for int8 OpenVINO
            when installed, else ONNX Runtime). None (the default here): torch, or ``"auto"`` for int8. int8 runs
            in ONNX Runtime or OpenVINO; bf16 and ``compile`` need torch.
        cache_key: the checkpoint's digest (``cache.file_digest``; :meth:`from_checkpoint` gives it): the network
            exported for ONNX Runtime or OpenVINO is kept in the cache of exported networks
            (``detector.inference.cache``) and read from it on the next build; None: exported every time.
    """

    def __init__(self, model: torch.nn.Module, class_names: Sequence[str], input_size: int,
                 max_detections: int = 100, nms_iou: float | None = None, precision: Precision | str = "fp32",
                 prepare: bool = True, category_ids: Sequence[int] | None = None, compile: bool = False,
                 calibration: str | Path | Iterable[ImageInput] | None = None, runtime: str | None = None,
                 cache_key: str | None = None):
        if runtime is None:  # a module given directly: torch, unless it is to be quantized
            runtime = "auto" if precision == "int8" else "torch"
        check_runtime(runtime)
        if precision != "int8":
            check_precision(precision, next(model.parameters()).device)
        runtime = pick_runtime(runtime, next(model.parameters()).device, precision, compile)
        exported = precision == "int8" or runtime in EXPORTED_RUNTIMES
        if exported and (compile or precision == "bf16"):
            raise ValueError("compile=True and precision='bf16' run the torch network; precision='int8' and "
                             f"runtime={runtime!r} run the exported network: pick one")
        # the torch copy runs nothing when another runtime runs the network: not prepared (a quicker build)
        self.model = prepare_for_inference(model) if prepare and not exported else model.eval()
        if compile:
            self.model = CompiledNetwork(self.model)
        if precision == "int8":
            runtime_version(runtime)  # a missing runtime's error before the quantization's seconds
            self.network = int8_network(fold_batchnorm(model), input_size, calibration,
                                        loader(runtime, model.stride, torch.get_num_threads()))
        elif runtime in EXPORTED_RUNTIMES:
            self.network = runtime_network(model, input_size, runtime, torch.get_num_threads(), cache_key)
        else:
            self.network = self.model
        self.runtime = runtime
        self.precision = precision
        self.class_names = list(class_names)
        self.category_ids = list(range(len(self.class_names)) if category_ids is None else category_ids)
        self.input_size = input_size
        self.max_detections = max_detections
        self.nms_iou = nms_iou

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto", runtime: str = "auto",
                        **kwargs) -> Detector:
        """Rebuild the network from a checkpoint alone (``weights_only`` loading; no config, no download) on
        ``device`` (:func:`pick_device`: by default CUDA when present, else the CPU; the CPU for int8,
        ``runtime="onnxruntime"`` and ``"openvino"``), run by ``runtime`` (by default the fastest installed for the
        device, see the constructor); a network exported for ONNX Runtime or OpenVINO is cached per checkpoint
        content (``detector.inference.cache``). ``kwargs`` as the constructor's."""
        check_runtime(runtime)
        device = pick_device(device, kwargs.get("precision") == "int8" or runtime in EXPORTED_RUNTIMES)
        runtime = pick_runtime(runtime, device, kwargs.get("precision", "fp32"), kwargs.get("compile", False))
        checkpoint = load_checkpoint(path)
        info = read_description(checkpoint)
        exported = runtime in EXPORTED_RUNTIMES and kwargs.get("precision", "fp32") == "fp32"
        return cls(build_model(checkpoint, name=path).to(device), info.class_names, info.input_size,
                   **{"category_ids": info.category_ids, "runtime": runtime,
                      "cache_key": file_digest(path) if exported else None, **kwargs})

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def infer(self, batch: torch.Tensor, meta: torch.Tensor, flip: bool = False,
              heatmap: bool = False) -> tuple[dict[str, torch.Tensor], np.ndarray | None, float]:
        """Network and decoding (``forward_images`` + ``postprocess``) on a prepared batch.

        Returns the ``postprocess`` dict (``boxes [B, K, 4]`` original pixels, ``scores``, ``labels``), the first
        image's ``[C, h, w]`` heatmap probabilities if asked for, and the seconds spent in the network.
        """
        start = time.perf_counter()
        precision = "fp32" if self.precision == "int8" else self.precision  # int8: the session's own
        outputs = forward_images(self.network, batch.to(self.device), flip, precision)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        model_time = time.perf_counter() - start
        detections = postprocess(outputs, meta.to(self.device), self.model.stride, self.max_detections, self.nms_iou)
        heat = outputs["heatmap"][0].float().sigmoid().cpu().numpy() if heatmap else None
        return detections, heat, model_time


def check_input_size(input_size: int | None) -> None:
    """``ValueError`` unless ``input_size`` is None or a positive multiple of 32 (the network's coarsest stride)."""
    if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, int)
                                   or input_size < 32 or input_size % 32):
        raise ValueError(f"input_size {input_size!r}: the network needs a multiple of 32 (e.g. 320, 512, 640)")


class OnnxDetector(BaseDetector):
    """A model exported by ``detector.inference.export.export_onnx``, run with onnxruntime on the CPU.

    The class names and the training input size come from the file's metadata. Decoding runs inside the graph;
    this class only letterboxes, maps the boxes back through ``unletterbox_boxes`` and thresholds. No flip, no
    heatmap; tiles work, and so do test scales on an any-size file. ``input_size``: the square letterbox size to run
    at (None: the training size in the metadata); any multiple of 32 (:class:`ExportError` for a file exported
    before 2026-12-04, whose graph has one fixed size).
    ``precision``: the file's, ``"fp32"`` or ``"int8"`` (written by ``export --precision int8``). ``threads``:
    onnxruntime's intra-op threads (None: its default, one per core); they sleep rather than spin while waiting.
    """

    def __init__(self, path: str | Path, threads: int | None = None, input_size: int | None = None):
        path = Path(path)
        check_input_size(input_size)
        if not path.is_file():
            raise ExportError(f"ONNX model {path} does not exist")
        try:
            self.session = open_session(path, threads)
        except (QuantizationError, MemoryError):
            raise
        except Exception as error:  # onnxruntime's InvalidProtobuf, Fail, ...: an empty, cut or foreign file
            reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
            raise ExportError(f"{path} is not an ONNX model ONNX Runtime can load ({reason[:200]}); export one with "
                              "centernet export --format onnx") from error
        info = read_onnx_description(self.session.get_modelmeta().custom_metadata_map, path)
        self.class_names = list(info["class_names"])
        self.category_ids = info.get("category_ids")  # absent from files exported before 2026-12-01
        self.training_size = info["input_size"]
        self.input_size = self.training_size if input_size is None else input_size
        self.precision = info.get("precision", "fp32")  # files exported before int8 were fp32
        fixed = self.session.get_inputs()[0].shape[2:]  # [H, W]: names in an any-size graph, numbers in an older one
        if any(isinstance(side, int) and side != self.input_size for side in fixed):
            raise ExportError(f"{path} runs at {fixed[0]}x{fixed[1]} only (exported before any-size ONNX files): "
                              f"leave input_size out, or export the checkpoint again")

    @property
    def fixed_input(self) -> bool:
        return any(isinstance(side, int) for side in self.session.get_inputs()[0].shape[2:])

    def infer(self, batch: torch.Tensor, meta: torch.Tensor, flip: bool = False,
              heatmap: bool = False) -> tuple[dict[str, torch.Tensor], np.ndarray | None, float]:
        if flip or heatmap:
            raise ValueError("the ONNX backend supports neither flip test nor heatmaps; use the torch backend")
        start = time.perf_counter()
        boxes, scores, labels = self.session.run(["boxes", "scores", "labels"], {"images": batch.numpy()})
        model_time = time.perf_counter() - start
        boxes = unletterbox_boxes(torch.from_numpy(boxes), meta)
        detections = {"boxes": boxes, "scores": torch.from_numpy(scores), "labels": torch.from_numpy(labels)}
        return detections, None, model_time
