"""GPU training throughput: images per second at 512 px, with the settings a GPU run should use, both necks.

Runs only where a CUDA GPU is present; elsewhere it says so and exits 0. One training step is what
``CenterNetModule.training_step`` does plus the optimiser: ``forward_images`` (normalise, network) + ``targets.encode``
+ ``CenterNetLoss`` + backward + Adam step. The settings:

- channels_last network and images (what ``CenterNetModule.setup`` uses for training);
- mixed precision: bf16 autocast where the GPU has it (Ampere and newer), else fp16 with loss scaling (the configs'
  ``trainer.precision: bf16-mixed`` / ``16-mixed``);
- ``torch.backends.cudnn.benchmark`` (the configs' ``trainer.benchmark: true``);
- ``torch.compile`` of the network, timed beside eager (compilation time reported apart), so one sees where it helps;
- two data sources: ``device`` (random images made on the GPU: the network's ceiling) and ``loader`` (the synthetic
  set through the real training augmentation, ``--workers`` DataLoader processes, pinned memory, non-blocking
  copies: what a run fed from disk gets; raise ``--workers`` while it stays below ``device``).

    python bench/gpu_throughput.py [--size 512] [--batch 32] [--steps 30] [--dtype bf16|fp16] [--workers 8]
        [--necks deconv,lean] [--compile true|false] [--sources device,loader]
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from typing import Iterator

import torch

from detector.inference.pipeline import forward_images
from detector.losses import CenterNetLoss
from detector.model import CenterNet
from detector.targets import encode

NUM_CLASSES = 80
DEVICE = "cuda"  # a module constant so the code path can be smoke-run on a CPU (DEVICE = "cpu") where no GPU is


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def device_batches(size: int, batch: int, num_classes: int) -> Iterator[dict]:
    """The same random batch (uint8 images, 10 boxes each) on the GPU, forever."""
    device = torch.device(DEVICE)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    centres = torch.rand(batch, 10, 2, device=device) * size * 0.8 + size * 0.1
    half = torch.rand(batch, 10, 2, device=device) * size * 0.1 + 4
    fixed = {"images": images.contiguous(memory_format=torch.channels_last),
             "boxes": torch.cat([centres - half, centres + half], dim=-1),
             "labels": torch.randint(0, num_classes, (batch, 10), device=device),
             "mask": torch.ones(batch, 10, dtype=torch.bool, device=device)}
    return itertools.repeat(fixed)


def loader_batches(size: int, batch: int, workers: int) -> Iterator[dict]:
    """The synthetic training set through the training augmentation, ``workers`` processes, pinned memory."""
    from detector.data.datamodule import DetectionDataModule  # Lightning and albumentations: only for this source

    data = DetectionDataModule(dataset="synthetic", input_size=size, batch_size=batch, num_workers=workers)
    data.prepare_data()
    data.setup("fit")
    loader = data.train_dataloader()  # pin_memory with CUDA, persistent workers
    keys = ("images", "boxes", "labels", "mask")
    while True:
        for cpu in loader:
            out = {k: cpu[k].to(DEVICE, non_blocking=True) for k in keys}
            out["images"] = out["images"].contiguous(memory_format=torch.channels_last)
            yield out


def throughput(neck: str, batches: Iterator[dict], num_classes: int, steps: int, dtype: torch.dtype,
               compile_model: bool, warmup_steps: int = 5) -> tuple[float, float]:
    """(training images per second, seconds of the warm-up steps, which include compilation)."""
    network = CenterNet(num_classes, neck=neck).to(DEVICE).to(memory_format=torch.channels_last).train()
    model = torch.compile(network) if compile_model else network
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(DEVICE, enabled=dtype == torch.float16)
    criterion = CenterNetLoss()

    def step() -> int:
        batch = next(batches)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE, dtype=dtype):
            outputs = forward_images(model, batch["images"])
        outputs = {k: v.float() for k, v in outputs.items()}
        targets = encode(batch["boxes"], batch["labels"], batch["mask"], num_classes,
                         tuple(outputs["heatmap"].shape[-2:]), network.stride)
        scaler.scale(criterion(outputs, targets)["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        return batch["images"].shape[0]

    start = time.perf_counter()
    for _ in range(warmup_steps):
        step()
    synchronize()
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    images = sum(step() for _ in range(steps))
    synchronize()
    return images / (time.perf_counter() - start), warmup


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="loader source")
    parser.add_argument("--necks", default="deconv,lean")
    parser.add_argument("--compile", choices=["true", "false", "both"], default="both",
                        help="torch.compile the network: both times eager and compiled")
    parser.add_argument("--sources", default="device,loader", help="device (network only), loader (data fed)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU on this machine: nothing to measure (bench/gpu_throughput.py needs a GPU); exiting.")
        return 0
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        print(f"{torch.cuda.get_device_name()} has no bfloat16; using fp16 with loss scaling")
        dtype = torch.float16
    torch.backends.cudnn.benchmark = True
    compiles = {"true": [True], "false": [False], "both": [False, True]}[args.compile]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.size} px, batch {args.batch}, "
          f"{dtype}, channels_last, cudnn.benchmark, {args.steps} steps after 5 warm-up, {args.workers} workers")
    for source in args.sources.split(","):
        for neck in args.necks.split(","):
            for compiled in compiles:
                batches = (device_batches(args.size, args.batch, NUM_CLASSES) if source == "device"
                           else loader_batches(args.size, args.batch, args.workers))
                # the synthetic set has 5 classes; the network's 80 heatmaps cost the same either way
                rate, warmup = throughput(neck, batches, NUM_CLASSES, args.steps, dtype, compiled)
                print(f"  {source:<7} {neck:<7} {'compiled' if compiled else 'eager':<9} {rate:8.1f} training "
                      f"images/s  (warm-up {warmup:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
