"""Accuracy of the necks side by side on the synthetic set, the Gaussian-radius ablation, and fp32 vs bf16.

Each run trains from random initialisation on CPU with the same data, seed and schedule (configs/synthetic.yaml's
recipe: Adam 2e-3, cosine, 0.5 warm-up epoch, batch 16), then evaluates with COCOeval through the inference path
(BatchNorm folded, channels_last). The default run (8 epochs of 25 steps at 160 px) takes ~15-20 minutes on a shared
2-core CPU; ``--epochs 24`` is the config's full recipe.

    python bench/accuracy.py [--epochs 8] [--input-size 160] [--runs deconv,lean,lean-legacy-radius] [--threads 2]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/latency.py: spinning OpenMP threads on a busy CPU
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import argparse
import time
import warnings

import pytorch_lightning as pl
import torch

from detector.data import DetectionDataModule
from detector.evaluation import coco_evaluate, detections_to_coco
from detector.inference import bf16_supported, detect
from detector.model.fuse import prepare_for_inference
from detector.module import CenterNetModule

RUNS = {  # name -> CenterNetModule arguments that differ from the default
    "deconv": {"neck": "deconv"},
    "lean": {"neck": "lean"},
    "lean-legacy-radius": {"neck": "lean", "legacy_radius": True},
}


def evaluate(model: torch.nn.Module, data: DetectionDataModule, precision: str) -> dict[str, float]:
    """COCO AP and AP50 (0..100) of ``model`` on the validation set at ``precision``."""
    results, ids = [], []
    for batch in data.val_dataloader():
        out = detect(model, batch["images"], batch["meta"], precision=precision)
        results += detections_to_coco(batch["image_ids"], out["boxes"], out["scores"], out["labels"],
                                      data.category_ids)
        ids += batch["image_ids"].tolist()
    metrics = coco_evaluate(data.val_coco, results, ids).metrics
    return {"AP": 100 * metrics["AP"], "AP50": 100 * metrics["AP50"]}


def train(name: str, args: argparse.Namespace) -> tuple[CenterNetModule, DetectionDataModule, float]:
    pl.seed_everything(args.seed, workers=True)
    data = DetectionDataModule(dataset="synthetic", input_size=args.input_size, scale_range=(0.7, 1.3),
                               batch_size=16, num_workers=args.workers, seed=args.seed)
    module = CenterNetModule(num_classes=data.num_classes, class_names=data.class_names,
                             category_ids=data.category_ids, input_size=args.input_size, weights=None, lr=2e-3,
                             schedule="cosine", warmup_epochs=0.5, **RUNS[name])
    trainer = pl.Trainer(accelerator="cpu", max_epochs=args.epochs, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         gradient_clip_val=10.0)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    return module, data, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="epochs of 25 steps (400 images, batch 16)")
    parser.add_argument("--input-size", type=int, default=160)
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {list(RUNS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    rows = []
    for name in args.runs.split(","):
        module, data, seconds = train(name, args)
        data.setup("validate")
        model = prepare_for_inference(module.model)
        row = {"run": name, "train_s": seconds, **evaluate(model, data, "fp32")}
        if name == "lean" and bf16_supported("cpu"):
            row["bf16"] = evaluate(model, data, "bf16")
        rows.append(row)
        print(f"{name}: trained in {seconds:.0f} s; " + ", ".join(f"{k} {v}" for k, v in row.items()
                                                                 if k not in ("run", "train_s")), flush=True)
    print(f"\n{args.epochs} epochs x 25 steps, batch 16, {args.input_size} px, seed {args.seed}, "
          f"{args.threads} threads; COCO metric on the 100 validation images (0-100)")
    print(f"{'run':<20} {'AP':>6} {'AP50':>6} {'train s':>8}")
    for row in rows:
        print(f"{row['run']:<20} {row['AP']:6.2f} {row['AP50']:6.2f} {row['train_s']:8.0f}")
    for row in rows:
        if "bf16" in row:
            low = row["bf16"]
            print(f"\n{row['run']} same weights, bf16 autocast: AP {low['AP']:.2f} (fp32 {row['AP']:.2f}, "
                  f"{low['AP'] - row['AP']:+.2f}), AP50 {low['AP50']:.2f} (fp32 {row['AP50']:.2f}, "
                  f"{low['AP50'] - row['AP50']:+.2f})")


if __name__ == "__main__":
    main()
