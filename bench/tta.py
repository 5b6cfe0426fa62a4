"""Test-time passes measured on a checkpoint: sliced inference on large photos of small objects (``tiles``), and
test scales x flip (``scales``). Prints markdown rows: AP, AP50 (pycocotools) and seconds per photo.

``tiles``: the validation photos of the checkpoint's dataset (or ``--dataset``/``--root``) mosaicked ``--grid`` x
``--grid`` into large photos (each photo resized to the first one's size: 3 x 3 BCCD photos of 640 x 480 make a
1920 x 1440 photo whose cells, letterboxed to the input size, are a third as wide as in training), detected without
tiles, with ``--tile`` (default: one source photo's longer side) and with tiles plus the whole photo. Up to 1000
detections per photo count (``--max_detections`` for every arm, COCOeval's maxDets 1000), as a mosaic holds more
than COCO's 100 objects.

``scales``: the validation split as the evaluation letterboxes it, through ``pipeline.detect_passes`` (the eval's
path) with {scale 1, scales 0.75 1 1.25} x {no flip, flip}, scored by the evaluation's ``Evaluator``.

Checkpoints: a short training run of the normal tools, e.g. (synthetic, the default config; BCCD read in place):

    python tools/train.py --trainer.max_epochs 10
    python tools/train.py --data.dataset voc --data.root /work/shared/data/bccd/BCCD --data.input_size 256 \\
        --trainer.max_epochs 20

then, in a quiet window (each line prints its rows):

    python bench/tta.py tiles --checkpoint runs/synthetic/version_0/checkpoints/last.ckpt
    python bench/tta.py tiles --checkpoint runs/bccd/version_0/checkpoints/last.ckpt
    python bench/tta.py scales --checkpoint runs/synthetic/version_0/checkpoints/last.ckpt
    python bench/tta.py scales --checkpoint runs/bccd/version_0/checkpoints/last.ckpt

``--limit N`` keeps the first N photos (mosaics for ``tiles``): a quick check of the script, not a figure.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import inspect
import io
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector import Detector
from detector.checkpoint import load_checkpoint, read_description
from detector.data.datamodule import DetectionDataModule
from detector.evaluation import Evaluator
from detector.images import read_image
from detector.inference.pipeline import Passes, detect_passes
from detector.training.evaluate import training_data_options

MAX_DETS = 1000


def validation_data(args: argparse.Namespace) -> DetectionDataModule:
    """The checkpoint's data (``--dataset``/``--root`` over it), its validation split set up."""
    state = load_checkpoint(args.checkpoint)
    options = training_data_options(state)
    options.update({k: v for k, v in (("dataset", args.dataset), ("root", args.root)) if v is not None})
    options.update(eval_size="input", num_workers=0, batch_size=8, input_size=read_description(state).input_size)
    known = inspect.signature(DetectionDataModule).parameters
    datamodule = DetectionDataModule(**{k: v for k, v in options.items() if k in known})
    datamodule.restore_split(state)
    datamodule.prepare_data()
    datamodule.setup("validate")
    return datamodule


