"""Export a trained checkpoint with decoding inside the graph (contract in ``detector/export.py``).

    python tools/export.py --checkpoint best.ckpt --format onnx --output model.onnx
    python tools/export.py --checkpoint best.ckpt --format torchscript --output model.pt
"""
import argparse
import sys

from detector.checkpoint import CheckpointError
from detector.export import export_checkpoint


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="training checkpoint")
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    parser.add_argument("--output", required=True, help="file to write, e.g. model.onnx or model.pt")
    parser.add_argument("--max-detections", type=int, default=100, help="K, detections per image (default 100)")
    args = parser.parse_args(argv)
    try:
        path = export_checkpoint(args.checkpoint, args.format, args.output, args.max_detections)
    except (CheckpointError, OSError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"wrote {path} ({args.format}; input images uint8 [B, 3, S, S] letterboxed RGB; outputs boxes, scores, "
          f"labels)")


if __name__ == "__main__":
    main()
