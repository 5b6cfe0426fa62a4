"""The training callbacks (``detector/training/callbacks.py``) and speed settings: validation every N epochs that still
validates the last one, and training in the channels_last layout."""
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from detector.training.configs import config_path
from detector.training.callbacks import ValidateLastEpoch
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
