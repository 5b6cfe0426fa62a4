"""Run a trained detector on a webcam, a video, a stream, an image or a folder of images.

    python tools/demo.py --checkpoint best.ckpt --source 0                          # webcam, on screen
    python tools/demo.py --checkpoint best.ckpt --source in.mp4 --output out.mp4 --no-show
    python tools/demo.py --checkpoint best.ckpt --source photos/ --output annotated/ --classes person 2
    python tools/demo.py --backend onnx --onnx model.onnx --source in.mp4 --output out.mp4
"""
import sys

from detector.cli import run

if __name__ == "__main__":
    sys.exit(run("demo"))
