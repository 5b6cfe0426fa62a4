"""Where the default job's time goes, piece by piece, interleaved (issue 16): one training step of the default
network (lean, 160 px, batch 16, 5 classes, forward + targets + loss + backward + Adam) in NCHW and in channels_last,
one training batch of the data pipeline in-process, one validation batch (forward + loss + decode), and one
checkpoint-sized save (~139 MB: the weights and Adam's two moments). Medians in seconds.

The whole run's split (step, validation, COCOeval, checkpoints) comes from Lightning's profiler instead:
``python tools/train.py --trainer.max_epochs 3 --trainer.profiler simple``.

Threads: the pieces are the project's own code in one process (the data module loads albumentations, which sets no
thread count; Lightning sets torch's threads only when it launches several processes, not used here); torch's count
is checked to be ``--threads`` after every call, as in bench/latency.py. No ONNX Runtime here.

    python bench/default_job_parts.py [--threads 2] [--repeats 12]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/latency.py

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from detector.data.datamodule import AugmentOptions, DetectionDataModule
from detector.inference.pipeline import forward_images, postprocess
from detector.losses import CenterNetLoss
from detector.model import CenterNet
from detector.targets import encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = DetectionDataModule(dataset="synthetic", input_size=160, augment=AugmentOptions(scale_range=(0.7, 1.3)),
                               batch_size=16, num_workers=0)
    data.prepare_data()
    data.setup("fit")
    batches = [b for _, b in zip(range(4), data.train_dataloader())]
    loader = [iter(data.train_dataloader())]
    val_batch = next(iter(data.val_dataloader()))
    criterion = CenterNetLoss()

    def targets(batch, outputs, stride):
        return encode(batch["boxes"], batch["labels"], batch["mask"], 5, tuple(outputs["heatmap"].shape[-2:]),
                      stride, radius="exact")

    def step_runner(channels_last: bool):
        model = CenterNet(5, neck="lean").train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        count = [0]

        def run():
            batch = batches[count[0] % len(batches)]
            count[0] += 1
            optimizer.zero_grad(set_to_none=True)
            images = batch["images"].contiguous(memory_format=torch.channels_last) if channels_last else batch["images"]
            outputs = forward_images(model, images)
            criterion(outputs, targets(batch, outputs, model.stride))["loss"].backward()
            optimizer.step()
        return run, model

    nchw, model = step_runner(False)
    channels_last, _ = step_runner(True)

    def data_batch():
        try:
            next(loader[0])
        except StopIteration:
            loader[0] = iter(data.train_dataloader())
            next(loader[0])

    def validation_batch():
        model.eval()
        with torch.no_grad():
            outputs = forward_images(model, val_batch["images"])
            criterion(outputs, targets(val_batch, outputs, model.stride))
            postprocess(outputs, val_batch["meta"], model.stride, 100)
        model.train()

    folder = Path(tempfile.mkdtemp())

    def save():
        torch.save({"state_dict": model.state_dict(), "moments": [torch.zeros_like(p) for p in model.parameters()] * 2},
                   folder / "x.ckpt")

    runners = {"training step, NCHW": nchw, "training step, channels_last": channels_last,
               "data batch (in-process)": data_batch, "validation batch (fwd+loss+decode)": validation_batch,
               "checkpoint save (~139 MB)": save}
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
            if torch.get_num_threads() != args.threads:
                raise RuntimeError(f"{name!r} changed torch's threads {args.threads} -> {torch.get_num_threads()}")
    (folder / "x.ckpt").unlink()
    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}, "
          f"median of {args.repeats}")
    for name, t in times.items():
        print(f"  {name:<36} {statistics.median(t):7.3f} s  (min {min(t):.3f})")


if __name__ == "__main__":
    main()
