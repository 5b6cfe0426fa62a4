"""End-to-end latency per image: letterbox + normalise + network + decode + boxes back to original pixels.

Batch 1, a 640x480 random image, 80 classes, random weights (time does not depend on them). Our models, the
paper's and torchvision's run in one process and are interleaved round-robin, one call each per repetition, so the
noise of a shared machine hits them alike; the peer (YOLOv8n) runs in a process of its own, as its library resets
torch's threads (below). The table gives each one's median and its ratio to the paper's plain network (``deconv``
neck, no DCN, fp32).

- ``ours``: the default network (``neck="lean"``) as ``Detector`` runs it: ``prepare_for_inference`` (BatchNorm
  folded, channels_last), ``inference.detect`` in fp32 or bf16 autocast.
- ``paper``: the paper's plain network without DCN (``neck="deconv"``) built in this project: ``plain`` is the
  eval-mode module as is (NCHW, BatchNorm unfolded: how it ran before issue 7, the reference of the ratios), ``prepared`` gets the same
  inference preparation as ours.
- ``body``: the ResNet-18 body alone (network only, prepared), the floor our whole network can approach; the
  ``(network only)`` rows of the paper's network and ours compare it like with like (no letterbox, no decode).
- ``compiled`` (with ``--compile``): ``detector.model.compiled.CompiledNetwork`` (``Detector(compile=True)``), for
  ours, the prepared paper network and the body; compiling happens during the warm-up and is timed apart.
- torchvision ``ssdlite320_mobilenet_v3_large`` and ``fasterrcnn_mobilenet_v3_large_320_fpn`` (random weights,
  81 classes with background), image in, boxes in original pixels out; they resize to 320 themselves, so their
  time does not depend on ``--sizes``.
- ``ONNX Runtime``: ours exported by ``detector.inference.export.export_onnx`` (decoding inside the graph), run
  by ``OnnxDetector`` (letterbox, session, boxes back to original pixels), fp32 and int8
  (``detector.inference.quantize``: the network statically quantized, QDQ, per-channel; calibrated on random
  images here, which changes no time). Skipped with a note without onnxruntime.
- ``Detector(...)`` rows: the network exported in memory (any input size) and run by ONNX Runtime or OpenVINO, fp32
  and int8 (quantized in memory as ``Detector(precision="int8")`` does), letterbox and decoding the torch ones, as
  ``Detector.predict`` runs them.
- ``YOLOv8n``: the peer, ultralytics' ``YOLO("yolov8n.yaml")`` (random weights, no download) through its own
  ``predict`` at ``imgsz`` = the size (its letterbox pads 640x480 to 512x384, not 512x512), fp32 and under bf16
  autocast, **timed in its own process** (``--peer yolov8n``, started by this script after the others' round for
  each size; its times come back in a json file and its rows say "own process"). ultralytics' device selection sets
  torch to ``min(8, cpu_count - 1)`` threads on its first ``predict`` and its import sets OpenCV to one thread; in
  one process with the others that put every torch row timed after it on 1 thread of 2 (the wrong table of
  2026-12-01, bench/RESULTS.md). The peer process sets both back to this run's counts after ultralytics' setup (its
  own choice is printed in a note) and checks them around every call like the main process. Its ratios divide by
  the main process's paper median: runs apart, so less robust to load than the interleaved ones.
  ultralytics is for this benchmark only, never a dependency of the package; the rows are skipped with a note when
  it is missing. Install it without letting pip touch torch, torchvision or OpenCV:
  ``pip install --no-deps ultralytics`` (then ``python -c "import ultralytics"``; add only what that import asks
  for, also with ``--no-deps``).
- ``decode``: ``pipeline.postprocess`` alone on our 80-class output (its share of ``ours`` is printed).

Runtime candidates (issue 24), each a row, added by ``--candidates`` (``all`` for every group):

- ``ort``: ONNX Runtime session options on ours' fp32 and int8 files, each against the package's own session
  (``runtime.session_options``: level ALL, threads that sleep, sequential): graph optimization level EXTENDED,
  ``session.intra_op.allow_spinning`` 1, parallel execution mode (with ``--threads`` more inter-op threads, said in
  the row), and the optimized model saved once and loaded with optimizations off.
- ``openvino``: OpenVINO (``pip install openvino``; a note without it) running ours' exported files in place of the
  ONNX Runtime session, latency hint, ``--threads`` inference threads (checked): fp32 with the fp32 precision hint;
  fp32 with the plugin's own precision (bf16 on CPUs with bfloat16 units: not fp32, said in the row); int8 from our
  ONNX Runtime QDQ file (the same quantization and calibration as the ONNX Runtime int8 row);
  ``Detector(runtime='openvino')``.
- ``torch``: ours in torch without channels_last (BatchNorm folded, NCHW), and traced, ``torch.jit.freeze`` and
  ``torch.jit.optimize_for_inference`` (which also moves convolutions to oneDNN/MKLDNN layout: the mkldnn row).
  ``torch.compile`` stays ``--compile``; skipped with a note where no C++ compiler is found (inductor needs one).
- ``yolo-onnx``: in the peer process, YOLOv8n exported by ultralytics to ONNX (random init, offline, static
  size x size) and run by ONNX Runtime with the package's session options and ``--threads`` (checked), fp32 and int8
  by the same static quantization as ours (``quantize.quantize_onnx``: QDQ, per-channel, min-max on the same 8
  random calibration images, the last convolution of each head branch and the box decoding kept float32, as ours'),
  our letterbox at size x size, ultralytics' ``non_max_suppression`` with its ``predict`` defaults.

No runner may change another's threads: ``measure`` checks torch's intra-op thread count (``--threads``) and
OpenCV's (the letterbox resizes with it) before and after every call, warm-up included, and stops with the runner's
name if one changed them. Every ONNX Runtime session is checked at build time to have ``--threads`` intra-op threads,
as torch has.

OpenMP threads spin while waiting; on a machine whose cores are busy with other work a spinning thread waits for
a descheduled one and a 2-thread forward gets ~5x slower (ResNet-18 at 512: 1.08 s instead of 0.2 s). The script
sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is set already.

``--ablation`` instead times the network alone (no letterbox, no decode) for the steps of issue 7 one by one:
the lean network with the paper's full 3x3 heads or depthwise-separable ones, NCHW or channels_last, BatchNorm
kept or folded, fp32 or bf16.

Two ratios per row, like with like: ``x plain`` against the paper's network as its own code runs it (fp32, NCHW,
BatchNorm unfolded; the targets of issue 16 are against it: design and preparation together) and ``x prepared``
against the paper's network with the same preparation and precision as the row (the design alone; for compiled rows
the compiled paper network). Network-only rows are compared with the paper's network-only rows.

    python bench/latency.py [--sizes 512 384] [--repeats 20] [--threads 2] [--compile] [--ablation] [--no-peer]
                            [--candidates ort openvino torch yolo-onnx | all]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from torchvision.models import detection

from detector.inference.export import export_onnx
from detector.inference.pipeline import bf16_supported, detect, forward_images, postprocess
from detector.model import CenterNet, ResNet18Backbone
from detector.model.compiled import CompiledNetwork
from detector.model.fuse import fold_batchnorm, prepare_for_inference
from detector.model.head import CenterNetHead
from detector.preprocess import letterbox, normalize, to_chw_tensor

NUM_CLASSES = 80
PEER_NOTE = "own process"
CANDIDATES = ("ort", "openvino", "torch", "yolo-onnx")
CALIBRATION_IMAGES = 8
NAME_WIDTH = 74  # the longest row name (the candidates')


def thread_state() -> dict[str, int]:
    """The thread counts one runner could change under the others: torch's intra-op pool and OpenCV's."""
    return {"torch": torch.get_num_threads(), "opencv": cv2.getNumThreads()}


def check_threads(expected: dict[str, int], where: str) -> None:
    """Stop the benchmark, naming ``where``, if the thread counts are not ``expected`` (a row timed on other
    threads than the rest would be a wrong row, as YOLOv8n's ``predict`` made every torch row after it in 2026-12)."""
    now = thread_state()
    if now != expected:
        changed = ", ".join(f"{pool} {expected[pool]} -> {now[pool]}" for pool in now if now[pool] != expected[pool])
        raise RuntimeError(f"threads changed {where}: {changed}; a runner must leave torch's and OpenCV's threads "
                           "as it found them (time a peer that resets them in its own process, see --peer)")


def check_onnx_threads(session, threads: int, name: str) -> None:
    """An ONNX Runtime session must run on ``threads`` intra-op threads, as torch does (0 would mean one per core)."""
    count = session.get_session_options().intra_op_num_threads
    if count != threads:
        raise RuntimeError(f"{name}: ONNX Runtime session has {count} intra-op threads, torch {threads}; build it "
                           f"with threads={threads}")


def centernet_runner(model: torch.nn.Module, size: int, precision: str) -> Callable[[np.ndarray], object]:
    def run(image: np.ndarray):
        boxed, meta = letterbox(image, size)
        return detect(model, to_chw_tensor(boxed)[None], torch.from_numpy(meta)[None], precision=precision)
    return run


def body_runner(body: torch.nn.Module, size: int, precision: str) -> Callable[[np.ndarray], object]:
    x = normalize(torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8))

    @torch.inference_mode()
    def run(image: np.ndarray):
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            return body(x)
    return run


