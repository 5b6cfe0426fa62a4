"""The training run: LightningCLI over the module and the data (``train(args)``), with the resume of ``--ckpt_path``.

``detector.cli`` (``centernet train``, ``tools/train.py``) parses the command line's name and prints the report; this
does the work. Inference alone needs none of this: see ``detector.Detector``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
from jsonargparse import Namespace
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger

from detector.checkpoint import CheckpointError, check_network, load_checkpoint
from detector.errors import OptionError
from detector.data.datamodule import DetectionDataModule
from detector.plots import RESULTS_CSV, drop_results_from, save_evaluation_plots
from detector.training.callbacks import EarlyStop, LastCheckpoint, ResultsFiles, ValidateLastEpoch
from detector.training.configs import DEFAULT_CONFIG, config_path
from detector.training.module import CenterNetModule
from detector.training.naming import run_name
from detector.training.quiet import EPOCH_LINE, quiet_lightning


# LightningCLI's optimiser flags, which bypass model.optim: refused (refuse_lightning_optimizer_flags).
LIGHTNING_OPTIMIZER_FLAGS = ("--optimizer", "--lr_scheduler")


class DetectorCLI(LightningCLI):
    """LightningCLI with the data -> model links, the checkpoint callbacks, early stopping and ``--ckpt_path``."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")
        parser.link_arguments("data.category_ids", "model.category_ids", apply_on="instantiate")
        parser.link_arguments("data.input_size", "model.input_size")
        parser.link_arguments("data.dataset", "model.voc07", compute_fn=is_voc)
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({
            "checkpoint.monitor": "val/AP", "checkpoint.mode": "max", "checkpoint.save_last": False,
            "checkpoint.filename": "best-epoch{epoch:03d}", "checkpoint.auto_insert_metric_name": False,
        })
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(EarlyStop, "early_stopping")  # --early_stopping.patience N (0: off)
        parser.add_argument("--name", type=str | None, default=None,
                            help="The run's folder: <save_dir>/<name>/version_N. Default: named from the data: the "
                                 "training json's stem (COCO format), the single VOC folder's name, the YOLO YAML's "
                                 "stem; on the data a packaged config was written for, its name (coco_resnet18, "
                                 "...); else the format (synthetic, coco, voc). A logger name of your own config "
                                 "(not a packaged config's) is kept.")
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="Resume training: 'last' (the newest last.ckpt of this run name, see --name) "
                                 "or the path of a checkpoint. The step, epoch, optimiser state and the "
                                 "learning-rate schedule continue.")
        parser.add_argument("--exist_ok", type=bool, default=False,
                            help="true: a new run may write into a run folder that already holds files (a fixed "
                                 "logger version); another run's checkpoints are never overwritten")
        parser.add_argument("--report_checkpoint", type=Literal["best", "last"], default="best",
                            help="The checkpoint validated and reported at the end: 'best' (by validation AP) or "
                                 "'last' (the last epoch, as the paper reports).")

    def parse_arguments(self, parser, args) -> None:
        """Always the command line handed over by :func:`train` (which chose the config): LightningCLI's warning
        about ``args`` given beside ``sys.argv`` does not apply."""
        self.config = parser.parse_args(args)

    def before_instantiate_classes(self) -> None:
        """Name the run's folder from what it trains (:func:`run_name`) before the logger is built, so that the
        saved ``config.yaml`` holds the name too (a resume from it comes back to the same folder)."""
        check_trainer_options(self.config.trainer)
        logger = self.config.trainer.get("logger")
        init = logger.get("init_args") if isinstance(logger, Namespace) else None
        if init is not None and "name" in init:
            init.name = run_name(self.config.get("name"), init.name, self.config.data.as_dict())


