"""Ablations of the recipe on a real set: each arm changes one choice of the paper's recipe, trained from random
initialisation for the same steps with several seeds, evaluated with COCOeval on the validation split.

The base arm is the paper's recipe on the default network: crop-and-warp augmentation with colour and lighting
(``augment: {kind: paper}``), the paper's Gaussian radius, every box with area kept. The others differ in one thing:

    deconv       the paper's plain network (three 256-channel up-convolutions, full heads)
    dcn          the paper's ResNet-18 + DCN network (its headline numbers)
    exact        CornerNet's radius solved correctly (about a third of the paper's)
    elliptical   a Gaussian stretched with the box (half-axes 0.54 w/2, 0.54 h/2)
    resize       our older augmentation: resize the longer side by 0.6-1.4, place or crop, colour jitter 0.3
    drop         boxes under 30% visible or 2 px after cropping dropped (trained as background)
    chosen       elliptical and resize together (what the arms above picked for the default configs)

Every finished run is appended to ``--out`` (JSON lines) and skipped when the command is run again, so a long
ablation can be stopped and continued; ``--summary`` prints the table (mean and standard deviation over seeds).

    python bench/accuracy.py --root ../shared/data/bccd/BCCD --arms base,exact,elliptical,resize,drop,deconv,dcn \\
        --seeds 0,1,2 --steps 300 --input-size 256 --out bench/ablation_bccd.jsonl
    python bench/accuracy.py --summary --out bench/ablation_bccd.jsonl
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/latency.py: spinning OpenMP threads on a busy CPU
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from detector.data import AugmentOptions, DetectionDataModule
from detector.evaluation import coco_evaluate, detections_to_coco
from detector.inference.pipeline import detect
from detector.model.fuse import prepare_for_inference
from detector.training.module import CenterNetModule, OptimOptions

BASE = {"model": {"neck": "lean", "radius": "paper"}, "augment": {"kind": "paper"}}
ARMS = {  # name -> what differs from BASE
    "base": {},
    "deconv": {"model": {"neck": "deconv"}},
    "dcn": {"model": {"neck": "dcn"}},
    "exact": {"model": {"radius": "exact"}},
    "elliptical": {"model": {"radius": "elliptical"}},
    "resize": {"augment": {"kind": "resize", "min_visibility": 0.0, "min_box_size": 0.0}},
    "drop": {"augment": {"min_visibility": 0.3, "min_box_size": 2.0}},
    # the choices the evidence of the arms above picked, together (the default configs' recipe)
    "chosen": {"model": {"radius": "elliptical"}, "augment": {"kind": "resize", "min_visibility": 0.0,
                                                              "min_box_size": 0.0}},
}


def arm_settings(name: str) -> tuple[dict, dict]:
    """(model arguments, the data module's augment options) of an arm."""
    model = {**BASE["model"], **ARMS[name].get("model", {})}
    augment = {"min_visibility": 0.0, "min_box_size": 0.0, **BASE["augment"], **ARMS[name].get("augment", {})}
    return model, augment


def evaluate(model: torch.nn.Module, data: DetectionDataModule) -> dict[str, float]:
    """COCO AP, AP50 and AP75 (0..100) of ``model`` on the validation set."""
    results, ids = [], []
    for batch in data.val_dataloader():
        out = detect(model, batch["images"], batch["meta"])
        results += detections_to_coco(batch["image_ids"], out["boxes"], out["scores"], out["labels"],
                                      data.category_ids)
        ids += batch["image_ids"].tolist()
    metrics = coco_evaluate(data.val_coco, results, ids).metrics
    return {name: 100 * metrics[name] for name in ("AP", "AP50", "AP75")}


def run(name: str, seed: int, args: argparse.Namespace) -> dict:
    model_args, data_args = arm_settings(name)
    pl.seed_everything(seed, workers=True)
    data = DetectionDataModule(dataset=args.dataset, root=args.root, input_size=args.input_size,
                               batch_size=args.batch_size, num_workers=args.workers, seed=seed,
                               augment=AugmentOptions(**data_args))
    module = CenterNetModule(num_classes=data.num_classes, class_names=data.class_names,
                             category_ids=data.category_ids, input_size=args.input_size, weights=None,
                             optim=OptimOptions(lr=args.lr, schedule="cosine", warmup_epochs=args.warmup_epochs),
                             **model_args)
    trainer = pl.Trainer(accelerator="cpu", max_steps=args.steps, max_epochs=-1, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         gradient_clip_val=10.0)
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    seconds = time.perf_counter() - start
    data.setup("validate")
    metrics = evaluate(prepare_for_inference(module.model), data)
    return {"arm": name, "seed": seed, "steps": args.steps, "input_size": args.input_size,
            "batch_size": args.batch_size, "lr": args.lr, "dataset": args.dataset, "root": args.root,
            "train_s": round(seconds, 1), "s_per_step": round(seconds / args.steps, 3),
            **{k: round(v, 2) for k, v in metrics.items()}, "model": model_args, "data": data_args}


def done(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summary(rows: list[dict]) -> str:
    """A Markdown table: per arm, mean +- standard deviation over seeds of AP, AP50, AP75 and seconds per step."""
    lines = ["| arm | seeds | AP | AP50 | AP75 | s/step |", "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(row["arm"] for row in rows):
        runs = [row for row in rows if row["arm"] == name]
        cells = []
        for key in ("AP", "AP50", "AP75", "s_per_step"):
            values = [row[key] for row in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {spread:.2f}")
        seeds = ",".join(str(row["seed"]) for row in runs)
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="voc", help="the DataModule's dataset (voc: a VOC-format folder)")
    parser.add_argument("--root", default="../shared/data/bccd/BCCD")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {list(ARMS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--warmup-epochs", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/ablation_bccd.jsonl"))
    parser.add_argument("--summary", action="store_true", help="only print the table of --out")
    args = parser.parse_args()
    if args.summary:
        print(summary(done(args.out)))
        return
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    finished = {(row["arm"], row["seed"], row["steps"], row["input_size"]) for row in done(args.out)}
    for seed in (int(s) for s in args.seeds.split(",")):  # seed-major: every arm gets seed 0 first
        for name in args.arms.split(","):
            if (name, seed, args.steps, args.input_size) in finished:
                continue
            row = run(name, seed, args)
            with args.out.open("a") as file:
                file.write(json.dumps(row) + "\n")
            print(f"{name} seed {seed}: AP {row['AP']:.2f} AP50 {row['AP50']:.2f} in {row['train_s']:.0f} s",
                  flush=True)
    print(summary([row for row in done(args.out) if row["steps"] == args.steps]))


if __name__ == "__main__":
    main()
