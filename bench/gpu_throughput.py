"""GPU training throughput: images per second at 512 px, bf16/fp16 mixed precision, channels_last, both necks.

Runs only where a CUDA GPU is present; elsewhere it says so and exits 0. One training step is the full
``CenterNet`` forward + ``targets.encode`` + ``CenterNetLoss`` + backward + Adam step on random images and boxes.

    python bench/gpu_throughput.py [--size 512] [--batch 32] [--steps 30] [--dtype bf16|fp16]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from detector.losses import CenterNetLoss
from detector.model import CenterNet
from detector.targets import encode

NUM_CLASSES = 80


def throughput(neck: str, size: int, batch: int, steps: int, dtype: torch.dtype) -> float:
    device = torch.device("cuda")
    model = CenterNet(NUM_CLASSES, neck=neck).to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    criterion = CenterNetLoss()
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    centres = torch.rand(batch, 10, 2, device=device) * size * 0.8 + size * 0.1
    half = torch.rand(batch, 10, 2, device=device) * size * 0.1 + 4
    boxes = torch.cat([centres - half, centres + half], dim=-1)
    labels = torch.randint(0, NUM_CLASSES, (batch, 10), device=device)
    mask = torch.ones(batch, 10, dtype=torch.bool, device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype):
            outputs = model(images)
        outputs = {k: v.float() for k, v in outputs.items()}
        targets = encode(boxes, labels, mask, NUM_CLASSES, tuple(outputs["heatmap"].shape[-2:]), model.stride)
        scaler.scale(criterion(outputs, targets)["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU on this machine: nothing to measure (bench/gpu_throughput.py needs a GPU); exiting.")
        return 0
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        print(f"{torch.cuda.get_device_name()} has no bfloat16; using fp16 with loss scaling")
        dtype = torch.float16
    torch.backends.cudnn.benchmark = True
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.size} px, batch {args.batch}, "
          f"{dtype}, channels_last, {args.steps} steps after 5 warm-up")
    for neck in ("deconv", "lean"):
        print(f"  {neck:<7} {throughput(neck, args.size, args.batch, args.steps, dtype):8.1f} training images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