def torchvision_runner(model: torch.nn.Module) -> Callable[[np.ndarray], object]:
    @torch.inference_mode()
    def run(image: np.ndarray):
        return model([torch.from_numpy(image).permute(2, 0, 1).float() / 255])
    return run


def decode_runner(model: torch.nn.Module, size: int) -> Callable[[np.ndarray], object]:
    images = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8)
    with torch.inference_mode():
        outputs = forward_images(model, images)
    meta = torch.tensor([[size / 640, size / 640, 640.0, 480.0]])

    @torch.inference_mode()
    def run(image: np.ndarray):
        return postprocess(outputs, meta, model.stride)
    return run


def onnx_runners(model: torch.nn.Module, size: int, folder: str,
                 threads: int) -> dict[str, Callable[[np.ndarray], object]]:
    """Ours exported (``export_onnx``) and quantized (``detector.inference.quantize``, calibrated on 8 random
    images: the ranges do not change the time), run by ``OnnxDetector`` with ``threads`` (torch's count, checked);
    {} without
    onnxruntime."""
    try:
        from detector.inference.detectors import OnnxDetector
        from detector.inference.quantize import quantize_onnx
        from detector.inference.runtime import require_onnxruntime
        require_onnxruntime()
    except Exception as error:  # noqa: BLE001  (the rows are optional)
        print(f"note: no ONNX Runtime rows ({error})")
        return {}
    fp32 = export_onnx(model, Path(folder) / "ours_fp32.onnx", [str(i) for i in range(NUM_CLASSES)], size)
    int8 = quantize_onnx(fp32, Path(folder) / "ours_int8.onnx", calibration_images(size))
    runners = {}
    for precision, path in (("fp32", fp32), ("int8", int8)):
        detector = OnnxDetector(path, threads=threads)
        check_onnx_threads(detector.session, threads, f"ours (lean) ONNX Runtime {precision}")
        runners[f"ours (lean) ONNX Runtime {precision}"] = exported_runner(detector)
    return runners


