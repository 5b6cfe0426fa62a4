"""Time to build a ``Detector`` from a checkpoint, first (nothing cached) and second (the exported network cached),
per runtime: ``Detector.from_checkpoint(path, runtime=...)`` in fresh processes.

The checkpoint: the default network (``neck="lean"``), random weights, ``--classes`` classes at ``--size`` (written
once to a temporary folder). For each runtime and repetition the cache of exported networks
(``detector.inference.cache``) starts empty in a folder of its own (``DETECTOR_CACHE``); a fresh interpreter builds
the detector (the first build: ONNX Runtime and OpenVINO export the network and fill the cache), then another fresh
interpreter builds it again (the second build: the cached file is loaded). Each process times ``from detector import
Detector`` and the build apart, and runs one image through the detector after it (the first image's time, printed
too: sessions and compiled models do some of their work on the first call). torch has nothing to cache: its two
builds differ by the operating system's file cache only. A runtime that is not installed is skipped with a note.

    python bench/build_time.py [--size 512] [--classes 80] [--runtimes torch onnxruntime openvino] [--repeats 3]
                               [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CHILD = """
import json, sys, time
import numpy as np
import torch
torch.set_num_threads({threads})
start = time.perf_counter()
from detector import Detector
imported = time.perf_counter()
detector = Detector.from_checkpoint({checkpoint!r}, device="cpu", runtime={runtime!r})
built = time.perf_counter()
detector.predict(np.zeros((480, 640, 3), dtype=np.uint8))
done = time.perf_counter()
print(json.dumps({{"import": imported - start, "build": built - imported, "first image": done - built,
                  "runtime": detector.runtime}}))
"""


def write_checkpoint(path: Path, classes: int, size: int) -> Path:
    """A checkpoint of the default network with random weights (no download)."""
    import torch

    from detector.training.module import CenterNetModule
    module = CenterNetModule(num_classes=classes, class_names=[str(i) for i in range(classes)], input_size=size)
    torch.save({"detector": module.description().to_dict(), "state_dict": module.state_dict()}, path)
    return path


def build_once(checkpoint: Path, runtime: str, threads: int, cache: Path) -> dict:
    """One fresh process building the detector with the cache folder ``cache``: its times (seconds)."""
    env = dict(os.environ, DETECTOR_CACHE=str(cache), NO_ALBUMENTATIONS_UPDATE="1")
    code = CHILD.format(threads=threads, checkpoint=str(checkpoint), runtime=runtime)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"building with runtime={runtime!r} failed:\n" + "\n".join(done.stderr.splitlines()[-6:]))
    return json.loads(done.stdout.strip().splitlines()[-1])


def installed(runtime: str) -> bool:
    import importlib.util
    return runtime == "torch" or importlib.util.find_spec(runtime) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime", "openvino"],
                        choices=["torch", "onnxruntime", "openvino"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"Detector.from_checkpoint, {args.classes} classes at {args.size} px, {args.threads} threads, median of "
          f"{args.repeats} fresh processes per cell (seconds)")
    print(f"{'runtime':<12} {'build':<7} {'import':>7} {'build':>7} {'1st image':>10}")
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = write_checkpoint(Path(folder) / "model.ckpt", args.classes, args.size)
        for runtime in args.runtimes:
            if not installed(runtime):
                print(f"note: {runtime} is not installed: no rows")
                continue
            runs = {"first": [], "second": []}
            for repeat in range(args.repeats):
                cache = Path(folder) / f"cache_{runtime}_{repeat}"
                for which in runs:
                    runs[which].append(build_once(checkpoint, runtime, args.threads, cache))
            for which, samples in runs.items():
                median = {part: statistics.median(s[part] for s in samples) for part in ("import", "build",
                                                                                          "first image")}
                print(f"{runtime:<12} {which:<7} {median['import']:7.2f} {median['build']:7.2f} "
                      f"{median['first image']:10.2f}")


if __name__ == "__main__":
    main()
