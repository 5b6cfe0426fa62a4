"""A resumed run is the run it continues: stopped early (a clean stop at ``--trainer.max_steps``, or Ctrl-C) and
resumed with ``--ckpt_path last``, its run folder holds the same validations (epoch, step, learning rate in
``results.csv``), the same learning rate at every step, and ends at the same epoch and step as the run that was
never stopped, its last epoch validated."""
import csv
import re
import shlex
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from detector.cli import train_main
from detector.training import run as training_run

pytestmark = pytest.mark.slow

EPOCHS = 12  # of one step each (2 images, batch 2), validated every 4th: at epochs 3, 7 and 11


def args(tmp: Path, name: str, *extra) -> list[str]:
    return ["--data.dataset", "synthetic", "--data.root", str(tmp / "synthetic"), "--data.num_train", "2",
            "--data.num_val", "2", "--data.input_size", "64", "--data.batch_size", "2", "--data.num_workers", "0",
            "--trainer.max_epochs", str(EPOCHS), "--trainer.check_val_every_n_epoch", "4",
            "--trainer.accelerator", "cpu", "--trainer.log_every_n_steps", "1", "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.logger.init_args.save_dir", str(tmp / "runs"), "--trainer.default_root_dir", str(tmp / "runs"),
            "--name", name, *extra]


class InterruptAt(pl.Callback):
    """Ctrl-C at optimiser step ``step``: after its batch (before the epoch's end, so before its last.ckpt), or
    after its validation (once results.csv has the row, before the epoch's last.ckpt)."""

    def __init__(self, step: int, when: str):
        self.step, self.when = step, when

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.when == "batch" and trainer.global_step == self.step:
            raise KeyboardInterrupt

    def on_validation_end(self, trainer, pl_module):
        if self.when == "validation" and trainer.global_step == self.step and not trainer.sanity_checking:
            raise KeyboardInterrupt


def interrupted(tmp: Path, name: str, stop: InterruptAt, monkeypatch) -> None:
    """A run stopped by Ctrl-C (Lightning shuts down and exits with status 1)."""
    defaults = training_run.trainer_defaults
    with monkeypatch.context() as patch:
        patch.setattr(training_run, "trainer_defaults",
                      lambda: {**defaults(), "callbacks": [*defaults()["callbacks"], stop]})
        handler = signal.getsignal(signal.SIGINT)
        try:
            with pytest.raises(SystemExit):
                train_main(args(tmp, name))
        finally:
            signal.signal(signal.SIGINT, handler)  # Lightning ignores Ctrl-C from its shutdown on


def run_record(cli) -> dict:
    """What must not depend on the stop: the validations, the learning rate of every step, where the run ends."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = Path(cli.trainer.log_dir)
    with open(folder / "results.csv", newline="") as file:
        validations = [(row["epoch"], row["step"], row["lr"]) for row in csv.DictReader(file)]
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    tag = next(t for t in events.Tags()["scalars"] if t.startswith("lr-"))
    rates = {e.step: round(e.value, 10) for e in events.Scalars(tag)}
    last = torch.load(cli.last_checkpoint, weights_only=True)
    return {"validations": validations, "rates": rates, "epoch": last["epoch"], "step": last["global_step"],
            "epochs": last["loops"]["fit_loop"]["epoch_progress"]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    return run_record(train_main(args(tmp, "whole")))


def test_the_uninterrupted_run_validates_every_fourth_epoch_and_its_last(uninterrupted):
    assert [(int(e), int(s)) for e, s, _ in uninterrupted["validations"]] == [(3, 4), (7, 8), (11, 12)]
    assert sorted(uninterrupted["rates"]) == list(range(EPOCHS))
    assert (uninterrupted["epoch"], uninterrupted["step"]) == (EPOCHS - 1, EPOCHS)


@pytest.mark.parametrize("resume", ["hint", "later max_steps"])
def test_a_run_stopped_at_max_steps_and_resumed_equals_the_run_never_stopped(uninterrupted, tmp_path, capsys, resume):
    """Resumed by the printed command (the stop lifted), or by the same command with a later stop: Lightning alone
    trains one more batch in epoch 5 there, validates at 7/9 and ends at epoch 10."""
    first = train_main(args(tmp_path, "paused", "--trainer.max_steps", "6"))
    assert first.trainer.global_step == 6
    hint = re.search(r"^resume: +python tools/train.py (.*)$", capsys.readouterr().out, flags=re.M).group(1)
    assert hint.endswith("--trainer.max_steps -1")  # the run's config.yaml holds the stop
    if resume == "hint":
        resumed = train_main(shlex.split(hint))
    else:
        resumed = train_main(args(tmp_path, "paused", "--trainer.max_steps", str(EPOCHS), "--ckpt_path", "last"))
    assert Path(resumed.trainer.log_dir) == Path(first.trainer.log_dir)
    assert run_record(resumed) == uninterrupted
    assert (Path(resumed.trainer.log_dir) / "results.png").stat().st_size > 1000  # redrawn with the resumed rows


@pytest.mark.parametrize("stop,saved,redone", [
    (InterruptAt(10, "batch"), (8, 9), 0),  # during epoch 9: last.ckpt is epoch 8's end
    (InterruptAt(8, "validation"), (6, 7), 1),  # in epoch 7's validation, its results.csv row written
], ids=["mid-epoch", "after-validation"])
def test_a_run_stopped_by_ctrl_c_and_resumed_equals_the_run_never_stopped(uninterrupted, tmp_path, monkeypatch,
                                                                         capsys, stop, saved, redone):
    interrupted(tmp_path, "stopped", stop, monkeypatch)
    last = torch.load(tmp_path / "runs" / "stopped" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == saved
    capsys.readouterr()
    resumed = train_main(args(tmp_path, "stopped", "--ckpt_path", "last"))
    assert run_record(resumed) == uninterrupted
    assert (f"{redone} results.csv rows after step {saved[1]} removed" in capsys.readouterr().out) == bool(redone)