def calibration_images(size: int) -> list[np.ndarray]:
    """The calibration of every int8 row, ours and the peer's: 8 random ``[1, 3, size, size]`` uint8 images from a
    fixed seed (the ranges do not change the time)."""
    generator = np.random.default_rng(0)
    return [generator.integers(0, 256, (1, 3, size, size), dtype=np.uint8) for _ in range(CALIBRATION_IMAGES)]


def exported_runner(detector) -> Callable[[np.ndarray], object]:
    """An ``OnnxDetector`` (whatever runs its ``session``) as a runner: letterbox, the graph, boxes back."""
    def run(image: np.ndarray):
        batch, meta = detector.prepare([image])
        return detector.infer(batch, meta)
    return run


# runtime candidates (--candidates) ----------------------------------------------------------------------------------

def ort_variant_options(variant: str, threads: int, folder: str, tag: str):
    """The package's session options (``runtime.session_options``) with one thing changed, by ``variant``."""
    import onnxruntime

    from detector.inference.runtime import session_options
    options = session_options(threads)
    if variant == "level EXTENDED":
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    elif variant == "spinning on":
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    elif variant == "parallel execution":
        options.execution_mode = onnxruntime.ExecutionMode.ORT_PARALLEL
        options.inter_op_num_threads = threads
    elif variant == "saved optimized model":
        options.optimized_model_filepath = str(Path(folder) / f"{tag}_optimized.onnx")
    return options


ORT_VARIANTS = ("level EXTENDED", "spinning on", "parallel execution", "saved optimized model")


def ort_variant_runners(folder: str, threads: int) -> dict[str, Callable[[np.ndarray], object]]:
    """Ours' fp32 and int8 files (written by ``onnx_runners``) under each of :data:`ORT_VARIANTS`."""
    import onnxruntime

    from detector.inference.detectors import OnnxDetector
    from detector.inference.runtime import session_options
    runners = {}
    for precision in ("fp32", "int8"):
        path = Path(folder) / f"ours_{precision}.onnx"
        if not path.is_file():
            return {}
        for variant in ORT_VARIANTS:
            detector = OnnxDetector(path, threads=threads)
            tag = f"ours_{precision}"
            options = ort_variant_options(variant, threads, folder, tag)
            detector.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            if variant == "saved optimized model":  # loaded again, optimizations off: what a cache of it would do
                options = session_options(threads)
                options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
                optimized = Path(folder) / f"{tag}_optimized.onnx"
                detector.session = onnxruntime.InferenceSession(str(optimized), options,
                                                                providers=["CPUExecutionProvider"])
            name = f"ours (lean) ONNX Runtime {precision}, {variant}"
            if variant == "parallel execution":
                name += f" (+{threads} inter-op threads)"
            check_onnx_threads(detector.session, threads, name)
            runners[name] = exported_runner(detector)
    return runners


