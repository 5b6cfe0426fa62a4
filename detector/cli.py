"""The command line of ``tools/train.py``: LightningCLI with the data -> model links and the run's report."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
from jsonargparse import ArgumentParser
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI

from detector.callbacks import LastCheckpoint
from detector.checkpoint import CHECKPOINT_KEY, CheckpointError, check_classes, load_checkpoint
from detector.data.datamodule import DetectionDataModule
from detector.evaluation import format_table
from detector.module import CenterNetModule

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "synthetic.yaml"


class DetectorCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.category_ids", "model.category_ids", apply_on="instantiate")
        parser.link_arguments("data.input_size", "model.input_size")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/AP", "checkpoint.mode": "max", "checkpoint.save_last": False,
            "checkpoint.filename": "best-epoch{epoch:03d}", "checkpoint.auto_insert_metric_name": False,
        })
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="Resume training: 'last' (the newest last.ckpt under the logger's folder) "
                                 "or the path of a checkpoint. The step, epoch and optimiser state continue.")
        parser.add_argument("--report_checkpoint", type=Literal["best", "last"], default="best",
                            help="The checkpoint validated and reported at the end: 'best' (by validation AP) or "
                                 "'last' (the last epoch, as the paper reports).")


def trainer_defaults() -> dict:
    return {
        "default_root_dir": "runs",
        "logger": {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                   "init_args": {"save_dir": "runs", "name": "synthetic"}},
        "callbacks": [LearningRateMonitor(logging_interval="step")],
    }


def resolve_ckpt_path(ckpt_path: str | None, trainer) -> str | None:
    """``last`` -> the newest ``last.ckpt`` under the logger's run folders (a fresh run gets a new version).

    Says where training resumes (step and epoch), or exits with a clear message when there is nothing to resume.
    """
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        root = Path(trainer.logger.root_dir if trainer.logger else trainer.default_root_dir)
        candidates = sorted(root.glob("**/last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise SystemExit(f"--ckpt_path last: no last.ckpt under {root}; train once without it first")
        ckpt_path = str(candidates[-1])
    try:
        state = load_checkpoint(ckpt_path)
    except CheckpointError as error:
        raise SystemExit(f"--ckpt_path: {error}") from error
    if trainer.is_global_zero:
        print(f"resuming from {ckpt_path} at step {state['global_step']}, epoch {state['epoch']}")
    return ckpt_path


def main(args: list[str] | None = None) -> DetectorCLI:
    args = list(sys.argv[1:] if args is None else args)
    if not any(a == "--config" or a.startswith("--config=") for a in args) and not {"-h", "--help"} & set(args):
        args = ["--config", str(DEFAULT_CONFIG), *args]
    cli = DetectorCLI(CenterNetModule, DetectionDataModule, run=False, args=args, save_config_kwargs={"overwrite": True},
                      trainer_defaults=trainer_defaults())
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    trainer.fit(model, datamodule=data, ckpt_path=resolve_ckpt_path(cli.config.get("ckpt_path"), trainer))
    cli.best_checkpoint, cli.last_checkpoint = report(trainer, model, data, cli.config.get("report_checkpoint"))
    return cli


def report(trainer, model: CenterNetModule, data: DetectionDataModule,
           which: str = "best") -> tuple[str | None, str | None]:
    """Validate the best (or the last) checkpoint, print its table, and tell the user where things are and what
    to run next.

    Returns the (best, last) checkpoint paths.
    """
    callback = trainer.checkpoint_callback
    best = callback.best_model_path if callback and callback.best_model_path else None
    last = next((c.path for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
    reported = last if which == "last" else best
    trainer.validate(model, datamodule=data, ckpt_path=reported, verbose=False)
    log_dir = trainer.log_dir  # a collective under DDP: every rank asks
    if not trainer.is_global_zero:
        return best, last
    if model.last_result is not None:
        name = "last" if which == "last" else "best"
        print("\n" + format_table(model.last_result, f"validation split, {name} checkpoint, "
                                                      f"{model.eval_description()}"))
    checkpoint = best or last
    print(f"\nrun folder:  {log_dir}")
    print(f"checkpoints: {callback.dirpath if callback else 'none'} (best: {best}, last: {last})")
    if checkpoint:
        quoted = shlex.quote(checkpoint)
        print(f"evaluate:    python tools/eval.py --checkpoint {quoted}")
        print(f"demo:        python tools/demo.py --checkpoint {quoted} --source <video, image, folder or webcam 0>")
        print("resume:      python tools/train.py --config <same config> --ckpt_path last")
    return best, last


def eval_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="tools/eval.py", description=(
        "Evaluate a checkpoint with the COCO metric (and VOC07 mAP on VOC). The dataset defaults to the one the "
        "checkpoint was trained on; any --data.* option overrides it (e.g. --data.val_json/--data.val_images "
        "for your own COCO-format split)."))
    parser.add_argument("--checkpoint", type=str, required=True, help="a .ckpt written by tools/train.py")
    parser.add_class_arguments(DetectionDataModule, "data")
    parser.add_argument("--flip_test", type=bool, default=False, help="average each image with its mirror")
    parser.add_argument("--nms_iou", type=float | None, default=None, help="class-wise NMS IoU after decoding")
    parser.add_argument("--results", type=str | None, default=None,
                        help="write the detections here as a COCO results json (dataset category ids)")
    parser.add_argument("--accelerator", type=str, default="auto", help="cpu, gpu, auto, ...")
    parser.add_argument("--precision", type=str | None, default=None, help="e.g. bf16-mixed, 16-mixed")
    parser.add_argument("--devices", type=int, default=1, help="devices (processes) to evaluate on")
    parser.add_argument("--strategy", type=str, default="auto", help="e.g. ddp to split the set over --devices")
    return parser


def _argument_value(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def eval_main(args: list[str] | None = None) -> dict[str, float]:
    args = list(sys.argv[1:] if args is None else args)
    parser = eval_parser()
    path = _argument_value(args, "--checkpoint")
    checkpoint = load_checkpoint(path) if path and not {"-h", "--help"} & set(args) else None
    if checkpoint is not None and "datamodule_hyper_parameters" in checkpoint:
        known = parser.get_defaults().data
        parser.set_defaults({f"data.{k}": v for k, v in checkpoint["datamodule_hyper_parameters"].items() if k in known})
    config = parser.parse_args(args)
    data = DetectionDataModule(**config.data.as_dict())
    data.setup("validate")
    check_classes(checkpoint, data.class_names, "the evaluation dataset")
    info = checkpoint[CHECKPOINT_KEY]
    model = CenterNetModule(num_classes=info["num_classes"], class_names=info["class_names"],
                            category_ids=data.category_ids, input_size=info["input_size"], neck=info["neck"],
                            head_channels=info["head_channels"], flip_test=config.flip_test, nms_iou=config.nms_iou)
    model.load_state_dict(checkpoint["state_dict"])
    if config.results:
        Path(config.results).parent.mkdir(parents=True, exist_ok=True)
        model.results_path = config.results
    trainer = pl.Trainer(accelerator=config.accelerator, devices=config.devices, strategy=config.strategy,
                         logger=False, precision=config.precision,
                         default_root_dir=str(Path(config.checkpoint).parent))
    trainer.validate(model, datamodule=data, verbose=False)
    metrics = dict(trainer.callback_metrics)
    if not trainer.is_global_zero:
        return {k: float(v) for k, v in metrics.items()}
    result = model.last_result
    print("\n" + format_table(result, f"{config.checkpoint}, {model.eval_description()}"))
    print(f"images: {int(metrics['val/images'])}")
    for key in ("val/mAP50_voc07", "val/mAP50_allpoint"):
        if key in metrics:
            print(f"{key[4:]}: {100 * float(metrics[key]):.2f}")
    if config.results:
        print(f"detections written to {config.results}")
    return {k: float(v) for k, v in metrics.items()}
