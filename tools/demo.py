"""Run a trained detector on a webcam, a video, a stream, an image or a folder of images.

    python tools/demo.py --checkpoint best.ckpt --source 0                          # webcam, on screen
    python tools/demo.py --checkpoint best.ckpt --source in.mp4 --output out.mp4 --no-show
    python tools/demo.py --checkpoint best.ckpt --source photos/ --output annotated/ --classes person 2
    python tools/demo.py --backend onnx --onnx model.onnx --source in.mp4 --output out.mp4
"""
import argparse
import sys

import torch

from detector.checkpoint import CheckpointError
from detector.predictor import Detector, OnnxDetector, resolve_classes
from detector.visualize import DemoError, DemoOptions, open_sink, open_source, run_demo


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="training checkpoint (required with --backend torch)")
    parser.add_argument("--source", required=True, help="webcam index, video file, stream URL, image or folder")
    parser.add_argument("--output", help="annotated video file (video sources) or folder (image sources)")
    parser.add_argument("--conf", type=float, default=0.3, help="score threshold (default 0.3)")
    parser.add_argument("--classes", nargs="+", help="only these classes (names or indices)")
    parser.add_argument("--heatmap", action="store_true", help="overlay the class heatmaps (torch backend)")
    parser.add_argument("--no-show", action="store_true", help="never open a window")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--threads", type=int, help="torch CPU threads (on a busy machine, 1 can be much faster)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: bfloat16 autocast, ~3x faster on CPUs with AVX512-BF16/AMX and on GPUs")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch")
    parser.add_argument("--onnx", help="ONNX model written by tools/export.py (with --backend onnx)")
    args = parser.parse_args(argv)
    if args.backend == "torch" and not args.checkpoint:
        parser.error("--checkpoint is required with --backend torch")
    if args.backend == "onnx" and (not args.onnx or args.heatmap):
        parser.error("--backend onnx needs --onnx model.onnx and cannot draw --heatmap")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        source = open_source(args.source)
        sink = open_sink(args.output, source)
        detector = OnnxDetector(args.onnx) if args.backend == "onnx" else Detector.from_checkpoint(
            args.checkpoint, args.device, precision=args.precision)
        options = DemoOptions(args.conf, resolve_classes(args.classes, detector.class_names), args.heatmap,
                              show=not args.no_show)
        report = run_demo(detector, source, sink, options)
    except (DemoError, CheckpointError, ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    print(report.summary())
    if report.frames == 0 and not report.stopped:
        sys.exit(f"error: no frame of {args.source} could be read")
    if args.output:
        print(f"output: {args.output}")


if __name__ == "__main__":
    main()
