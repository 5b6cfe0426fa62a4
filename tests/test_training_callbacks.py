"""The training callbacks (``detector/training/callbacks.py``) and speed settings: validation every N epochs that still
validates the last one, early stopping on validation AP, and training in the channels_last layout."""
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from detector.training.configs import config_path
from detector.errors import OptionError
from detector.training.callbacks import EarlyStop, ValidateLastEpoch, should_stop_early, validations_since_best
from detector.training.module import CenterNetModule


class Counting(pl.LightningModule):
    """A linear regression that records the epochs it was validated at and the validation score of each."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.validated: list[int] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.validated.append(self.current_epoch)
            self.log("score", float(self.current_epoch))  # later epochs "better": the best is the last validated

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader():
    return DataLoader(TensorDataset(torch.randn(8, 2), torch.randn(8, 1)), batch_size=4)


@pytest.mark.parametrize("epochs,every,expected", [(5, 2, [1, 3, 4]), (4, 2, [1, 3]), (3, 1, [0, 1, 2]),
                                                   (2, 4, [1])])
def test_the_last_epoch_is_validated_with_any_interval(tmp_path, epochs, every, expected):
    module = Counting()
    best = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="score", mode="max", filename="best-{epoch}")
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, check_val_every_n_epoch=every, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[ValidateLastEpoch(), best])
    trainer.fit(module, loader(), loader())
    assert module.validated == expected
    assert best.best_model_path.endswith(f"best-epoch={epochs - 1}.ckpt")  # the final weights are the best
    assert trainer.check_val_every_n_epoch == every  # the user's setting is back for what follows


class SaveAt(pl.Callback):
    """A checkpoint after optimiser step ``step`` (inside an epoch, as ``LastCheckpoint(every_n_steps)`` writes)."""

    def __init__(self, step: int, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


def test_a_resume_inside_the_last_epoch_still_validates_it(tmp_path):
    """Lightning does not call ``on_train_epoch_start`` for an epoch a resume starts inside of."""
    options = dict(accelerator="cpu", max_epochs=2, check_val_every_n_epoch=4, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, enable_checkpointing=False)
    middle = tmp_path / "middle.ckpt"  # after the first of the last epoch's 2 batches
    pl.Trainer(**options, callbacks=[SaveAt(3, middle)]).fit(Counting(), loader(), loader())
    module = Counting()
    trainer = pl.Trainer(**options, callbacks=[ValidateLastEpoch()])
    trainer.fit(module, loader(), loader(), ckpt_path=middle)
    assert trainer.global_step == 4 and module.validated == [1]


def test_the_default_job_validates_its_last_epoch_on_the_interval():
    """The packaged default validates every few epochs; the final table comes from a validated last epoch."""
    import yaml
    config = yaml.safe_load(config_path("synthetic.yaml").read_text())["trainer"]
    assert config["check_val_every_n_epoch"] > 1
    assert config["max_epochs"] % config["check_val_every_n_epoch"] == 0


def test_training_and_validation_run_channels_last():
    module = CenterNetModule(num_classes=2, input_size=64)
    module.setup("fit")
    convs = [m for m in module.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    seen = []
    convs[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(
        memory_format=torch.channels_last)))
    batch = {"images": torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)}
    module.model(module._images(batch).float())
    assert seen == [True]
    reference = CenterNetModule(num_classes=2, input_size=64)
    reference.load_state_dict(module.state_dict())  # checkpoints move between layouts
    x = torch.randn(1, 3, 64, 64)
    module.eval(), reference.eval()
    assert torch.allclose(module.model(x)["heatmap"], reference.model(x)["heatmap"], atol=1e-4)


# early stopping on validation AP ----------------------------------------------------------------------------------

@pytest.mark.parametrize("aps,patience,stops", [
    ([0.1, 0.3, 0.2], 2, False),  # one validation since the best
    ([0.1, 0.3, 0.2, 0.25], 2, True),  # two
    ([0.1, 0.3, 0.2, 0.25], 3, False),
    ([0.1, 0.3, 0.3, 0.3], 2, True),  # an equal AP is no improvement
    ([0.1, 0.2, 0.3, 0.4], 1, False),  # improving every time
    ([0.4], 1, False), ([], 1, False),
    ([0.5, 0.1, 0.1, 0.1, 0.1], 0, False),  # patience 0: off
])
def test_training_stops_after_patience_validations_without_a_better_ap(aps, patience, stops):
    assert should_stop_early(aps, patience) == stops


def test_validations_since_best_counts_from_the_first_of_equal_bests():
    assert [validations_since_best(aps) for aps in ([], [0.2], [0.2, 0.1], [0.2, 0.2, 0.1], [0.1, 0.2])] == \
        [0, 0, 1, 2, 0]


class Scored(Counting):
    """Counting, with the validation AP of each validation taken from ``aps`` (as ``CenterNetModule.last_result``)."""

    def __init__(self, aps):
        super().__init__()
        self.aps, self.last_result = aps, None

    def on_validation_epoch_end(self):
        super().on_validation_epoch_end()
        if not self.trainer.sanity_checking:
            self.last_result = SimpleNamespace(metrics={"AP": self.aps[len(self.validated) - 1]})


APS = [0.1, 0.3, 0.2, 0.25, 0.6, 0.7, 0.8, 0.9]  # patience 2: stops at the 4th validation (epoch 3 here)


def fit(module, callbacks, ckpt_path=None, max_epochs=len(APS)):
    trainer = pl.Trainer(accelerator="cpu", max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, enable_checkpointing=False,
                         callbacks=callbacks)
    trainer.fit(module, loader(), loader(), ckpt_path=ckpt_path)
    return trainer


def test_early_stopping_stops_the_run_with_one_line_and_is_off_by_default(capsys):
    module = Scored(APS)
    fit(module, [EarlyStop(patience=2)])
    assert module.validated == [0, 1, 2, 3]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("early stopping")]
    assert lines == ["early stopping: no better validation AP in the last 2 validations (best 30.00, validation 2 "
                     "of 4); stopped after epoch 3 (--early_stopping.patience 2)"]
    module = Scored(APS)
    fit(module, [EarlyStop()])
    assert module.validated == list(range(len(APS)))
    with pytest.raises(OptionError, match="--early_stopping.patience -1"):
        EarlyStop(patience=-1)


def test_a_resumed_run_stops_where_the_run_never_stopped_would(tmp_path):
    """The APs seen before the checkpoint come back with it: resumed after 3 validations, the 4th stops the run."""
    middle = tmp_path / "epoch2.ckpt"
    fit(Scored(APS), [EarlyStop(patience=2)], max_epochs=3).save_checkpoint(middle)
    module = Scored(APS)
    module.validated = [0, 1, 2]  # the validations before the checkpoint (their APs index the list)
    trainer = fit(module, [EarlyStop(patience=2)], ckpt_path=middle)
    assert module.validated == [0, 1, 2, 3] and trainer.current_epoch == 4
