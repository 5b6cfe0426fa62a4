"""The demo end to end against the network alone, on the same frames of a real video file (issue 24).

Writes an mp4 with OpenCV (mp4v: a blurred noise texture scrolling under moving rectangles, so that decoding and
encoding do real work) or takes ``--video``. The detector is a randomly initialised network of the default design
(lean neck; speed does not depend on the weights) built as ``Detector`` builds it for the demo by default: torch
runtime, fp32, BatchNorm folded, channels_last (``--runtime onnxruntime`` for the other runtime). Three arms, each
over every frame of the video, interleaved round by round (``--rounds``) so that the load of a shared machine hits
them alike; the median round of each is printed:

- ``network``: the network alone, ``forward_images`` of the detector's network in its precision (what
  ``Detector.infer`` calls), on the frames decoded and letterboxed beforehand (kept in memory, batches of 1);
- ``demo, threaded``: ``run_demo`` headless, as ``centernet demo --no-show --output out.mp4`` runs it: decode,
  letterbox, network, decode, draw, encode to an mp4, the frames read and written in their own threads (the default);
- ``demo, sequential``: the same with ``run_demo(threads=False)``: every step in one thread, one after the other.

Each demo arm's frames/s is its frames over the wall time of ``run_demo`` (the source opened, the last frame
written and the file closed); its ratio to the network's is the issue's figure (target: threaded >= 0.9). The
demo's per-stage report of the last round is printed too: with threads, ``read`` and ``output`` are the time the
loop waited for a frame and to hand one over, i.e. what the threads did not hide.

Threads: torch's intra-op count is ``--threads`` (default: torch's own, as the demo without ``--threads``) and OpenCV's
is its own; both are checked to be unchanged before and after every arm (a run on other threads stops with the arm's
name). The demo's reader and writer threads run beside torch's threads on the same cores: on 2 cores they compete.
``OMP_WAIT_POLICY=PASSIVE`` is set unless set already (spinning OpenMP threads slow everything on a busy machine).
The load average is printed at the start and the end: measure in a quiet window.

    NO_ALBUMENTATIONS_UPDATE=1 python bench/demo_fps.py [--frames 150] [--width 1280] [--height 720]
        [--input-size 512] [--classes 80] [--rounds 3] [--threads N] [--runtime torch] [--video in.mp4]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from detector.demo.loop import DemoOptions, DemoReport, run_demo  # noqa: E402
from detector.demo.outputs import open_sink  # noqa: E402
from detector.inference.detectors import Detector  # noqa: E402
from detector.inference.pipeline import forward_images  # noqa: E402
from detector.inference.sources import open_source  # noqa: E402
from detector.model import CenterNet  # noqa: E402

ARMS = ("network", "demo, threaded", "demo, sequential")


def write_video(path: Path, frames: int, width: int, height: int, fps: float = 25.0) -> Path:
    """An mp4v file: a blurred noise texture scrolling left under three rectangles moving right."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} (mp4v)")
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (height, 2 * width, 3), dtype=np.uint8), (0, 0), 3)
    for i in range(frames):
        start = (4 * i) % width
        frame = np.ascontiguousarray(texture[:, start:start + width])
        for k in range(3):
            x = (i * (k + 3) + width // 4 * k) % max(width - width // 8, 1)
            y = height // 8 + k * height // 4
            cv2.rectangle(frame, (x, y), (x + width // 8, y + height // 6), (60 * k, 200, 255 - 60 * k), cv2.FILLED)
        writer.write(frame)
    writer.release()
    return path


def thread_state() -> dict[str, int]:
    """The thread counts every arm must run on: torch's intra-op pool and OpenCV's."""
    return {"torch": torch.get_num_threads(), "opencv": cv2.getNumThreads()}


def check_threads(expected: dict[str, int], where: str) -> None:
    """Stop the benchmark, naming ``where``, when the thread counts are not ``expected``."""
    now = thread_state()
    if now != expected:
        raise RuntimeError(f"threads changed {where}: {expected} -> {now}; every arm must run on the same threads")


def prepared_frames(detector: Detector, video: Path) -> list[torch.Tensor]:
    """Every frame of ``video`` decoded and letterboxed as the demo does (``Detector.prepare``), a batch of 1 each."""
    source = open_source(str(video))
    try:
        return [detector.prepare([frame.image])[0] for frame in source]
    finally:
        source.close()


@torch.inference_mode()
def time_network(detector: Detector, batches: list[torch.Tensor]) -> float:
    """Frames/s of the network alone over ``batches`` (``forward_images``, as ``Detector.infer`` calls it)."""
    precision = "fp32" if detector.precision == "int8" else detector.precision
    start = time.perf_counter()
    for batch in batches:
        forward_images(detector.network, batch.to(detector.device), False, precision)
    return len(batches) / (time.perf_counter() - start)


def time_demo(detector: Detector, video: Path, output: Path, threads: bool) -> tuple[float, DemoReport]:
    """Frames/s of the demo end to end, headless, writing ``output``; its report. The progress bar is hidden."""
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
        start = time.perf_counter()
        source = open_source(str(video))
        report = run_demo(detector, source, open_sink(output, source), DemoOptions(show=False), threads=threads)
        seconds = time.perf_counter() - start
    output.unlink()
    return report.frames / seconds, report


def build_detector(classes: int, input_size: int, runtime: str) -> Detector:
    torch.manual_seed(0)
    names = [str(i) for i in range(classes)]
    return Detector(CenterNet(classes, neck="lean"), names, input_size, runtime=runtime)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=None, help="a video file to use instead of a generated one")
    parser.add_argument("--frames", type=int, default=150, help="frames of the generated video")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--input-size", type=int, default=512)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5, help="network calls before the first round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    expected = thread_state()
    print(f"load average at the start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {os.cpu_count()} cores")
    fps: dict[str, list[float]] = {arm: [] for arm in ARMS}
    reports: dict[str, DemoReport] = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        video = args.video or write_video(folder / "in.mp4", args.frames, args.width, args.height)
        detector = build_detector(args.classes, args.input_size, args.runtime)
        check_threads(expected, "while building the detector")
        batches = prepared_frames(detector, video)
        capture = cv2.VideoCapture(str(video))
        size = f"{int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}"
        capture.release()
        print(f"video: {video.name}, {len(batches)} frames {size}; input {args.input_size}, {args.classes} classes, "
              f"runtime {args.runtime} fp32; threads: torch {expected['torch']}, OpenCV {expected['opencv']}")
        time_network(detector, batches[:args.warmup])
        for round_ in range(1, args.rounds + 1):
            for arm in ARMS:
                check_threads(expected, f"before {arm!r}")
                if arm == "network":
                    rate = time_network(detector, batches)
                else:
                    rate, reports[arm] = time_demo(detector, video, folder / "out.mp4", arm == "demo, threaded")
                check_threads(expected, f"during {arm!r}")
                fps[arm].append(rate)
            print(f"round {round_}: " + ", ".join(f"{arm} {fps[arm][-1]:.2f}" for arm in ARMS) + " frames/s")
    medians = {arm: statistics.median(values) for arm, values in fps.items()}
    print(f"\nmedian of {args.rounds} round(s), frames/s:")
    for arm in ARMS:
        ratio = "" if arm == "network" else f"  {medians[arm] / medians['network']:.2f} x network"
        print(f"  {arm:<17} {medians[arm]:7.2f}{ratio}")
    for arm, report in reports.items():
        print(f"\n{arm}, last round:\n{report.summary()}")
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return medians


if __name__ == "__main__":
    main()
