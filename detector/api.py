"""The runs that need Lightning, as Python functions: ``train(args)`` and ``evaluate(checkpoint, ...)``.

``detector.cli`` (``centernet train|eval``, ``tools/train.py``, ``tools/eval.py``) parses and prints; these functions
do the work and return it. Inference alone needs none of this: see ``detector.Detector``.
"""
from __future__ import annotations

import inspect
import logging
import warnings
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import yaml
from jsonargparse import ArgumentParser, Namespace
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger

from detector.callbacks import LastCheckpoint, ValidateLastEpoch
from detector.checkpoint import CheckpointError, check_classes, check_network, load_checkpoint, read_description
from detector.data.datamodule import DetectionDataModule
from detector.data.detect import json_data_name
from detector.data.voc import voc_layout
from detector.evaluation import EvalResult
from detector.module import CenterNetModule
from detector.plots import save_evaluation, save_evaluation_plots

DEFAULT_CONFIG = "synthetic.yaml"
# Data options that only shape the training augmentation (the ``augment`` group): the evaluation does not offer them.
TRAIN_ONLY_DATA_OPTIONS = {"augment"}
# Lightning's messages that bury ours: its advertising tips, the checkpoint it loads (we say which), accelerators
# this machine has none of. Matched at the start of the message.
LIGHTNING_NOISE = ("💡 Tip:", "Restoring states from the checkpoint", "Loaded model weights from the checkpoint",
                   "Restored all states from the checkpoint", "TPU available:", "HPU available:")
# The module's per-epoch line, dropped where there is no epoch: a checkpoint's evaluation (the table follows).
EPOCH_LINE = ("epoch ",)
# Logger names that are nobody's choice: TensorBoardLogger's own default (a config without a name gets it).
LIBRARY_RUN_NAMES = ("lightning_logs",)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


@contextmanager
def quiet_lightning(prefixes: tuple[str, ...] = ()):
    """Drop :data:`LIGHTNING_NOISE` (and messages starting with ``prefixes``) from Lightning's info log, and its
    deprecation warning about its own pytree use, while the block runs."""
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")  # rank_zero_info's, ours included
    drop = _DropMessages(LIGHTNING_NOISE + tuple(prefixes))
    logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated")
            yield
    finally:
        logger.removeFilter(drop)


def packaged_configs() -> list[Path]:
    """The config files shipped inside the package (``detector/configs/*.yaml`` and ``configs/paper/*.yaml``)."""
    folder = Path(str(resources.files("detector") / "configs"))
    return sorted(folder.glob("*.yaml")) + sorted(folder.glob("paper/*.yaml"))


def config_path(name: str | Path) -> Path:
    """A config file: ``name`` itself if it exists, else the packaged config of that file name, so that
    ``--config coco_resnet18.yaml`` works after a plain ``pip install``; otherwise ``name`` (the parser says it is
    missing)."""
    path = Path(name)
    if path.is_file():
        return path
    by_path = [p for p in packaged_configs() if p.as_posix().endswith("/" + path.as_posix().removeprefix("configs/"))]
    return next(iter(by_path), next((p for p in packaged_configs() if p.name == path.name), path))


class DetectorCLI(LightningCLI):
    """LightningCLI with the data -> model links, the checkpoint callbacks and ``--ckpt_path``."""

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
        logger = self.config.trainer.get("logger")
        init = logger.get("init_args") if isinstance(logger, Namespace) else None
        if init is not None and "name" in init:
            init.name = run_name(self.config.get("name"), init.name, self.config.data.as_dict())


def trainer_defaults() -> dict:
    return {
        "default_root_dir": "runs",
        "logger": {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                   "init_args": {"save_dir": "runs", "name": "synthetic"}},
        "callbacks": [LearningRateMonitor(logging_interval="step"), ValidateLastEpoch()],
    }


def packaged_run_names() -> dict[str, str]:
    """The logger name of each packaged config -> the dataset that config was written for."""
    names = {}
    for path in packaged_configs():
        config = yaml.safe_load(path.read_text()) or {}
        logger = (config.get("trainer") or {}).get("logger")
        name = ((logger or {}).get("init_args") or {}).get("name") if isinstance(logger, dict) else None
        if name:
            names[name] = (config.get("data") or {}).get("dataset", "synthetic")
    return names