def check_trainer_options(trainer: Namespace) -> None:
    """Refuse a ``--trainer.*`` count out of its range (:class:`OptionError` naming the flag) before anything is built:
    epochs and steps are -1 (no limit) or more than 0."""
    for flag in ("max_epochs", "max_steps", "check_val_every_n_epoch", "accumulate_grad_batches"):
        value = trainer.get(flag)
        unlimited = flag in ("max_epochs", "max_steps") and value == -1
        if isinstance(value, int) and not isinstance(value, bool) and value < 1 and not unlimited:
            also = " (or -1: no limit)" if flag in ("max_epochs", "max_steps") else ""
            raise OptionError(f"--trainer.{flag} {value}: must be at least 1{also}")


def is_voc(dataset: str) -> bool:
    """Whether validation computes the VOC07 mAP too (``model.voc07``, linked from ``data.dataset``)."""
    return dataset == "voc"


def trainer_defaults() -> dict:
    return {
        "default_root_dir": "runs",
        "logger": {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                   "init_args": {"save_dir": "runs", "name": "synthetic"}},
        "callbacks": [LearningRateMonitor(logging_interval="step"), ValidateLastEpoch(), ResultsFiles()],
    }


def resolve_ckpt_path(ckpt_path: str | None, trainer: pl.Trainer, model: CenterNetModule) -> str | None:
    """``last`` -> the newest ``last.ckpt`` of this run name (``<save_dir>/<name>/version_*/checkpoints/``).

    Refuses a checkpoint of another network (other classes, neck or head width) before any run folder is made, and
    says where training resumes (step and epoch); :class:`CheckpointError` when there is nothing to resume.
    """
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        root = Path(trainer.logger.root_dir if trainer.logger else trainer.default_root_dir)
        candidates = sorted(root.glob("*/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise CheckpointError(f"--ckpt_path last: no last.ckpt under {root}; train once without it first")
        ckpt_path = str(candidates[-1])
    state = load_checkpoint(ckpt_path)
    try:
        check_network(state, model.description(), "the training data")
    except CheckpointError as error:
        raise CheckpointError(f"cannot resume from {ckpt_path}: {error}") from None
    run = _continue_run_folder(ckpt_path, trainer)
    if trainer.is_global_zero:
        step = state["global_step"]
        dropped = drop_results_from(run / RESULTS_CSV, step + 1) if run else 0  # validations the resume redoes
        redone = f" ({dropped} {RESULTS_CSV} rows after step {step} removed: they are redone)" if dropped else ""
        print(f"resuming from {ckpt_path} at step {step}, epoch {state['epoch']}{redone}")
    return ckpt_path


def _continue_run_folder(ckpt_path: str, trainer: pl.Trainer) -> Path | None:
    """A checkpoint of this logger's ``version_N/checkpoints/``: the resumed run logs to that same ``version_N``
    (one TensorBoard run; the best-checkpoint tracking, kept per folder, goes on) instead of a new version, which
    is returned (None when the run logs elsewhere)."""
    logger = trainer.logger
    run = Path(ckpt_path).resolve().parent.parent  # <root>/version_N
    if not isinstance(logger, TensorBoardLogger) or Path(ckpt_path).resolve().parent.name != "checkpoints":
        return None
    number = run.name.removeprefix("version_")
    if run.parent == Path(logger.root_dir).resolve() and run.name.startswith("version_") and number.isdigit():
        logger._version = int(number)  # read lazily, when fit sets up
        return run
    return None


def refuse_overwriting_run(trainer: pl.Trainer, resuming: bool, exist_ok: bool) -> None:
    """A new run (no ``--ckpt_path``) writes over no other run's files (``detector.overwrite``'s rule): a checkpoint
    folder holding checkpoints is refused, and a run folder holding files unless ``exist_ok``. Each run gets a new
    ``version_N`` by default, so only a fixed logger version, ``--checkpoint.dirpath`` or a run without a logger
    (``<default_root_dir>/checkpoints``) can meet either; a resumed run's folder is its own."""
    if resuming:
        return
    logger, callback = trainer.logger, trainer.checkpoint_callback
    fixed = isinstance(logger, TensorBoardLogger) and logger._version is not None  # else a new version_N
    run = Path(logger.log_dir) if fixed else None
    folder = Path(callback.dirpath) if callback is not None and callback.dirpath else None
    folder = folder or (run / "checkpoints" if run is not None else None)
    if folder is None and callback is not None and logger is None:  # Lightning's folder for a run without a logger
        folder = Path(trainer.default_root_dir) / "checkpoints"
    if folder is not None and folder.is_dir() and any(folder.glob("*.ckpt")):
        raise OptionError(f"the checkpoint folder {folder} holds another run's checkpoints, which a new run never "
                          "overwrites; give another --checkpoint.dirpath (or logger version), or resume that run "
                          "with --ckpt_path")
    if run is not None and run.is_dir() and any(run.iterdir()) and not exist_ok:
        raise OptionError(f"the run folder {run} already holds files; give another logger version or --name, "
                          "--exist_ok true to write into it, or --ckpt_path to resume its run")


def _has_config(args: list[str]) -> bool:
    return any(a == "--config" or a.startswith("--config=") for a in args)


def _with_packaged_configs(args: list[str]) -> list[str]:
    """``--config NAME`` -> the packaged config of that name when ``NAME`` is not a file here."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = str(config_path(out[i + 1]))
        elif arg.startswith("--config="):
            out[i] = f"--config={config_path(arg.split('=', 1)[1])}"
    return out


def refuse_lightning_optimizer_flags(args: list[str]) -> None:
    """LightningCLI's ``--optimizer`` and ``--lr_scheduler`` would replace ``model.optim`` silently (its learning-rate
    scaling, warmup and milestones lost): the run has none (``auto_configure_optimizers=False``) and says which
    options to use instead, in one line."""
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag.split(".", 1)[0] in LIGHTNING_OPTIMIZER_FLAGS:
            raise OptionError(f"{flag}: the optimiser and its learning-rate schedule are set by --model.optim.* "
                              "(lr, lr_batch_size, weight_decay, schedule, milestones, gamma, warmup_epochs)")


def train(args: list[str], prog: str = "centernet train") -> DetectorCLI:
    """Parse ``args`` (the ``tools/train.py`` command line), train, then validate the best checkpoint (or the last,
    with ``--report_checkpoint last``).

    Without ``--config`` the packaged ``synthetic.yaml`` is the default config (so ``--help`` shows its values).
    ``prog`` names the command in the usage line. Returns the CLI with ``best_checkpoint`` and ``last_checkpoint``
    set (paths or None).
    """
    refuse_lightning_optimizer_flags(args)
    with quiet_lightning():
        return _train(args, prog)


def _train(args: list[str], prog: str) -> DetectorCLI:
    defaults = {"prog": prog}
    if not _has_config(args):
        defaults["default_config_files"] = [str(config_path(DEFAULT_CONFIG))]
    cli = DetectorCLI(CenterNetModule, DetectionDataModule, run=False, args=_with_packaged_configs(args),
                      save_config_kwargs={"overwrite": True}, trainer_defaults=trainer_defaults(),
                      parser_kwargs=defaults, auto_configure_optimizers=False)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    ckpt_path = resolve_ckpt_path(cli.config.get("ckpt_path"), trainer, model)
    refuse_overwriting_run(trainer, ckpt_path is not None, bool(cli.config.get("exist_ok")))
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    callback = trainer.checkpoint_callback
    cli.best_checkpoint = callback.best_model_path if callback and callback.best_model_path else None
    cli.last_checkpoint = next((c.path for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
    cli.reported = cli.config.get("report_checkpoint") or "best"
    reported = cli.last_checkpoint if cli.reported == "last" else cli.best_checkpoint
    with quiet_lightning(EPOCH_LINE):  # the reported checkpoint's table follows, under its name
        trainer.validate(model, datamodule=data, ckpt_path=reported, verbose=False)
    log_dir = trainer.log_dir  # a collective under DDP: every rank asks
    if trainer.is_global_zero and log_dir and model.last_result is not None:
        save_evaluation_plots(model.last_result, log_dir)  # the reported checkpoint's, beside results.csv
    return cli
