"""Frames per second and memory of the demo loop over a long video, headless.

Writes a synthetic video (moving rectangles), builds a checkpoint from a randomly initialised model (no training:
speed and memory do not depend on the weights), runs ``detector.demo.loop.run_demo`` over the video writing an
annotated mp4, and prints the process RSS (``VmRSS`` of /proc/self/status) at the start, after warm-up, every
``--every`` frames and at the end, then the demo's per-stage timing summary.

Threads: one network (torch) in this process, no peer; the demo loop sets no thread count. Torch's count is
checked to be ``--threads`` at the end (the frame rate would be wrong otherwise). No ONNX Runtime here.

    NO_ALBUMENTATIONS_UPDATE=1 python bench/demo_memory.py --frames 2000 --threads 1
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector.demo.loop import DemoOptions, run_demo  # noqa: E402
from detector.demo.outputs import open_sink  # noqa: E402
from detector.training.module import CenterNetModule  # noqa: E402
from detector.inference.detectors import Detector  # noqa: E402
from detector.inference.sources import open_source  # noqa: E402


def rss_mib() -> float:
    """Resident set size of this process in MiB, from /proc/self/status (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def write_video(path: Path, frames: int, width: int, height: int, fps: float) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    rng = np.random.default_rng(0)
    background = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
    for i in range(frames):
        frame = background.copy()
        for k in range(3):
            x = (i * (k + 2) + 60 * k) % (width - 60)
            cv2.rectangle(frame, (x, 30 + 60 * k), (x + 50, 70 + 60 * k), (60 * k, 200, 255 - 60 * k), cv2.FILLED)
        writer.write(frame)
    writer.release()


def random_checkpoint(path: Path, num_classes: int, input_size: int) -> None:
    module = CenterNetModule(num_classes=num_classes, input_size=input_size)  # random init, no download
    torch.save({"detector": module.description().to_dict(), "state_dict": module.state_dict()}, path)


class RssProbe:
    """Wraps a detector; records RSS after ``warmup`` frames and every ``every`` frames."""

    def __init__(self, detector: Detector, warmup: int, every: int):
        self.detector, self.warmup, self.every = detector, warmup, every
        self.input_size = detector.input_size
        self.frames = 0
        self.samples: list[tuple[int, float]] = []

    def predict_frame(self, *args, **kwargs):
        result = self.detector.predict_frame(*args, **kwargs)
        self.frames += 1
        if self.frames == self.warmup or self.frames % self.every == 0:
            self.samples.append((self.frames, rss_mib()))
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--every", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"RSS at start: {rss_mib():.1f} MiB")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        write_video(tmp / "in.mp4", args.frames, args.width, args.height, 25.0)
        print(f"wrote {args.frames} frames {args.width}x{args.height} in {time.perf_counter() - started:.1f} s")
        random_checkpoint(tmp / "random.ckpt", args.classes, args.input_size)
        probe = RssProbe(Detector.from_checkpoint(tmp / "random.ckpt"), args.warmup, args.every)
        print(f"RSS with the model loaded: {rss_mib():.1f} MiB (input {args.input_size}, {args.classes} classes, "
              f"{args.threads} thread(s))")
        source = open_source(str(tmp / "in.mp4"))
        report = run_demo(probe, source, open_sink(tmp / "out.mp4", source), DemoOptions())
        for frame, rss in probe.samples:
            print(f"RSS after {frame} frames: {rss:.1f} MiB")
        print(f"RSS at the end: {rss_mib():.1f} MiB")
        print(report.summary())
    if torch.get_num_threads() != args.threads:
        raise RuntimeError(f"torch's threads changed during the demo: {args.threads} -> {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