def own_data_name(dataset: str, root: str | None, train_json: str | None) -> str | None:
    """The name of a user's own data: the training json's stem (COCO format), a single VOC folder's name, the
    dataset YAML's stem (YOLO); None for the synthetic set and the official COCO and VOCdevkit layouts."""
    if dataset == "yolo" and root:
        return Path(root).stem
    if train_json:
        return json_data_name(train_json)
    if dataset == "voc" and root and voc_layout(root) in ("folder", "labelimg"):
        return Path(root).resolve().name
    return None


def run_name(given: str | None, logger_name: str | None, data: dict[str, Any]) -> str:
    """The name of a run's folder (``<save_dir>/<name>/version_N``), from what it trains.

    ``given`` (``--name``) wins; then a logger name of the user's own (their config file, the command line, a run's
    saved ``config.yaml``). A packaged config's name (``synthetic``, ``coco_resnet18``, ...) is only a default: it
    names runs on the dataset that config was written for, in its official layout; on the user's own data the run is
    named after the data (:func:`own_data_name`), on another official dataset after the format (``coco``, ``voc``).
    """
    if given:
        return given
    defaults = packaged_run_names()
    if logger_name and logger_name not in defaults and logger_name not in LIBRARY_RUN_NAMES:
        return logger_name
    own = own_data_name(data["dataset"], data.get("root"), data.get("train_json"))
    if own:
        return own
    return logger_name if defaults.get(logger_name) == data["dataset"] else data["dataset"]


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
    _continue_run_folder(ckpt_path, trainer)
    if trainer.is_global_zero:
        print(f"resuming from {ckpt_path} at step {state['global_step']}, epoch {state['epoch']}")
    return ckpt_path


def _continue_run_folder(ckpt_path: str, trainer: pl.Trainer) -> None:
    """A checkpoint of this logger's ``version_N/checkpoints/``: the resumed run logs to that same ``version_N``
    (one TensorBoard run; the best-checkpoint tracking, kept per folder, goes on) instead of a new version."""
    logger = trainer.logger
    run = Path(ckpt_path).resolve().parent.parent  # <root>/version_N
    if not isinstance(logger, TensorBoardLogger) or Path(ckpt_path).resolve().parent.name != "checkpoints":
        return
    number = run.name.removeprefix("version_")
    if run.parent == Path(logger.root_dir).resolve() and run.name.startswith("version_") and number.isdigit():
        logger._version = int(number)  # read lazily, when fit sets up


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


def train(args: list[str], prog: str = "centernet train") -> DetectorCLI:
    """Parse ``args`` (the ``tools/train.py`` command line), train, then validate the best checkpoint (or the last,
    with ``--report_checkpoint last``).

    Without ``--config`` the packaged ``synthetic.yaml`` is the default config (so ``--help`` shows its values).
    ``prog`` names the command in the usage line. Returns the CLI with ``best_checkpoint`` and ``last_checkpoint``
    set (paths or None).
    """
    with quiet_lightning():
        return _train(args, prog)


def _train(args: list[str], prog: str) -> DetectorCLI:
    defaults = {"prog": prog}
    if not _has_config(args):
        defaults["default_config_files"] = [str(config_path(DEFAULT_CONFIG))]
    cli = DetectorCLI(CenterNetModule, DetectionDataModule, run=False, args=_with_packaged_configs(args),
                      save_config_kwargs={"overwrite": True}, trainer_defaults=trainer_defaults(),
                      parser_kwargs=defaults)
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    trainer.fit(model, datamodule=data, ckpt_path=resolve_ckpt_path(cli.config.get("ckpt_path"), trainer, model))
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


def eval_parser(checkpoint: dict | None = None, prog: str = "centernet eval") -> ArgumentParser:
    """The options of :func:`evaluate`; the ``--data.*`` defaults are the checkpoint's training data if given."""
    parser = ArgumentParser(prog=prog, description=(
        "Evaluate a checkpoint with the COCO metric (and VOC07 mAP on VOC). The dataset defaults to the one the "
        "checkpoint was trained on; any --data.* option overrides it (e.g. --data.val_json/--data.val_images "
        "for your own COCO-format split)."))
    parser.add_argument("--checkpoint", type=str, required=True, help="a .ckpt written by centernet train")
    parser.add_class_arguments(DetectionDataModule, "data", skip=TRAIN_ONLY_DATA_OPTIONS)
    parser.add_argument("--flip_test", type=bool, default=False, help="average each image with its mirror")
    parser.add_argument("--nms_iou", type=float | None, default=None, help="class-wise NMS IoU after decoding")
    parser.add_argument("--results", type=str | None, default=None,
                        help="write the detections here as a COCO results json (dataset category ids)")
    parser.add_argument("--output", type=str | None, default=None,
                        help="folder for results.csv, PR_curve.png and the confusion matrix (default: a new val, "
                             "val2, ... folder in the checkpoint's run folder)")
    parser.add_argument("--accelerator", type=str, default="auto", help="cpu, gpu, auto, ...")
    parser.add_argument("--precision", type=str | None, default=None, help="e.g. bf16-mixed, 16-mixed")
    parser.add_argument("--devices", type=int, default=1, help="devices (processes) to evaluate on")
    parser.add_argument("--strategy", type=str, default="auto", help="e.g. ddp to split the set over --devices")
    if checkpoint is not None:
        known = parser.get_defaults().data
        parser.set_defaults({f"data.{k}": v for k, v in training_data_options(checkpoint).items() if k in known})
    return parser


