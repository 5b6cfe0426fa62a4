"""The training run's callbacks: last.ckpt, the last epoch validated, and the run folder's per-validation files."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from detector.plots import RESULTS_CSV, append_results_row, results_row


class LastCheckpoint(pl.Callback):
    """Write ``last.ckpt`` (beside the best checkpoints) at the end of every epoch and every ``every_n_steps``
    optimiser steps, so a crash or a killed job loses at most that many steps (resume with ``--ckpt_path last``).

    Lightning's own ``save_last`` only refreshes ``last.ckpt`` when a top-k checkpoint is written, i.e. not after
    an epoch whose AP did not improve; this callback does not depend on the metric.

    Every checkpoint goes through Lightning's fsspec transaction: the bytes land in a temporary file that is renamed
    over ``last.ckpt`` only when complete, so a save killed half-way leaves the previous file intact
    (``tests/test_reliability.py`` checks this).

    Args:
        every_n_steps: steps between saves inside an epoch; 0 saves at epoch ends only.
    """

    def __init__(self, every_n_steps: int = 500):
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.path: str | None = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step and step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        callback = trainer.checkpoint_callback
        if callback is None or callback.dirpath is None:
            return
        path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        trainer.save_checkpoint(path, weights_only=False)  # the whole state: resuming needs the optimiser
        self.path = str(path)


class ValidateLastEpoch(pl.Callback):
    """With ``trainer.check_val_every_n_epoch`` N > 1, also validate the run's last epoch (Lightning alone skips it
    unless ``max_epochs`` is a multiple of N), so the best checkpoint and the table at the end never miss the final
    weights. Validating every few epochs is what keeps the default job's COCOeval cost down (issue 16).

    Only for runs bounded by ``max_epochs``; a run ended by ``max_steps`` validates on the multiples of N alone.
    """

    def __init__(self):
        self._every: int | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module) -> None:
        every = trainer.check_val_every_n_epoch
        last = trainer.max_epochs is not None and trainer.current_epoch == trainer.max_epochs - 1
        if last and every is not None and every > 1:
            self._every = every
            trainer.check_val_every_n_epoch = 1  # read by the epoch loop and ModelCheckpoint for this epoch

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self._every is not None:
            trainer.check_val_every_n_epoch, self._every = self._every, None


class ResultsFiles(pl.Callback):
    """After each validation with a logger, into its run folder: ``val_per_class_ap.txt`` (the last table) and,
    while fitting, a row of ``results.csv`` (``detector.plots``: epoch, step, learning rate, the mean training losses
    since the previous row over every rank, the metrics). Rank 0 writes; every rank takes part in the collectives."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        result = pl_module.last_result
        if trainer.sanity_checking or result is None or not trainer.logger:
            return
        log_dir = Path(trainer.log_dir)  # a collective under DDP: every rank asks
        if trainer.is_global_zero:
            log_dir.mkdir(parents=True, exist_ok=True)
            (log_dir / "val_per_class_ap.txt").write_text(result.table(f"epoch {trainer.current_epoch}") + "\n")
        if trainer.state.fn != "fit":
            return
        losses = pl_module.take_train_losses()  # a collective too
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        if trainer.is_global_zero:
            row = results_row(trainer.current_epoch, trainer.global_step, result.metrics, losses, lr)
            append_results_row(log_dir / RESULTS_CSV, row)
