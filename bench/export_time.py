"""Time of one ONNX export: torch's ``torch.export``-based exporter (what ``detector.inference.export.export_onnx``
runs, any input size) against the TorchScript-based one it replaced (deprecated since torch 2.9, fixed input size).

The default network (``neck="lean"``, random weights, 80 classes) wrapped with its decoding
(``ExportedDetector``), exported ``--repeats`` times each way in one process after one warm-up each (the first
export imports the exporter); wall and CPU seconds, median. The legacy row needs a torch that still ships it.

    OMP_WAIT_POLICY=PASSIVE python bench/export_time.py --size 512 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.inference.export import ExportedDetector, export_onnx  # noqa: E402
from detector.model import CenterNet  # noqa: E402

NUM_CLASSES = 80


def legacy_export(model: torch.nn.Module, path: Path, size: int) -> None:
    """The TorchScript-based exporter as the package ran it before issue 24 (opset 17, dynamic batch)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(ExportedDetector(model).eval(), (torch.zeros(1, 3, size, size, dtype=torch.uint8),),
                          str(path), input_names=["images"], output_names=["boxes", "scores", "labels"],
                          opset_version=17, dynamo=False, dynamic_axes={"images": {0: "batch"}})


def timed(export, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``export()`` over ``repeats`` calls, after one untimed call."""
    export()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        export()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="the training input size (a multiple of 32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    config = parser.parse_args(args)
    torch.set_num_threads(config.threads)
    model = CenterNet(num_classes=NUM_CLASSES, weights=None).eval()
    names = [str(i) for i in range(NUM_CLASSES)]
    with tempfile.TemporaryDirectory() as folder:
        rows = {"torch.export-based (export_onnx, any size)":
                lambda: export_onnx(model, Path(folder) / "new.onnx", names, config.size),
                "TorchScript-based (legacy, fixed size)":
                lambda: legacy_export(model, Path(folder) / "legacy.onnx", config.size)}
        print(f"torch {torch.__version__}, size {config.size}, {config.threads} threads, median of {config.repeats}")
        print("| exporter | wall s | CPU s |\n|---|---|---|")
        for name, export in rows.items():
            try:
                wall, cpu = timed(export, config.repeats)
            except Exception as error:  # a torch without the legacy exporter
                print(f"| {name} | not run: {type(error).__name__}: {str(error).splitlines()[0][:80]} | |")
                continue
            print(f"| {name} | {wall:.2f} | {cpu:.2f} |", flush=True)


if __name__ == "__main__":
    main()
