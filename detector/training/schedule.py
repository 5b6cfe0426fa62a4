"""The learning-rate schedule: warmup, step drops or a cosine, as plain values a resumed run restores (LrFactor)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytorch_lightning as pl


def training_steps(trainer: pl.Trainer) -> tuple[int, float]:
    """(optimiser steps per epoch, optimiser steps of the whole run) from the training loader.

    Steps per epoch are the loader's batches (after ``limit_train_batches``) over gradient accumulation. The run's
    length is ``max_epochs`` of them; ``max_steps`` only stops this command earlier (a clean stop that
    ``--ckpt_path last`` continues, the schedule unchanged), and is the length when ``max_epochs`` is -1 (``inf``
    when neither bounds the run).
    """
    if trainer.train_dataloader is None:
        trainer.fit_loop.setup_data()  # what estimated_stepping_batches does, except for max_epochs -1
    batches = trainer.num_training_batches
    if math.isinf(batches):
        raise ValueError("the learning-rate schedule needs a training loader with a length")
    per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
    epochs = trainer.max_epochs
    total = per_epoch * epochs if epochs is not None and epochs >= 0 else trainer.estimated_stepping_batches
    return per_epoch, total


def check_schedule(schedule: str, milestones: list[int], steps_per_epoch: int, total_steps: float) -> None:
    """Refuse a schedule that cannot do what it says: a cosine without an end, a step drop after the run's end."""
    epochs = total_steps / steps_per_epoch
    if schedule == "cosine" and math.isinf(total_steps):
        raise ValueError("model.optim.schedule cosine needs a bounded run: set --trainer.max_epochs or "
                         "--trainer.max_steps")
    if schedule != "step":
        return
    late = [m for m in milestones if m * steps_per_epoch >= total_steps]
    if late:
        raise ValueError(
            f"model.optim.milestones {list(milestones)}: the run ends after {epochs:.4g} epochs ({total_steps} steps "
            f"of {steps_per_epoch} per epoch), so the drops at epochs {late} would never happen; give milestones below "
            f"{epochs:.4g} (e.g. --model.optim.milestones '{scaled_milestones(milestones, epochs)}') or lengthen the "
            "run")


def scaled_milestones(milestones: list[int], epochs: float) -> list[int]:
    """The milestones moved into a run of ``epochs``, at the fractions the paper's recipes use (the last drop 6/7 of
    the way: COCO 90 and 120 of 140 epochs, VOC 45 and 60 of 70)."""
    end = max(milestones) * 7 / 6
    return sorted({max(1, min(math.ceil(epochs) - 1, round(m * epochs / end))) for m in milestones})


def lr_factor(schedule: str, milestones: list[int], gamma: float, warmup_epochs: float, steps_per_epoch: int,
              total_steps: float) -> LrFactor:
    """The multiplier of the base learning rate at optimiser step ``step`` (0-based): an :class:`LrFactor`.

    Warmup: linear from 0.1 to 1 over ``warmup_epochs * steps_per_epoch`` steps. ``step``: times ``gamma`` for each
    milestone epoch reached (from step ``m * steps_per_epoch`` on). ``cosine``: half a cosine from 1 at the end of
    the warmup to 0 at ``total_steps``.
    """
    return LrFactor(schedule, list(milestones), gamma, warmup_epochs, steps_per_epoch, total_steps)


@dataclass
class LrFactor:
    """The schedule as plain values: ``LambdaLR`` saves a callable object's fields in the checkpoint and restores
    them on resume, so a resumed run keeps the schedule it started with (its length included) whatever the new
    command's ``max_epochs``."""

    schedule: str
    milestones: list[int]
    gamma: float
    warmup_epochs: float
    steps_per_epoch: int
    total_steps: float

    def __call__(self, step: int) -> float:
        warmup_steps = self.warmup_epochs * self.steps_per_epoch
        warm = 0.1 + 0.9 * step / warmup_steps if step < warmup_steps else 1.0
        if self.schedule == "step":
            return warm * self.gamma ** sum(step >= m * self.steps_per_epoch for m in self.milestones)
        progress = min(1.0, max(0.0, (step - warmup_steps) / max(1.0, self.total_steps - warmup_steps)))
        return warm * 0.5 * (1 + math.cos(math.pi * progress))

    def describe(self) -> str:
        drops = f", x{self.gamma:g} at epochs {self.milestones}" if self.schedule == "step" else ""
        return f"{self.schedule} over {self.total_steps:g} steps of {self.steps_per_epoch} per epoch{drops}"
