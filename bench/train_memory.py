"""Process memory (RSS) across a training run of several epochs: it must stay flat.

    NO_ALBUMENTATIONS_UPDATE=1 python bench/train_memory.py --epochs 8

Trains the default network on the synthetic set (small images so it runs in a few minutes on a CPU) through the
same CLI as ``tools/train.py``, and prints the resident memory of the training process (and its data workers) at
the end of every epoch.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pytorch_lightning as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from detector.cli import train_main  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children_rss_mib() -> float:
    total = 0.0
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        total += sum(rss_mib(int(pid)) for pid in children if Path(f"/proc/{pid}").exists())
    return total


class MemoryLog(pl.Callback):
    def on_train_epoch_end(self, trainer, module):
        print(f"epoch {trainer.current_epoch:2d}: main process {rss_mib(os.getpid()):7.1f} MiB, "
              f"data workers {children_rss_mib():7.1f} MiB", flush=True)


def run(epochs: int, size: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="train-memory-"))
    print(f"start: main process {rss_mib(os.getpid()):.1f} MiB", flush=True)
    train_main(["--data.input_size", str(size), "--data.num_workers", "2", "--trainer.max_epochs", str(epochs),
          "--trainer.logger.init_args.save_dir", str(folder), "--trainer.enable_progress_bar", "false",
          "--trainer.callbacks+=bench.train_memory.MemoryLog"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=96, help="training input size (small: the point is memory)")
    args = parser.parse_args()
    run(args.epochs, args.size)