class OpenVinoSession:
    """An OpenVINO compiled model behind ``session.run(output_names, feeds)``, as ``OnnxDetector`` calls it."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = {output.get_any_name(): value for output, value in self.request.infer(feeds).items()}
        return [results[name] for name in names]


def check_openvino_threads(compiled, threads: int, name: str) -> None:
    """An OpenVINO compiled model must run on ``threads`` inference threads, as torch does."""
    count = compiled.get_property("INFERENCE_NUM_THREADS")
    if count != threads:
        raise RuntimeError(f"{name}: OpenVINO compiled with {count} inference threads, torch {threads}")


def openvino_runners(folder: str, threads: int) -> dict[str, Callable[[np.ndarray], object]]:
    """Ours' exported files (written by ``onnx_runners``) run by OpenVINO (see the module docstring); {} and a
    note without it."""
    try:
        from detector.inference.openvino_runtime import compile_openvino, require_openvino
        openvino = require_openvino()
        from detector.inference.detectors import OnnxDetector
    except Exception as error:  # noqa: BLE001  (the rows are optional)
        print(f"note: no OpenVINO rows ({error})")
        return {}
    own = openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    runners = {}
    for label, file, precision in (("fp32", "ours_fp32.onnx", "f32"),
                                   (f"fp32 file, its own precision ({own})", "ours_fp32.onnx", None),
                                   ("int8 (our ONNX Runtime QDQ file)", "ours_int8.onnx", "f32")):
        path = Path(folder) / file
        if not path.is_file():
            continue
        detector = OnnxDetector(path, threads=threads)  # its metadata and letterbox; OpenVINO runs the graph
        compiled = compile_openvino(path, threads, precision)
        name = f"ours (lean) OpenVINO {label}"
        check_openvino_threads(compiled, threads, name)
        detector.session = OpenVinoSession(compiled)
        runners[name] = exported_runner(detector)
    print(f"note: OpenVINO {openvino.__version__}; its CPU plugin's own inference precision here: {own}")
    return runners


class FrozenNetwork(torch.nn.Module):
    """A CenterNet traced, ``torch.jit.freeze``-d and ``torch.jit.optimize_for_inference``-d, returning its dict
    (``detect`` can run it)."""

    def __init__(self, model: torch.nn.Module, size: int):
        super().__init__()
        from detector.inference.runtime import NetworkOutputs
        with torch.no_grad():
            traced = torch.jit.trace(NetworkOutputs(model).eval(), normalize(torch.zeros(1, 3, size, size,
                                                                                        dtype=torch.uint8)))
            self.script = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        self.stride = model.stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(("heatmap", "offset", "size"), self.script(x)))


def torch_candidate_runners(size: int) -> dict[str, Callable[[np.ndarray], object]]:
    """Ours in torch with other settings than ``prepare_for_inference`` (see the module docstring)."""
    network = CenterNet(NUM_CLASSES, neck="lean").eval()
    runners = {"ours (lean) fp32 NCHW, BN folded": centernet_runner(fold_batchnorm(network), size, "fp32")}
    try:
        frozen = FrozenNetwork(prepare_for_inference(network), size)
    except Exception as error:  # noqa: BLE001  (the row is optional)
        print(f"note: no TorchScript frozen row ({type(error).__name__}: {str(error).splitlines()[0][:160]})")
    else:
        runners["ours (lean) fp32 TorchScript frozen, optimize_for_inference"] = centernet_runner(frozen, size,
                                                                                                   "fp32")
    return runners


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile's inductor would use on the CPU (``$CXX``, else g++, c++, clang++), or None."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return next((found for name in names if (found := shutil.which(name))), None)


def detector_onnxruntime_runner(size: int, threads: int, runtimes: tuple[str, ...] = ("torch", "onnxruntime"),
                                precision: str = "fp32") -> dict[str, Callable]:
    """``Detector(..., runtime=...)`` for each of ``runtimes``, as ``Detector.predict`` runs it (letterbox and
    decoding the torch ones): the network exported in memory and run by ONNX Runtime or OpenVINO (their threads
    checked to be ``threads``: a session, a compiled model take torch's count when built), or torch. ``precision``
    ``"int8"``: the network quantized in memory, calibrated on 8 random images (which changes no time). A note and no
    row for a runtime that is not installed."""
    from detector.inference.detectors import Detector

    names, network = [str(i) for i in range(NUM_CLASSES)], CenterNet(NUM_CLASSES, neck="lean")
    generator = np.random.default_rng(0)
    calibration = ([generator.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(CALIBRATION_IMAGES)]
                   if precision == "int8" else None)
    runners = {}
    for runtime in runtimes:
        try:
            detector = Detector(copy.deepcopy(network), names, size, precision=precision, calibration=calibration,
                                runtime=runtime)
        except Exception as error:  # noqa: BLE001  (the rows of the extras are optional)
            print(f"note: no Detector(precision={precision!r}, runtime={runtime!r}) row ({error})")
            continue
        name = f"ours (lean) {precision}, Detector(runtime='{runtime}')"
        if runtime == "onnxruntime":
            check_onnx_threads(detector.network.session, threads, name)
        if runtime == "openvino":
            check_openvino_threads(detector.network.compiled, threads, name)
        runners[name] = lambda image, detector=detector: detector.predict(image, conf=0.0)
    return runners


def yolov8n_runners(size: int) -> tuple[dict[str, Callable[[np.ndarray], object]], str]:
    """ultralytics YOLOv8n from its model YAML (random weights, no download), ``predict`` at ``imgsz=size`` (its own
    letterbox, which pads 640x480 to 512x384 only, its NMS, boxes in original pixels), fp32 and under bf16
    autocast, and a note; ({}, the reason) when ultralytics is not installed (see the module docstring).

    For the peer process only (``--peer yolov8n``): importing ultralytics sets OpenCV to one thread, and its first
    ``predict`` sets torch's threads (``select_device``). One ``predict`` is run here so that this setup is done;
    the note reports the counts it chose, and the caller sets its own afterwards."""
    before = thread_state()
    try:
        from ultralytics import YOLO
    except ImportError:
        return {}, ("ultralytics is not installed: no YOLOv8n rows (pip install --no-deps ultralytics, see the "
                    "docstring)")
    model = YOLO("yolov8n.yaml")
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    model.predict(image, imgsz=size, device="cpu", verbose=False)
    chosen = thread_state()
    note = (f"YOLOv8n timed in its own process; ultralytics' own setup chose torch {chosen['torch']} thread(s) "
            f"(it had {before['torch']}) and OpenCV {chosen['opencv']} (it had {before['opencv']}); set back to "
            f"torch {before['torch']}, OpenCV {before['opencv']} for the timing")

    def run(image: np.ndarray, precision: str):
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            return model.predict(image[..., ::-1], imgsz=size, device="cpu", verbose=False)  # it expects BGR
    runners = {f"YOLOv8n (ultralytics) fp32, {PEER_NOTE}": lambda image: run(image, "fp32")}
    if bf16_supported("cpu"):
        runners[f"YOLOv8n (ultralytics) bf16, {PEER_NOTE}"] = lambda image: run(image, "bf16")
    return runners, note


def yolo_quantized_nodes(graph) -> list[str]:
    """The nodes of ultralytics' YOLOv8n ONNX graph quantized as ours are (``quantize.quantized_nodes``): the
    network (``/model.N/``), but the last convolution of each head branch (``cv2.i.2``, ``cv3.i.2``) and the box
    decoding after them (the rest of the Detect head, ``/model.22/`` but its ``cv`` branches), kept float32."""
    head = "/model.22/"
    names = []
    for node in graph.node:
        if not node.name.startswith("/model."):
            continue
        branch_inside = node.name.startswith(head + "cv") and ("/conv/" in node.name or "/act/" in node.name)
        if node.name.startswith(head) and not branch_inside:
            continue
        names.append(node.name)
    return names


def yolov8n_onnx_runners(size: int, threads: int, folder: str) -> tuple[dict[str, Callable], str]:
    """YOLOv8n exported by ultralytics to ONNX at size x size and run by ONNX Runtime, fp32 and int8 (the module
    docstring's ``yolo-onnx``); ({}, the reason) without ultralytics or onnxruntime. For the peer process only (the
    export changes torch's threads; the caller sets its own afterwards)."""
    try:
        from ultralytics import YOLO
        from ultralytics.utils.nms import non_max_suppression

        from detector.inference.quantize import quantize_onnx
        from detector.inference.runtime import open_session, require_onnxruntime
        require_onnxruntime()
    except Exception as error:  # noqa: BLE001  (the rows are optional)
        return {}, f"no YOLOv8n ONNX Runtime rows ({error})"
    from detector.preprocess import unletterbox_boxes
    here = os.getcwd()
    os.chdir(folder)  # ultralytics writes the file beside the model's name, in the working directory
    try:
        fp32 = Path(folder) / YOLO("yolov8n.yaml").export(format="onnx", imgsz=size, simplify=False, dynamic=False,
                                                          opset=17, device="cpu", verbose=False)
    finally:
        os.chdir(here)
    calibration = [(batch / 255).astype(np.float32) for batch in calibration_images(size)]
    int8 = quantize_onnx(fp32, Path(folder) / "yolov8n_int8.onnx", calibration, select=yolo_quantized_nodes)
    runners = {}
    for precision, path in (("fp32", fp32), ("int8", int8)):
        session = open_session(path, threads)
        name = f"YOLOv8n ONNX Runtime {precision}, {PEER_NOTE}"
        check_onnx_threads(session, threads, name)

        def run(image: np.ndarray, session=session):
            boxed, meta = letterbox(image, size)
            x = (boxed.transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)
            found = non_max_suppression(torch.from_numpy(session.run(None, {"images": x})[0]))[0]
            return unletterbox_boxes(found[:, :4], torch.from_numpy(meta)[None]), found[:, 4], found[:, 5]
        runners[name] = run
    return runners, f"YOLOv8n ONNX: ultralytics' export, {len(yolo_quantized_nodes(_graph(fp32)))} nodes quantized"


def _graph(path: Path):
    import onnx
    return onnx.load(str(path)).graph


def run_peer(size: int, repeats: int, warmup: int, threads: int, output: str, onnx: bool = False) -> None:
    """The peer process (``--peer yolov8n``): ultralytics set up, torch's and OpenCV's threads set back to this
    run's (``threads`` and OpenCV's count before ultralytics' import), the YOLOv8n rows (with ``onnx`` also its ONNX
    Runtime fp32 and int8 rows) timed with the same checks as the main process; their times (seconds) and the note
    written to ``output`` as json."""
    torch.set_num_threads(threads)
    expected = thread_state()
    runners, note = yolov8n_runners(size)
    with tempfile.TemporaryDirectory() as folder:
        if onnx and runners:
            more, onnx_note = yolov8n_onnx_runners(size, threads, folder)
            runners.update(more)
            note = f"{note}; {onnx_note}"
        torch.set_num_threads(expected["torch"])
        cv2.setNumThreads(expected["opencv"])
        image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        times = measure(runners, image, repeats, warmup, expected) if runners else {}
    Path(output).write_text(json.dumps({"times": times, "note": note}))


def peer_times(size: int, repeats: int, warmup: int, threads: int, onnx: bool = False) -> dict[str, list[float]]:
    """Start this script as the peer process for ``size``, print its note, return its times; a failure there stops
    this run with the peer's last lines."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "peer.json"
        command = [sys.executable, __file__, "--peer", "yolov8n", "--sizes", str(size), "--repeats", str(repeats),
                   "--warmup", str(warmup), "--threads", str(threads), "--peer-output", str(output)]
        command += ["--candidates", "yolo-onnx"] if onnx else []
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the YOLOv8n peer process failed ({' '.join(command)}):\n"
                               + "\n".join(done.stderr.strip().splitlines()[-8:]))
        result = json.loads(output.read_text())
    print(f"note: {result['note']}")
    return result["times"]


def build(size: int, folder: str, threads: int, compile: bool = False,
          candidates: tuple[str, ...] = ()) -> dict[str, Callable[[np.ndarray], object]]:
    ours = prepare_for_inference(CenterNet(NUM_CLASSES, neck="lean"))
    paper = CenterNet(NUM_CLASSES, neck="deconv").eval()
    paper_prepared = prepare_for_inference(paper)
    body = prepare_for_inference(ResNet18Backbone())
    runners = {
        "paper (deconv) fp32 plain": centernet_runner(paper, size, "fp32"),
        "paper (deconv) fp32 prepared": centernet_runner(paper_prepared, size, "fp32"),
        "ours (lean) fp32": centernet_runner(ours, size, "fp32"),
        **network_only_runners(paper, paper_prepared, ours, body, size),
    }
    if compile:
        runners.update(compiled_runners(paper_prepared, ours, body, size))
    if bf16_supported("cpu"):
        runners.update({
            "paper (deconv) bf16 prepared": centernet_runner(paper_prepared, size, "bf16"),
            "ours (lean) bf16": centernet_runner(ours, size, "bf16"),
            "ResNet-18 body bf16 (network only)": body_runner(body, size, "bf16"),
        })
    runners["ssdlite320_mobilenet_v3_large fp32"] = torchvision_runner(detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1).eval())
    runners["fasterrcnn_mobilenet_v3_large_320_fpn fp32"] = torchvision_runner(
        detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                        num_classes=NUM_CLASSES + 1).eval())
    runners.update(onnx_runners(fold_batchnorm(CenterNet(NUM_CLASSES, neck="lean").eval()), size, folder, threads))
    runners.update(detector_onnxruntime_runner(size, threads))
    runners.update(detector_onnxruntime_runner(size, threads, ("onnxruntime", "openvino"), "int8"))
    if "ort" in candidates:
        runners.update(ort_variant_runners(folder, threads))
    if "openvino" in candidates:
        runners.update(openvino_runners(folder, threads))
        if any("OpenVINO" in name for name in runners):
            runners.update(detector_onnxruntime_runner(size, threads, ("openvino",)))
    if "torch" in candidates:
        runners.update(torch_candidate_runners(size))
    runners["decode + unletterbox (ours' 80-class output)"] = decode_runner(ours, size)
    return runners


def network_only_runners(paper: torch.nn.Module, paper_prepared: torch.nn.Module, ours: torch.nn.Module,
                         body: torch.nn.Module, size: int) -> dict[str, Callable[[np.ndarray], object]]:
    """The networks without letterbox and decode, to compare the body (the floor) with networks, not pipelines."""
    return {"paper (deconv) fp32 plain (network only)": body_runner(paper, size, "fp32"),
            "paper (deconv) fp32 prepared (network only)": body_runner(paper_prepared, size, "fp32"),
            "ours (lean) fp32 (network only)": body_runner(ours, size, "fp32"),
            "ResNet-18 body fp32 (network only)": body_runner(body, size, "fp32")}


def compiled_runners(paper_prepared: torch.nn.Module, ours: torch.nn.Module, body: torch.nn.Module,
                     size: int) -> dict[str, Callable[[np.ndarray], object]]:
    """``CompiledNetwork`` of each (``Detector(compile=True)``); the first call compiles, so it is timed here. {}
    and a note where no C++ compiler is found (the rows would time the eager fallback)."""
    if cxx_compiler() is None:
        print("note: no compiled rows: torch.compile's inductor needs a C++ compiler on the CPU and none was found "
              "(g++, c++, clang++ or $CXX)")
        return {}
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    runners = {"paper (deconv) fp32 prepared compiled": centernet_runner(CompiledNetwork(paper_prepared), size,
                                                                          "fp32"),
               "ours (lean) fp32 compiled": centernet_runner(CompiledNetwork(ours), size, "fp32"),
               "ResNet-18 body fp32 compiled (network only)": body_runner(CompiledNetwork(body), size, "fp32")}
    for name, run in runners.items():
        start = time.perf_counter()
        run(image)
        print(f"compiling {name}: {time.perf_counter() - start:.0f} s")
    return runners


def references(name: str, median: dict[str, float]) -> tuple[float, float]:
    """(paper plain, paper prepared) medians comparable with row ``name``: same kind (end to end or network
    only); the prepared one also of the same precision and, for a compiled row, compiled (nan if not timed)."""
    kind = " (network only)" if name.endswith("(network only)") else ""
    prepared = f"paper (deconv) {'bf16' if 'bf16' in name else 'fp32'} prepared{' compiled' * ('compiled' in name)}"
    return median[f"paper (deconv) fp32 plain{kind}"], median.get(prepared + kind, float("nan"))


def ablation_runners(size: int) -> dict[str, Callable[[np.ndarray], object]]:
    """The lean network alone, with each inference option added in turn."""
    separable = CenterNet(NUM_CLASSES, neck="lean").eval()
    full = CenterNet(NUM_CLASSES, neck="lean").eval()
    full.head = CenterNetHead(full.neck.out_channels, NUM_CLASSES, separable=False).eval()
    runners = {}
    for heads, model in (("full 3x3 heads", full), ("separable heads", separable)):
        runners[f"{heads}, NCHW"] = body_runner(model, size, "fp32")
        channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
        runners[f"{heads}, channels_last"] = body_runner(channels_last, size, "fp32")
        runners[f"{heads}, channels_last, BN folded"] = body_runner(fold_batchnorm(channels_last), size, "fp32")
    runners["separable heads, NCHW, BN folded"] = body_runner(fold_batchnorm(separable), size, "fp32")
    if bf16_supported("cpu"):
        runners["separable heads, NCHW, bf16"] = body_runner(separable, size, "bf16")
        runners["separable heads, channels_last, BN folded, bf16"] = body_runner(prepare_for_inference(separable),
                                                                                 size, "bf16")
    return runners


def report_ablation(size: int, times: dict[str, list[float]]) -> None:
    median = {name: 1000 * statistics.median(t) for name, t in times.items()}
    first = next(iter(median.values()))
    print(f"\nlean network alone (80 classes), {size} px, batch 1, median of {len(next(iter(times.values())))} "
          "interleaved runs")
    for name, value in median.items():
        print(f"  {name:<52} {value:8.1f} ms  {value / first:6.3f}")


def measure(runners: dict[str, Callable], image: np.ndarray, repeats: int, warmup: int,
            expected: dict[str, int] | None = None) -> dict[str, list[float]]:
    """Round-robin: each repetition calls every runner once, in turn. The thread counts must stay ``expected``
    (default: as they are now) before and after every call, warm-up included (``check_threads``)."""
    expected = thread_state() if expected is None else expected
    check_threads(expected, "before the first runner (while the runners were built)")
    times: dict[str, list[float]] = {name: [] for name in runners}
    for repetition in range(warmup + repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(image)
            elapsed = time.perf_counter() - start
            check_threads(expected, f"by runner {name!r}")
            if repetition >= warmup:
                times[name].append(elapsed)
    return times


def report(size: int, times: dict[str, list[float]], peer: dict[str, list[float]] | None = None) -> None:
    """The table: the interleaved rows, then the peer's (timed in its own process, same threads) beside them."""
    times = {**times, **(peer or {})}
    median = {name: 1000 * statistics.median(t) for name, t in times.items()}
    print(f"\n{size} px, batch 1, 640x480 image, {NUM_CLASSES} classes, median of {len(next(iter(times.values())))} "
          f"interleaved runs (rows marked '{PEER_NOTE}': the same count, timed apart with the same threads)")
    print(f"{'model':<{NAME_WIDTH}} {'ms':>8} {'IQR ms':>13} {'x plain':>8} {'x prepared':>10}")
    for name, value in median.items():
        q1, _, q3 = statistics.quantiles([1000 * t for t in times[name]], n=4)
        plain, prepared = references(name, median)
        print(f"{name:<{NAME_WIDTH}} {value:8.1f} {q1:6.1f}-{q3:6.1f} {value / plain:8.3f} {value / prepared:10.3f}")
    print("x plain: design + preparation (the targets); x prepared: the design alone; paper prepared / plain: the "
          "preparation alone")
    decode = median["decode + unletterbox (ours' 80-class output)"]
    ours = median["ours (lean) fp32"]
    print(f"ours fp32 end to end / its network only: {ours / median['ours (lean) fp32 (network only)']:.2f}; "
          f"decode share of ours fp32: {100 * decode / ours:.1f}%", end="")
    for name in ("ours (lean) fp32 compiled", "ours (lean) bf16"):
        if name in median:
            print(f", of {name}: {100 * decode / median[name]:.1f}%", end="")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 384])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ablation", action="store_true", help="time the network alone, option by option")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile rows (compiling takes minutes)")
    parser.add_argument("--no-peer", action="store_true", help="skip the YOLOv8n peer process")
    parser.add_argument("--candidates", nargs="+", choices=[*CANDIDATES, "all"], default=[],
                        help="add the runtime candidates' rows (see the docstring); all: every group")
    parser.add_argument("--peer", choices=["yolov8n"], help=argparse.SUPPRESS)  # the peer process (one size)
    parser.add_argument("--peer-output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    candidates = CANDIDATES if "all" in args.candidates else tuple(args.candidates)
    if args.peer:
        run_peer(args.sizes[0], args.repeats, args.warmup, args.threads, args.peer_output, "yolo-onnx" in candidates)
        return
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads "
          f"(OpenCV {cv2.getNumThreads()}), OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
          f"bf16 supported: {bf16_supported('cpu')}")
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for size in args.sizes:
        if args.ablation:
            report_ablation(size, measure(ablation_runners(size), image, args.repeats, args.warmup))
        else:
            expected = thread_state()
            with tempfile.TemporaryDirectory() as folder:
                times = measure(build(size, folder, args.threads, args.compile, candidates), image, args.repeats,
                                args.warmup, expected)
            peer = {} if args.no_peer else peer_times(size, args.repeats, args.warmup, args.threads,
                                                      "yolo-onnx" in candidates)
            report(size, times, peer)


if __name__ == "__main__":
    main()
