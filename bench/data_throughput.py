"""Training-pipeline throughput of the data layer, and where its time goes.

Writes COCO-like JPEGs (640x480, about 7 objects each) with a COCO-format json into a temporary folder, then:

1. in-process time split per image: decode (file read + JPEG decode + BGR->RGB), augment (the train transform),
   collate (per image, batches of ``--batch-size``);
2. images per second of one training epoch through ``DetectionDataModule.train_dataloader()`` with 0 (in-process),
   1 and 2 workers (worker start-up reported apart, excluded from the rate).

Usage: ``python bench/data_throughput.py [--images 200] [--size 512] [--batch-size 16]``
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from detector.data import DetectionDataModule, collate_detection  # noqa: E402


def write_dataset(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` 640x480 JPEGs (noisy gradient, ~7 filled ellipses/rectangles each) and their COCO json."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        image = _background(rng)
        for _ in range(int(rng.poisson(7))):
            w, h = (float(s) for s in rng.uniform(16, 240, size=2))
            x, y = float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h))
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
            cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), colour, -1)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        cv2.imwrite(str(folder / "images" / f"{image_id:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "width": 640, "height": 480})
    path = folder / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "thing"}]}))
    return path


def _background(rng: np.random.Generator) -> np.ndarray:
    ramp = np.linspace(0, 1, 640, dtype=np.float32)[None, :, None]
    base = rng.uniform(0, 255, size=3) * ramp + rng.uniform(0, 255, size=3) * (1 - ramp)
    return np.clip(base + rng.normal(0, 12, size=(480, 640, 3)), 0, 255).astype(np.uint8)


def time_split(dm: DetectionDataModule, batch_size: int) -> dict[str, float]:
    """Milliseconds per image spent decoding, augmenting and collating, in the main process."""
    dataset, transform = dm.train_dataset, dm.train_dataset.transform
    decode = augment = collate = 0.0
    outputs = []
    for index in range(len(dataset)):
        start = time.perf_counter()
        sample = dataset.load(index)
        middle = time.perf_counter()
        outputs.append(transform(sample))
        decode, augment = decode + middle - start, augment + time.perf_counter() - middle
        if len(outputs) == batch_size or index == len(dataset) - 1:
            start = time.perf_counter()
            collate_detection(outputs)
            collate += time.perf_counter() - start
            outputs = []
    return {name: 1000 * value / len(dataset) for name, value in
            (("decode", decode), ("augment", augment), ("collate", collate))}


def epoch_rate(dm: DetectionDataModule) -> tuple[float, float]:
    """(images per second over one epoch after the first batch, seconds to the first batch)."""
    start = time.perf_counter()
    iterator = iter(dm.train_dataloader())
    first = next(iterator)
    ready = time.perf_counter()
    count = sum(len(batch["images"]) for batch in iterator)
    rate = count / (time.perf_counter() - ready)
    del first, iterator
    return rate, ready - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        json_path = write_dataset(Path(folder), args.images)
        print(f"wrote {args.images} 640x480 JPEGs in {time.perf_counter() - start:.1f} s")
        for workers in (0, 1, 2):
            dm = DetectionDataModule("coco", train_json=str(json_path), train_images=f"{folder}/images",
                                     val_json=str(json_path), val_images=f"{folder}/images", input_size=args.size,
                                     batch_size=args.batch_size, num_workers=workers)
            dm.setup("fit")
            if workers == 0:
                split = time_split(dm, args.batch_size)
                total = sum(split.values())
                print(f"in-process time per image at {args.size} px: " + ", ".join(
                    f"{name} {ms:.2f} ms ({100 * ms / total:.0f}%)" for name, ms in split.items()))
            rate, startup = epoch_rate(dm)
            print(f"num_workers={workers}: {rate:.0f} images/s (first batch after {startup:.2f} s)")


if __name__ == "__main__":
    main()
