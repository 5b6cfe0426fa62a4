"""The evaluation run: a checkpoint validated by Lightning's Trainer (devices, DDP, precision) on a data split."""
from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from detector.checkpoint import build_model, check_classes, load_checkpoint, read_description
from detector.data.datamodule import DetectionDataModule
from detector.evaluation import EvalResult
from detector.errors import OptionError
from detector.inference.pipeline import TILE_OVERLAP, check_passes
from detector.overwrite import Outputs
from detector.plots import CONFUSION_CSV, CONFUSION_PNG, PR_CURVE_PNG, RESULTS_CSV, save_evaluation
from detector.training.module import CenterNetModule
from detector.training.quiet import EPOCH_LINE, quiet_lightning


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
             output: str | Path | None = None, exist_ok: bool = False, test_scales: list[float] | None = None,
             tile: int | None = None, tile_overlap: float = TILE_OVERLAP, tile_whole: bool = False) -> EvalResult:
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
        test_scales: run each image resized by each of these scales and merge them by soft-NMS (the paper's
            multi-scale test, ``inference.pipeline.detect_scales``); None: one scale.
        tile, tile_overlap, tile_whole: cut each image at its original resolution (the data's ``eval_size`` is set
            to None) into overlapping tiles of ``tile`` pixels letterboxed to the input size, and, with
            ``tile_whole``, add the whole image (``inference.pipeline.detect_tiles``).
        exist_ok: replace an existing ``results`` file or ``output`` files. Never replaced, even so (the rule of
            ``detector.overwrite``, checked before the evaluation runs): the checkpoint, the data's files, any
            checkpoint, annotation or label file, and a training run's folder (its ``results.csv`` is the run's).

    Returns the :class:`EvalResult` (on every process). Raises :class:`CheckpointError` for a checkpoint that is not
    ours or was trained on other classes, ``DatasetError`` for unusable data.
    """
    passes = check_passes(flip_test, test_scales, tile, tile_overlap, tile_whole,
                          {"tile": "tile", "overlap": "tile_overlap", "scales": "test_scales"})
    state = load_checkpoint(checkpoint)
    known = inspect.signature(DetectionDataModule).parameters
    options = {k: v for k, v in training_data_options(state).items() if k in known}
    options.update(data or {})
    if tile is not None:
        options["eval_size"] = None  # tiles are cut from the photos themselves
    datamodule = DetectionDataModule(**options)
    datamodule.restore_split(state)  # a validation split held out at training: the same images
    datamodule.setup("validate")
    check_classes(state, datamodule.class_names, "the evaluation dataset")
    check_outputs(checkpoint, options, datamodule, results, output, exist_ok)
    description = replace(read_description(state), category_ids=datamodule.category_ids)
    network = build_model(state, name=checkpoint)
    model = CenterNetModule.around(network, description, flip_test=flip_test, nms_iou=nms_iou,
                                   voc07=options.get("dataset") == "voc")
    model.results_path = str(results) if results else None
    model.passes = passes
    with quiet_lightning(EPOCH_LINE):  # a checkpoint's evaluation has no epoch; the caller prints the table
        trainer = pl.Trainer(accelerator=accelerator, devices=devices, strategy=strategy, logger=False,
                             precision=precision, default_root_dir=str(Path(checkpoint).parent))
        trainer.validate(model, datamodule=datamodule, verbose=False)
    if output is not None and trainer.is_global_zero:
        save_evaluation(model.last_result, output, state.get("epoch"), state.get("global_step"))
    return model.last_result


def check_outputs(checkpoint: str | Path, options: dict[str, Any], datamodule: DetectionDataModule,
                  results: str | Path | None, output: str | Path | None, exist_ok: bool) -> None:
    """The overwrite rule (``detector.overwrite``) for ``--results`` and ``--output``, before anything runs: the
    inputs are the checkpoint, the data options that name files, and the validation images."""
    if results is None and output is None:
        return
    files = [value for value in options.values() if isinstance(value, (str, Path)) and Path(value).is_file()]
    images = [annotation.file for annotation in datamodule.val_dataset.annotations]
    guard = Outputs([checkpoint, *files, *images], exist_ok, OptionError)
    if results is not None:
        guard.check("--results", results)
    if output is not None:
        folder = Path(output)
        if (folder / "checkpoints").is_dir() or (folder / "hparams.yaml").is_file():
            raise OptionError(f"--output {folder} is a training run's folder: its {RESULTS_CSV} is the run's record "
                              "of every validation; give another folder (by default eval writes a new val folder "
                              "in the run)")
        names = (RESULTS_CSV, PR_CURVE_PNG, CONFUSION_PNG, CONFUSION_CSV)
        guard.check_all("--output", [folder / name for name in names], folder)