def training_data_options(checkpoint: dict) -> dict[str, Any]:
    """The data module arguments a checkpoint was trained with (empty for a checkpoint without them)."""
    return dict(checkpoint.get("datamodule_hyper_parameters", {}))


def eval_output_folder(checkpoint: str | Path) -> Path:
    """Where ``centernet eval`` writes its files by default: a new folder ``val`` in the checkpoint's run folder
    (``runs/synthetic/version_0/val`` for ``runs/synthetic/version_0/checkpoints/x.ckpt``, the checkpoint's own
    folder otherwise), ``val2``, ``val3``, ... when it exists, as ultralytics numbers its runs."""
    parent = Path(checkpoint).resolve().parent
    run = parent.parent if parent.name == "checkpoints" else parent
    folder, number = run / "val", 2
    while folder.exists():
        folder, number = run / f"val{number}", number + 1
    return folder


def evaluate(checkpoint: str | Path, data: dict[str, Any] | None = None, flip_test: bool = False,
             nms_iou: float | None = None, results: str | Path | None = None, accelerator: str = "auto",
             devices: int = 1, strategy: str = "auto", precision: str | None = None,
             output: str | Path | None = None) -> EvalResult:
    """Evaluate ``checkpoint`` on a validation split with the COCO metric (and VOC07 mAP on VOC).

    Args:
        checkpoint: a ``.ckpt`` written by training.
        data: ``DetectionDataModule`` arguments, over those the checkpoint was trained with (default: its
            validation split, letterboxed at its input size).
        flip_test: average each image with its mirror. nms_iou: class-wise NMS after decoding.
        results: write the detections here as a COCO results json (the dataset's category ids).
        output: write ``results.csv`` (this evaluation's row), ``PR_curve.png`` and ``confusion_matrix.png/.csv``
            into this folder (``detector.plots``; :func:`eval_output_folder` is the command's default). None: no files.
        accelerator, devices, strategy, precision: Lightning's; ``strategy="ddp"`` splits the images over
            ``devices`` processes, each image counted once.

    Returns the :class:`EvalResult` (on every process). Raises :class:`CheckpointError` for a checkpoint that is not
    ours or was trained on other classes, ``DatasetError`` for unusable data.
    """
    state = load_checkpoint(checkpoint)
    known = inspect.signature(DetectionDataModule).parameters
    options = {k: v for k, v in training_data_options(state).items() if k in known}
    datamodule = DetectionDataModule(**{**options, **(data or {})})
    datamodule.restore_split(state)  # a validation split held out at training: the same images
    datamodule.setup("validate")
    check_classes(state, datamodule.class_names, "the evaluation dataset")
    info = read_description(state)
    model = CenterNetModule(num_classes=info.num_classes, class_names=info.class_names,
                            category_ids=datamodule.category_ids, input_size=info.input_size, neck=info.neck,
                            head_channels=info.head_channels, flip_test=flip_test, nms_iou=nms_iou)
    model.load_state_dict(state["state_dict"])
    model.results_path = str(results) if results else None
    with quiet_lightning(EPOCH_LINE):  # a checkpoint's evaluation has no epoch; the caller prints the table
        trainer = pl.Trainer(accelerator=accelerator, devices=devices, strategy=strategy, logger=False,
                             precision=precision, default_root_dir=str(Path(checkpoint).parent))
        trainer.validate(model, datamodule=datamodule, verbose=False)
    if output is not None and trainer.is_global_zero:
        save_evaluation(model.last_result, output, state.get("epoch"), state.get("global_step"))
    return model.last_result
