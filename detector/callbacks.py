"""Training callbacks of the detector."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


class PeriodicLastCheckpoint(pl.Callback):
    """Rewrite ``last.ckpt`` every ``every_n_steps`` optimiser steps, on top of the end-of-epoch one, so a crash or
    a killed job loses at most that many steps (resume with ``--ckpt_path last``).

    Lightning writes every checkpoint through an fsspec transaction: the bytes go to a temporary file that is
    renamed over ``last.ckpt`` only when complete, so a save killed half-way leaves the previous file intact
    (``tests/test_reliability.py`` checks this).

    Args:
        every_n_steps: steps between saves; 0 disables the periodic save.
    """

    def __init__(self, every_n_steps: int = 500):
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        callback = trainer.checkpoint_callback
        if not self.every_n_steps or step == 0 or step % self.every_n_steps or callback is None:
            return
        trainer.save_checkpoint(Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}")
