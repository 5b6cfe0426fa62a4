"""Our recipe side by side with the peer a user would pick: YOLOv8n (ultralytics) and our default recipe, both trained
from random initialisation on the same photos with the same input size, epochs, batch and seed, each timed, both
scored by pycocotools on the same validation json.

What a run does, per seed and side, each side in its own process (ultralytics sets torch to ``cpu_count - 1``
threads on a CPU when it picks the device; ours keeps torch's default unless ``--ours-threads``; each row records the
``torch.get_num_threads()`` its side trained with):

- the data: read once by the project's own readers (``detector.data.detect`` finds the format of ``--data``, the
  data module gives the train and validation images: the dataset's split, or the hashed one of ``detector.data.split``);
  the validation ground truth is written as one COCO json, and a YOLO-format copy (images linked, labels written) for
  ultralytics, both in ``--cache`` (outside the project; never the dataset's folder);
- peer: ``YOLO("yolov8n.yaml")`` (random weights) trained offline (``YOLO_OFFLINE=1``, ``plots=False``,
  ``workers=0``, the CPU) with its own defaults otherwise, then its best (or last, ``--checkpoint last``) weights
  predict the validation images at confidence 0.001, converted to COCO results;
- ours: ``tools/train.py --data.root DATA`` with the default recipe (no config) and the same input size, epochs,
  batch and seed, then its best (or last) checkpoint predicts the same images at score 0.001;
- both results files are scored by ``COCOeval`` against the same json (AP, AP50, AP75 in 0..100); the wall time is
  the whole training command (its own validations included: the peer validates every epoch, ours every 4th), and
  train images/s = train images x epochs / that time.

Rows go to ``--out`` (JSON lines), one per side x seed x settings, and a finished row is skipped when the command
runs again: spread the seeds over several runs. ``--equal-time`` adds the row "ours at the peer's wall time": our
epochs scaled so that our measured time per epoch (the rows of the same settings) fills the peer's mean wall time
(the cosine schedule then spans those epochs). ``--summary`` prints the table (mean ± standard deviation over seeds).

    python bench/peer_train.py --data /work/shared/data/bccd/BCCD --imgsz 256 --epochs 24 --batch 16 --seeds 0
    python bench/peer_train.py --data /work/shared/data/bccd/BCCD --imgsz 256 --epochs 24 --batch 16 --seeds 0 \\
        --equal-time
    python bench/peer_train.py --summary

ultralytics is installed for this benchmark only (``pip install --no-deps ultralytics``), never a dependency.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/latency.py: spinning OpenMP threads on a busy CPU
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "peer_bccd.jsonl"
DEFAULT_DATA = "/work/shared/data/bccd/BCCD"
CONF = 0.001  # both sides predict down to this score; COCOeval keeps the best 100 per image
MAX_DET = 100
ARMS = {"peer": "YOLOv8n (ultralytics)", "ours": "CenterNet, default recipe",
        "ours@peer-time": "CenterNet, default recipe, at the peer's wall time"}


# the data: one split, two formats ---------------------------------------------------------------------------------

def cache_folder(data: Path, cache: Path | None) -> Path:
    """Where the YOLO copy and the validation json of ``data`` go: ``--cache``, else ``$DETECTOR_CACHE/peer/<name>``,
    else ``~/.cache/detector/peer/<name>``."""
    if cache is not None:
        return cache
    base = Path(os.environ["DETECTOR_CACHE"]) if os.environ.get("DETECTOR_CACHE") else Path.home() / ".cache/detector"
    return base / "peer" / data.resolve().name


def read_split(data: Path):
    """The train and validation datasets of ``data`` as our training command reads them (format detected)."""
    from detector.data.datamodule import DetectionDataModule
    from detector.data.detect import detect_dataset

    found = detect_dataset(data)
    module = DetectionDataModule(dataset=found.dataset, num_workers=0, **found.options)
    module.setup("fit")
    return module.train_dataset, module.val_dataset


def yolo_label_lines(annotation, width: int, height: int) -> list[str]:
    """``class cx cy w h`` lines (normalised by the image's real size) of an annotation's boxes (its crowd boxes, VOC
    ``difficult``, are no training targets: left out, as our training leaves them out)."""
    sx, sy = width / annotation.width, height / annotation.height  # the reader trusts the pixels over the xml
    lines = []
    for (x1, y1, x2, y2), label in zip(annotation.boxes.tolist(), annotation.labels.tolist()):
        x1, x2, y1, y2 = x1 * sx, x2 * sx, y1 * sy, y2 * sy
        lines.append(f"{label} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                     f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return lines


def prepare_data(data: Path, cache: Path) -> dict:
    """Write ``cache/yolo`` (images linked, labels, ``data.yaml``) and ``cache/val.json`` from our reading of
    ``data``; returns what the sides need (paths, class names, the validation images and their ids)."""
    from PIL import Image

    from detector.data.cocoformat import write_dataset_json

    train, val = read_split(data)
    yolo = cache / "yolo"
    for split, dataset in (("train", train), ("val", val)):
        for sub in ("images", "labels"):
            (yolo / sub / split).mkdir(parents=True, exist_ok=True)
        for annotation in dataset.annotations:
            image = yolo / "images" / split / annotation.file.name
            if not image.exists():
                image.symlink_to(annotation.file.resolve())
            with Image.open(annotation.file) as opened:
                width, height = opened.size
            label = yolo / "labels" / split / f"{annotation.file.stem}.txt"
            label.write_text("".join(f"{line}\n" for line in yolo_label_lines(annotation, width, height)))
    names = "\n".join(f"  {i}: {json.dumps(name)}" for i, name in enumerate(train.class_names))
    (yolo / "data.yaml").write_text(f"path: {yolo}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    val_json = write_dataset_json(val, cache / "val.json")
    return {"data": str(data), "yolo_yaml": str(yolo / "data.yaml"), "val_json": str(val_json),
            "class_names": list(train.class_names), "category_ids": list(train.category_ids),
            "val_images": [str(a.file) for a in val.annotations], "val_ids": [a.image_id for a in val.annotations],
            "n_train": len(train), "n_val": len(val)}


def score(val_json: str, results: list[dict]) -> dict[str, float]:
    """AP, AP50, AP75 (0..100) of COCO ``results`` against ``val_json`` (pycocotools, quiet)."""
    from detector.data.coco import coco_from_dict, load_coco_json
    from detector.evaluation import coco_evaluate

    gt = coco_from_dict(load_coco_json(val_json))
    metrics = coco_evaluate(gt, results, sorted(gt.getImgIds())).metrics
    return {name: round(100 * metrics[name], 2) for name in ("AP", "AP50", "AP75")}


# the two sides, each in its own process ---------------------------------------------------------------------------

def train_peer(job: dict, folder: Path) -> tuple[float, int, list[dict]]:
    """YOLOv8n from its YAML: (training seconds, torch threads it trained with, COCO results)."""
    import torch
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")  # random initialisation: no weights file
    start = time.perf_counter()
    model.train(data=job["yolo_yaml"], imgsz=job["imgsz"], epochs=job["epochs"], batch=job["batch"],
                seed=job["seed"], workers=0, plots=False, device="cpu", project=str(folder), name="run",
                exist_ok=True, verbose=False)
    seconds, threads = time.perf_counter() - start, torch.get_num_threads()
    weights = Path(model.trainer.save_dir) / "weights" / f"{job['checkpoint']}.pt"
    trained, results = YOLO(str(weights)), []
    for path, image_id in zip(job["val_images"], job["val_ids"]):
        for r in trained.predict(path, imgsz=job["imgsz"], conf=CONF, max_det=MAX_DET, device="cpu", verbose=False):
            for (x1, y1, x2, y2), conf, cls in zip(r.boxes.xyxy.tolist(), r.boxes.conf.tolist(), r.boxes.cls.tolist()):
                results.append({"image_id": image_id, "category_id": job["category_ids"][int(cls)],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": conf})
    return seconds, threads, results


def train_ours(job: dict, folder: Path) -> tuple[float, int, list[dict]]:
    """Our default recipe through the training command: (seconds, torch threads, COCO results)."""
    import torch

    from detector.cli import train_main
    from detector.inference.detectors import Detector
    from detector.results import coco_results

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    args = ["--data.root", job["data"], "--data.input_size", str(job["imgsz"]), "--data.batch_size",
            str(job["batch"]), "--trainer.max_epochs", str(job["epochs"]), "--seed_everything", str(job["seed"]),
            "--data.seed", str(job["seed"]), "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", str(folder / "runs"), "--trainer.default_root_dir",
            str(folder / "runs"), "--report_checkpoint", job["checkpoint"]]
    start = time.perf_counter()
    cli = train_main(args)
    seconds, threads = time.perf_counter() - start, torch.get_num_threads()
    checkpoint = cli.best_checkpoint if job["checkpoint"] == "best" else cli.last_checkpoint
    detector, results = Detector.from_checkpoint(checkpoint, device="cpu", max_detections=MAX_DET), []
    for path, image_id in zip(job["val_images"], job["val_ids"]):
        results += coco_results(detector.predict(path, conf=CONF), image_id, detector.category_ids, Path(path).name)
    return seconds, threads, results


def worker(job_file: Path) -> None:
    """The child process: train one side, write ``{train_s, threads, results, versions}`` beside the job."""
    job = json.loads(job_file.read_text())
    train = train_peer if job["side"] == "peer" else train_ours
    seconds, threads, results = train(job, job_file.parent)
    versions = {"torch": __import__("torch").__version__}
    if job["side"] == "peer":
        versions["ultralytics"] = __import__("ultralytics").__version__
    job_file.with_name("done.json").write_text(json.dumps({"train_s": seconds, "threads": threads,
                                                            "results": results, "versions": versions}))


def run_side(side: str, seed: int, epochs: int, args: argparse.Namespace, data: dict) -> dict:
    """Train and score one side in a child process for ``epochs``; the row of ``--out`` (``budget_epochs``: the
    settings' epochs, which an equal-time row was scaled from)."""
    arm = side
    side = "peer" if side == "peer" else "ours"
    job = {**data, "side": side, "seed": seed, "epochs": epochs, "imgsz": args.imgsz, "batch": args.batch,
           "checkpoint": args.checkpoint, "threads": args.ours_threads}
    with tempfile.TemporaryDirectory(prefix=f"peer_{arm}_{seed}_") as folder:
        job_file = Path(folder) / "job.json"
        job_file.write_text(json.dumps(job))
        env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--worker", str(job_file)], check=True, env=env, cwd=folder)
        process_s = time.perf_counter() - start
        done = json.loads((Path(folder) / "done.json").read_text())
    metrics = score(data["val_json"], done["results"])
    return {"arm": arm, "seed": seed, "imgsz": args.imgsz, "epochs": epochs, "budget_epochs": args.epochs,
            "batch": args.batch,
            "checkpoint": args.checkpoint, "data": data["data"], "n_train": data["n_train"], "n_val": data["n_val"],
            **metrics, "train_s": round(done["train_s"], 1), "process_s": round(process_s, 1),
            "images_per_s": round(data["n_train"] * epochs / done["train_s"], 2), "threads": done["threads"],
            "detections": len(done["results"]), "versions": done["versions"],
            "load_before": round(os.getloadavg()[0], 2), "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores"}


# rows, the equal-time epochs and the table ------------------------------------------------------------------------

def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def same_settings(row: dict, args: argparse.Namespace) -> bool:
    return (row["imgsz"], row["batch"], row["checkpoint"]) == (args.imgsz, args.batch, args.checkpoint)


def equal_time_epochs(rows: list[dict], epochs: int) -> int | None:
    """Our epochs for the peer's mean wall time at ``epochs``: that time / our mean seconds per epoch (rows of the
    same settings at ``epochs``); None until both sides have a row."""
    peer = [row["train_s"] for row in rows if row["arm"] == "peer" and row["budget_epochs"] == epochs]
    ours = [row["train_s"] / row["epochs"] for row in rows if row["arm"] == "ours" and row["budget_epochs"] == epochs]
    if not peer or not ours:
        return None
    return max(1, round(statistics.mean(peer) / statistics.mean(ours)))


def mean_spread(values: list[float], digits: int = 1) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def summary(rows: list[dict]) -> str:
    """A Markdown table: per arm and settings, mean ± standard deviation over seeds of AP, AP50, the wall time and
    train images/s, with the torch threads each side trained with."""
    lines = ["| side | input, epochs, batch | seeds | AP | AP50 | wall time (s) | train images/s | torch threads |",
             "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["arm"], row["imgsz"], row["budget_epochs"], row["batch"], row["checkpoint"]),
                          []).append(row)
    for (arm, imgsz, _, batch, checkpoint), runs in groups.items():
        seeds = ",".join(str(row["seed"]) for row in runs)
        epochs = ",".join(sorted({str(row["epochs"]) for row in runs}, key=int))
        threads = ",".join(sorted({str(row["threads"]) for row in runs}))
        lines.append(f"| {ARMS[arm]} ({checkpoint}) | {imgsz} px, {epochs}, {batch} | {seeds} | "
                     f"{mean_spread([r['AP'] for r in runs])} | {mean_spread([r['AP50'] for r in runs])} | "
                     f"{mean_spread([r['train_s'] for r in runs], 0)} | "
                     f"{mean_spread([r['images_per_s'] for r in runs])} | {threads} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(DEFAULT_DATA),
                        help="the dataset folder or file, as --data.root of tools/train.py (format detected)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for the YOLO copy and the validation json (default ~/.cache/detector/peer/NAME)")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seeds", default="0", help="comma-separated")
    parser.add_argument("--sides", default="peer,ours", help="comma-separated, of peer, ours")
    parser.add_argument("--equal-time", action="store_true",
                        help="also ours at the peer's mean wall time (epochs scaled; needs both sides' rows)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="the weights scored on both sides: best on validation (each side's own rule) or last")
    parser.add_argument("--ours-threads", type=int, default=0, help="torch threads for ours; 0: torch's default")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON lines, one row per side x seed")
    parser.add_argument("--summary", action="store_true", help="only print the table of --out")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    unknown = set(filter(None, args.sides.split(","))) - {"peer", "ours"}
    if unknown:
        raise SystemExit(f"error: --sides {args.sides}: {sorted(unknown)} unknown; give peer, ours or both")
    if args.worker is not None:
        return worker(args.worker)
    if args.summary:
        print(summary(read_rows(args.out)))
        return
    data = prepare_data(args.data, cache_folder(args.data, args.cache))
    print(f"{data['data']}: {data['n_train']} train, {data['n_val']} validation images; {data['val_json']}",
          flush=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        plan = [(side, args.epochs) for side in args.sides.split(",") if side]
        for arm, epochs in plan + [("ours@peer-time", None)] * args.equal_time:
            rows = [row for row in read_rows(args.out) if same_settings(row, args)]
            if epochs is None:
                epochs = equal_time_epochs(rows, args.epochs)
                if epochs is None:
                    print(f"seed {seed}: no equal-time row yet (needs a peer and an ours row at {args.epochs} "
                          "epochs)", flush=True)
                    continue
            if any((row["arm"], row["seed"], row["budget_epochs"]) == (arm, seed, args.epochs) for row in rows):
                continue
            row = run_side(arm, seed, epochs, args, data)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as file:
                file.write(json.dumps(row) + "\n")
            print(f"{arm} seed {seed}, {epochs} epochs: AP {row['AP']:.2f} AP50 {row['AP50']:.2f} in "
                  f"{row['train_s']:.0f} s ({row['threads']} torch threads)", flush=True)
    print(summary([row for row in read_rows(args.out) if same_settings(row, args)]))


if __name__ == "__main__":
    main()
