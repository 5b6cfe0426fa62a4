"""Inference: from a trained network (or an exported file) and images to detections, and the exported files.

One concept per module, each importing only the ones above it in this list:

- ``sources``: what a detector can be fed (images, folders, globs, videos, streams, webcams, iterables);
- ``pipeline``: around the network (forward with flip and precision, decode, unletterbox, NMS, threshold, class
  filter, agnostic NMS);
- ``runtime``: a network run by ONNX Runtime (tracing, opset, sessions, the fp32 network);
- ``quantize``: int8 (calibration, quantization, the int8 network);
- ``export``: the exported ONNX and TorchScript files (decoding inside) and their description;
- ``track``: object tracks across frames (the ByteTrack-style ``Tracker``, numpy only);
- ``detectors``: the Detector API, ``Detector``, ``OnnxDetector``, their base, and the device rule.

Modules of the package import from these submodules, never from this file (whose names are for users).
"""
from detector.inference.detectors import BaseDetector, Detector, OnnxDetector
from detector.inference.track import Tracker

__all__ = ["BaseDetector", "Detector", "OnnxDetector", "Tracker"]
