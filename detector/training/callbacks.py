"""The training run's callbacks: last.ckpt, the last epoch validated, early stopping on validation AP, and the run
folder's per-validation files (results.csv, results.png)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl

from detector.errors import OptionError
from detector.plots import RESULTS_CSV, RESULTS_PNG, append_results_row, drop_results_from, plot_results, results_row


class LastCheckpoint(pl.Callback):
    """Write ``last.ckpt`` (beside the best checkpoints) at the end of every epoch and every ``every_n_steps``
    optimiser steps, so a crash or a killed job loses at most that many steps (resume with ``--ckpt_path last``).

    Lightning's own ``save_last`` only refreshes ``last.ckpt`` when a top-k checkpoint is written, i.e. not after
    an epoch whose AP did not improve; this callback does not depend on the metric.

    Every checkpoint goes through Lightning's fsspec transaction: the bytes land in a temporary file that is renamed
    over ``last.ckpt`` only when complete, so a save killed half-way leaves the previous file intact
    (``tests/e2e/test_crash_safe_training.py`` checks this).

    A resume from a checkpoint written at an epoch's end continues with the next epoch, whatever bounds the command:
    Lightning resumes a command with ``max_steps`` as if it stopped inside that epoch, and trains one more batch in
    it (every later epoch one step late, the last epoch never reached), so ``max_steps`` is set aside while the loops
    restore and put back before the first step (:meth:`on_fit_start`, :meth:`on_train_start`).

    Args:
        every_n_steps: steps between saves inside an epoch; 0 saves at epoch ends only.
    """

    def __init__(self, every_n_steps: int = 500):
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.path: str | None = None
        self._resumes_at_epoch_end = False
        self._max_steps: int | None = None  # the command's, while set aside

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module, checkpoint: dict) -> None:
        self._resumes_at_epoch_end = trainer.state.fn == "fit" and saved_at_epoch_end(checkpoint)
        if self._resumes_at_epoch_end and trainer.strategy.restore_checkpoint_after_setup:
            self._set_max_steps_aside(trainer)  # on_fit_start came first: the loops restore next

    def on_fit_start(self, trainer: pl.Trainer, pl_module) -> None:
        if self._resumes_at_epoch_end:  # after the schedule read max_steps, before the loops restore
            self._set_max_steps_aside(trainer)

    def _set_max_steps_aside(self, trainer: pl.Trainer) -> None:
        if trainer.max_steps != -1 and self._max_steps is None:
            self._max_steps, trainer.fit_loop.epoch_loop.max_steps = trainer.max_steps, -1

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        if self._max_steps is not None:
            trainer.fit_loop.epoch_loop.max_steps, self._max_steps = self._max_steps, None
        self._resumes_at_epoch_end = False

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


def saved_at_epoch_end(checkpoint: dict) -> bool:
    """Whether Lightning wrote ``checkpoint`` at an epoch's end (``on_train_epoch_end``: the epoch processed, not yet
    counted as completed)."""
    epochs = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    counts = [epochs.get(key) for key in ("ready", "started", "processed", "completed")]
    return None not in counts and counts[0] == counts[1] == counts[2] == counts[3] + 1


class ValidateLastEpoch(pl.Callback):
    """With ``trainer.check_val_every_n_epoch`` N > 1, also validate the run's last epoch (Lightning alone skips it
    unless ``max_epochs`` is a multiple of N), so the best checkpoint and the table at the end never miss the final
    weights. Validating every few epochs is what keeps the default job's COCOeval cost down (issue 16).

    Only for runs bounded by ``max_epochs``; a run ended by ``max_steps`` validates on the multiples of N alone.
    Also when a resume starts inside the last epoch (a checkpoint saved mid-epoch), where Lightning does not call
    ``on_train_epoch_start``.
    """

    def __init__(self):
        self._every: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        self.on_train_epoch_start(trainer, pl_module)

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
    since the previous row over every rank, the metrics); a row replaces any of its step or later (a resumed run's
    redone validation). At the end of training (a resumed one too), ``results.png``: the curves of the whole
    ``results.csv``. Rank 0 writes; every rank takes part in the collectives."""

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
            drop_results_from(log_dir / RESULTS_CSV, trainer.global_step)  # a resume redoing a validation: replaced
            append_results_row(log_dir / RESULTS_CSV, row)

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        if not trainer.logger:
            return
        log_dir = Path(trainer.log_dir)  # a collective under DDP: every rank asks
        if trainer.is_global_zero and (log_dir / RESULTS_CSV).is_file():
            plot_results(log_dir / RESULTS_CSV, log_dir / RESULTS_PNG)


def validations_since_best(aps: Sequence[float]) -> int:
    """How many validations came after the best AP of ``aps`` (in order; the first of equal bests counts: an equal
    AP is no improvement); 0 when there is none."""
    if not aps:
        return 0
    best = max(range(len(aps)), key=lambda i: (aps[i], -i))
    return len(aps) - 1 - best


def should_stop_early(aps: Sequence[float], patience: int) -> bool:
    """Whether training stops after the validations whose APs are ``aps``: the last ``patience`` of them did not
    improve on the best before them. ``patience`` 0: never (early stopping off)."""
    return patience > 0 and validations_since_best(aps) >= patience


class EarlyStop(pl.Callback):
    """Early stopping: training stops when the validation AP has not improved for a number of validations.

    ``--early_stopping.patience N`` (a validation comes every ``--trainer.check_val_every_n_epoch`` epochs); one line
    says so when it stops. Off by default.

    The APs seen so far go into every checkpoint (``state_dict``), so a resumed run stops where the run it continues
    would have; a validation the resume redoes is not in the checkpoint it resumes from, so it is counted once.

    Args:
        patience: validations without a better AP before the run stops; 0 (the default) never stops.
    """

    def __init__(self, patience: int = 0):
        if patience < 0:
            raise OptionError(f"--early_stopping.patience {patience}: must be 0 (off) or a number of validations")
        self.patience = patience
        self.aps: list[float] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        result = pl_module.last_result
        if trainer.sanity_checking or trainer.state.fn != "fit" or result is None:
            return
        self.aps.append(float(result.metrics["AP"]))
        if should_stop_early(self.aps, self.patience):  # every rank holds the same result: the same decision
            trainer.should_stop = True
            if trainer.is_global_zero:
                best = len(self.aps) - 1 - validations_since_best(self.aps)
                print(f"early stopping: no better validation AP in the last {self.patience} validations (best "
                      f"{100 * self.aps[best]:.2f}, validation {best + 1} of {len(self.aps)}); stopped after epoch "
                      f"{trainer.current_epoch} (--early_stopping.patience {self.patience})", flush=True)

    def state_dict(self) -> dict:
        return {"aps": list(self.aps)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.aps = [float(ap) for ap in state_dict.get("aps", [])]
