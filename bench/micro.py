"""Micro-benchmarks: decoding alone, and the training-step throughput of our network against the paper's.

- decode: ``detector.decode.decode`` for 80 classes on a 128x128 output (512-px input), batch 1, against the first
  implementation (max-pool peaks of the probabilities and one top-K over every class and cell), interleaved.
- training step: ``CenterNet`` forward + ``targets.encode`` + ``CenterNetLoss`` + backward + Adam step, batch
  ``--batch`` at ``--size`` (default 512 px, batch 16), 80 classes, 10 random boxes per image, fp32, in the
  channels_last layout the trainer uses (``CenterNetModule.setup``); the ``lean`` default against the paper's plain
  network (``deconv``), one step of each in turn, as training images per second and their ratio. ``--bf16`` adds
  bf16 autocast where the CPU supports it (slower than fp32 for CPU training here, bench/RESULTS.md).

Threads: every runner is the project's own torch code in this one process, no peer library; torch's thread count
is checked to be ``--threads`` after every call (the trap of bench/latency.py, where a peer's ``predict`` reset it).
No ONNX Runtime here.

    python bench/micro.py [--size 512] [--batch 16] [--steps 3] [--threads 2] [--bf16]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/latency.py

import argparse
import statistics
import time
from typing import Callable

import torch
from torch.nn import functional as F

from detector.decode import decode
from detector.inference.pipeline import bf16_supported
from detector.losses import CenterNetLoss
from detector.model import CenterNet
from detector.targets import encode

NUM_CLASSES = 80


def first_decode(outputs: dict[str, torch.Tensor], k: int = 100) -> torch.Tensor:
    """The heavy part of the first implementation (peaks by max-pooling the probabilities, one global top-K)."""
    heat = outputs["heatmap"].sigmoid()
    kept = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    return kept.flatten(1).topk(k, dim=1)


def interleaved(runners: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median milliseconds of each runner, called round-robin; stops naming a runner that changed torch's threads."""
    threads = torch.get_num_threads()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for repetition in range(warmup + repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
            if torch.get_num_threads() != threads:
                raise RuntimeError(f"runner {name!r} changed torch's threads {threads} -> {torch.get_num_threads()}")
            if repetition >= warmup:
                times[name].append(elapsed)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def decode_runners() -> dict[str, Callable[[], object]]:
    g = torch.Generator().manual_seed(0)
    outputs = {"heatmap": torch.randn(1, NUM_CLASSES, 128, 128, generator=g) - 4,
               "offset": torch.rand(1, 2, 128, 128, generator=g), "size": torch.rand(1, 2, 128, 128, generator=g) * 9}
    return {"decode (now)": lambda: decode(outputs), "decode (first: max-pool + global top-K)": lambda: first_decode(outputs)}


def train_step_runner(neck: str, size: int, batch: int, precision: str) -> Callable[[], object]:
    model = CenterNet(NUM_CLASSES, neck=neck).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = CenterNetLoss()
    images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    centres = torch.rand(batch, 10, 2) * size * 0.8 + size * 0.1
    half = torch.rand(batch, 10, 2) * size * 0.1 + 4
    boxes = torch.cat([centres - half, centres + half], dim=-1)
    labels = torch.randint(0, NUM_CLASSES, (batch, 10))
    mask = torch.ones(batch, 10, dtype=torch.bool)

    def run():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            outputs = model(images)
        outputs = {k: v.float() for k, v in outputs.items()}
        targets = encode(boxes, labels, mask, NUM_CLASSES, tuple(outputs["heatmap"].shape[-2:]), model.stride)
        criterion(outputs, targets)["loss"].backward()
        optimizer.step()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20, help="decode: timed calls (x2)")
    parser.add_argument("--steps", type=int, default=3, help="training: timed steps of each network, after one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast (where the CPU has it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    with torch.inference_mode():
        timings = interleaved(decode_runners(), args.repeats * 2)
    print(f"\ndecode, {NUM_CLASSES} classes, 128x128 output, batch 1, K=100 (median of {args.repeats * 2})")
    for name, ms in timings.items():
        print(f"  {name:<44} {ms:8.2f} ms")
    precisions = ["fp32", "bf16"] if args.bf16 and bf16_supported("cpu") else ["fp32"]
    runners = {f"{neck} {p}": train_step_runner(neck, args.size, args.batch, p)
               for neck in ("deconv", "lean") for p in precisions}
    timings = interleaved(runners, args.steps, warmup=1)
    print(f"\ntraining step (forward + targets + loss + backward + Adam), {args.size} px, batch {args.batch}, "
          f"{NUM_CLASSES} classes, channels_last; median of {args.steps} steps each, interleaved")
    base = timings["deconv fp32"]
    for name, ms in timings.items():
        print(f"  {name:<12} {1000 * args.batch / ms:7.2f} images/s  {ms / 1000:7.2f} s/step  "
              f"time {ms / base:5.2f} x deconv fp32 (throughput {base / ms:4.2f} x)")


if __name__ == "__main__":
    main()