def mosaics(annotations: list, grid: int, limit: int | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``grid`` x ``grid`` consecutive photos side by side, each resized to the first photo's size: (RGB photo,
    boxes xyxy in its pixels, labels) per mosaic."""
    first = read_image(annotations[0].file)
    height, width = first.shape[:2]
    count = len(annotations) // (grid * grid)
    result = []
    for m in range(count if limit is None else min(count, limit)):
        photo = np.empty((grid * height, grid * width, 3), dtype=np.uint8)
        boxes, labels = [], []
        for i, annotation in enumerate(annotations[m * grid * grid:(m + 1) * grid * grid]):
            image = read_image(annotation.file)
            sx, sy = width / image.shape[1], height / image.shape[0]
            x0, y0 = (i % grid) * width, (i // grid) * height
            photo[y0:y0 + height, x0:x0 + width] = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            boxes.append(annotation.boxes * np.array([sx, sy, sx, sy], dtype=np.float32) + [x0, y0, x0, y0])
            labels.append(annotation.labels)
        result.append((photo, np.concatenate(boxes), np.concatenate(labels)))
    return result


def coco_ap(photos: list, predictions: list, category_ids: list[int], class_names: list[str]) -> tuple[float, float]:
    """(AP, AP50) of ``predictions`` (one ``Detections`` per photo) with up to ``MAX_DETS`` detections per photo."""
    images, annotations, results = [], [], []
    for image_id, ((photo, boxes, labels), found) in enumerate(zip(photos, predictions), start=1):
        images.append({"id": image_id, "width": photo.shape[1], "height": photo.shape[0]})
        for box, label in zip(boxes.tolist(), labels.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_ids[label],
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
        for box, score, label in zip(found.boxes.tolist(), found.scores.tolist(), found.labels.tolist()):
            results.append({"image_id": image_id, "category_id": category_ids[label],
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": score})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": c, "name": n} for c, n in zip(category_ids, class_names)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not results:
            return 0.0, 0.0
        evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluation.params.maxDets = [1, 100, MAX_DETS]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0]), float(evaluation.stats[1])


def run_tiles(args: argparse.Namespace) -> None:
    datamodule = validation_data(args)
    annotations = datamodule.val_dataset.annotations
    photos = mosaics(annotations, args.grid, args.limit)
    if not photos:
        raise SystemExit(f"fewer than {args.grid ** 2} validation photos: lower --grid")
    detector = Detector.from_checkpoint(args.checkpoint, device="cpu", runtime="torch",
                                        max_detections=args.max_detections)
    source = read_image(annotations[0].file)
    tile = args.tile or max(source.shape[:2])
    height, width = photos[0][0].shape[:2]
    arms = [("no tiles", {}), (f"tiles {tile} px, overlap {args.overlap:g}", {"tile": tile, "overlap": args.overlap}),
            (f"tiles {tile} px, overlap {args.overlap:g} + whole photo",
             {"tile": tile, "overlap": args.overlap, "whole": True})]
    print(f"{len(photos)} mosaics of {args.grid}x{args.grid} {datamodule.hparams.dataset} photos, {width}x{height} px, "
          f"input {detector.input_size}, up to {args.max_detections} detections per photo")
    print("| arm | AP | AP50 | s/photo |\n|---|---|---|---|")
    for label, options in arms:
        start = time.perf_counter()
        found = [detector.predict(photo, conf=0.0, **options) for photo, _, _ in photos]
        seconds = (time.perf_counter() - start) / len(photos)
        ap, ap50 = coco_ap(photos, found, datamodule.category_ids, datamodule.class_names)
        print(f"| {label} | {100 * ap:.2f} | {100 * ap50:.2f} | {seconds:.2f} |", flush=True)


def run_scales(args: argparse.Namespace) -> None:
    datamodule = validation_data(args)
    # runtime="torch": the runtime of the figures in bench/RESULTS.md (any runtime takes the scales)
    detector = Detector.from_checkpoint(args.checkpoint, device="cpu", runtime="torch")
    batches = list(datamodule.val_dataloader())
    if args.limit is not None:
        batches = batches[:max(1, args.limit // 8)]
    images = sum(len(batch["image_ids"]) for batch in batches)
    print(f"{images} validation photos letterboxed at {detector.input_size}")
    print("| scales | flip | AP | AP50 | s/photo |\n|---|---|---|---|---|")
    for scales in ((1.0,), tuple(args.scales)):
        for flip in (False, True):
            test = Passes(flip=flip, scales=scales)
            evaluator = Evaluator(datamodule.val_coco, datamodule.category_ids)
            run = lambda batch, meta: detector.infer(batch, meta, flip)[0]  # noqa: E731
            start = time.perf_counter()
            for batch in batches:
                found = detect_passes(run, batch["images"], batch["meta"], test, detector.input_size,
                                         detector.max_detections)
                evaluator.update(batch["image_ids"], found, image_sizes=batch["meta"][:, 2:4])
            seconds = (time.perf_counter() - start) / images
            metrics = evaluator.compute().metrics
            print(f"| {' '.join(f'{s:g}' for s in scales)} | {'yes' if flip else 'no'} | {100 * metrics['AP']:.2f} "
                  f"| {100 * metrics['AP50']:.2f} | {seconds:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["tiles", "scales"])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", default=None, help="as --data.dataset (default: the checkpoint's)")
    parser.add_argument("--root", default=None, help="as --data.root (default: the checkpoint's), e.g. "
                                                     "/work/shared/data/bccd/BCCD, read in place")
    parser.add_argument("--grid", type=int, default=3, help="tiles: photos per side of a mosaic")
    parser.add_argument("--tile", type=int, default=None, help="tiles: tile side (default: a source photo's)")
    parser.add_argument("--overlap", type=float, default=0.2, help="tiles: overlap of neighbouring tiles")
    parser.add_argument("--max_detections", type=int, default=MAX_DETS, help="tiles: top-K of every arm")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.75, 1.0, 1.25],
                        help="scales: the multi-scale arm")
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos or mosaics (a quick check)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not Path(args.checkpoint).is_file():
        raise SystemExit(f"no checkpoint {args.checkpoint}: train one first (see python bench/tta.py --help)")
    (run_tiles if args.mode == "tiles" else run_scales)(args)


if __name__ == "__main__":
    main()
