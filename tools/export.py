"""Export a trained checkpoint with decoding inside the graph (contract in ``detector/inference/export.py``).

    python tools/export.py --checkpoint best.ckpt --format onnx --output model.onnx
    python tools/export.py --checkpoint best.ckpt --format torchscript --output model.pt
"""
import sys

from detector.cli import run

if __name__ == "__main__":
    sys.exit(run("export"))
