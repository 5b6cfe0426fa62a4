"""The LightningModule's wiring, without a Trainer: crowd/difficult regions through the loss, the linear learning-rate
scaling, and validation's category ids and repeated images (issue 12)."""
import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from detector.data import AugmentOptions, DetectionDataModule, EvalTransform, Sample, collate_detection
from detector.training.module import CenterNetModule, OptimOptions


def crowd_batch(object_box, crowd_box):
    """One 64 x 64 image (stride 4 -> 16 x 16 cells) with one object of class 0 and one crowd/difficult box."""
    sample = Sample(np.zeros((64, 64, 3), dtype=np.uint8), np.array([object_box], dtype=np.float32),
                    np.array([0]), 1, crowd_boxes=np.array([crowd_box], dtype=np.float32))
    return collate_detection([EvalTransform(64)(sample)])


def flat_outputs(value=-4.0):
    return {"heatmap": torch.full((1, 2, 16, 16), value), "offset": torch.zeros(1, 2, 16, 16),
            "size": torch.full((1, 2, 16, 16), 4.0)}


def test_crowd_regions_neither_reward_nor_punish_the_heatmap():
    batch = crowd_batch([4, 4, 20, 20], [32, 32, 64, 64])  # crowd cells: 8..15 in x and y
    module = CenterNetModule(num_classes=2)
    targets = module._targets(batch, (16, 16))
    assert targets["ignore"].shape == (1, 2, 16, 16)
    assert targets["ignore"][0, :, 8:, 8:].all() and targets["ignore"].sum() == 2 * 64
    plain, loud = flat_outputs(), flat_outputs()
    loud["heatmap"][0, :, 8:, 8:] = 6.0  # confident detections inside the crowd region
    assert torch.equal(module._loss(batch, plain)["heatmap"], module._loss(batch, loud)["heatmap"])
    outside = flat_outputs()
    outside["heatmap"][0, :, 8:, :8] = 6.0  # the same outside it is punished
    assert module._loss(batch, outside)["heatmap"] > module._loss(batch, plain)["heatmap"] + 1
    strict = CenterNetModule(num_classes=2, ignore_crowd=False)
    assert "ignore" not in strict._targets(batch, (16, 16))
    assert strict._loss(batch, loud)["heatmap"] > strict._loss(batch, plain)["heatmap"] + 1


def test_an_object_inside_a_crowd_region_keeps_its_peak():
    batch = crowd_batch([36, 36, 52, 52], [32, 32, 64, 64])  # object centre (44, 44) px -> cell (11, 11)
    module = CenterNetModule(num_classes=2)
    targets = module._targets(batch, (16, 16))
    assert targets["heatmap"][0, 0, 11, 11] == 1 and not targets["ignore"][0, 0, 11, 11]
    assert targets["ignore"][0, 1, 11, 11]  # the other class's cell there is still ignored
    low, high = flat_outputs(), flat_outputs()
    high["heatmap"][0, 0, 11, 11] = 6.0  # finding the object lowers the loss
    assert module._loss(batch, high)["heatmap"] < module._loss(batch, low)["heatmap"] - 1


def fake_trainer(batch_size, world_size, accumulate):
    return SimpleNamespace(train_dataloader=SimpleNamespace(batch_size=batch_size), world_size=world_size,
                           accumulate_grad_batches=accumulate, num_training_batches=30, estimated_stepping_batches=10,
                           max_epochs=1)


@pytest.mark.parametrize("lr_batch_size, expected", [(16, 3e-3), (96, 5e-4), (None, 1e-3)])
def test_lr_batch_size_scales_the_learning_rate_linearly(lr_batch_size, expected):
    module = CenterNetModule(optim=OptimOptions(lr=1e-3, lr_batch_size=lr_batch_size, schedule="cosine"))
    module.trainer = fake_trainer(batch_size=8, world_size=2, accumulate=3)  # 48 images per optimiser step
    assert module.effective_lr() == pytest.approx(expected)
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)


@pytest.mark.parametrize("devices, total", [(1, 114), (2, 114), (4, 112), (8, 112)])
def test_the_paper_rate_follows_the_total_batch_actually_trained(devices, total):
    """--data.total_batch 114 on 1, 2, 4, 8 devices: 5e-4 x (the total trained) / 114, never x 32 x devices / 114."""
    from detector.data.datamodule import per_device_batch

    module = CenterNetModule(optim=OptimOptions(lr=5e-4, lr_batch_size=114, schedule="cosine"))
    module.trainer = fake_trainer(batch_size=per_device_batch(114, devices), world_size=devices, accumulate=1)
    assert module.effective_lr() == pytest.approx(5e-4 * total / 114)


def test_upconv_init_reaches_the_dcn_network():
    ups = [m for m in CenterNetModule(neck="dcn", upconv_init="official").model.neck.modules()
           if isinstance(m, torch.nn.ConvTranspose2d)]
    assert all(torch.equal(up.weight[:, 0], up.weight[0, 0].expand_as(up.weight[:, 0])) for up in ups)
    assert all(up.weight[:, 1:].abs().min() > 0 for up in ups)  # random, not the diagonal's zeros


def test_the_option_groups_are_kept_as_plain_dicts_that_load_weights_only():
    """Built from Python (not the CLI, which hands over its own dicts), a dataclass in the hparams would make every
    checkpoint refuse ``torch.load(weights_only=True)``."""
    module = CenterNetModule(optim=OptimOptions(lr=3e-3, milestones=[2, 4]))
    data = DetectionDataModule(augment=AugmentOptions(kind="paper", flip_prob=0.0))
    buffer = io.BytesIO()
    torch.save({"model": dict(module.hparams), "data": dict(data.hparams)}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved["model"]["optim"]["lr"] == 3e-3 and saved["data"]["augment"]["kind"] == "paper"
    assert CenterNetModule(**saved["model"]).optim == module.optim
    assert DetectionDataModule(**saved["data"]).augment == data.augment


class _FixedOutputs(torch.nn.Module):
    """A 'network' with stride 4 whose 8 x 8 heatmap has two peaks: class 2 at cell (1, 1), class 0 at (5, 5)."""

    stride = 4

    def forward(self, x):
        B = x.shape[0]
        heatmap = torch.full((B, 3, 8, 8), -6.0)
        heatmap[:, 2, 1, 1], heatmap[:, 0, 5, 5] = 3.0, 2.0
        return {"heatmap": heatmap, "offset": torch.zeros(B, 2, 8, 8), "size": torch.ones(B, 2, 8, 8)}


def val_batch(image_ids):
    B = len(image_ids)
    return {"images": torch.zeros(B, 3, 32, 32, dtype=torch.uint8), "boxes": torch.zeros(B, 0, 4),
            "labels": torch.zeros(B, 0, dtype=torch.int64), "mask": torch.zeros(B, 0, dtype=torch.bool),
            "image_ids": torch.tensor(image_ids), "meta": torch.tensor([[1.0, 1.0, 32.0, 32.0]] * B),
            "crowd_boxes": torch.zeros(B, 0, 4), "crowd_mask": torch.zeros(B, 0, dtype=torch.bool)}


def test_validation_writes_dataset_category_ids_and_each_image_once(monkeypatch):
    from detector.evaluation import Evaluator

    module = CenterNetModule(num_classes=3, category_ids=[1, 7, 90], max_detections=2)
    module.model = _FixedOutputs()
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    module.evaluator = Evaluator(gt=None, category_ids=module.category_ids)  # what on_validation_epoch_start makes
    module.validation_step(val_batch([5, 6]), 1)
    module.validation_step(val_batch([6, 8]), 2)  # the sampler repeated image 6
    results = module.evaluator.results
    assert [r["image_id"] for r in results] == [5, 5, 6, 6, 8, 8]
    assert [r["category_id"] for r in results[:2]] == [90, 1]  # labels 2 and 0 -> the dataset's gapped ids
    assert results[0]["bbox"] == [2.0, 2.0, 4.0, 4.0]  # cell (1, 1), offset 0: centre (4, 4) px, 1 cell = 4 px wide
    assert sorted(module.evaluator.image_ids) == [5, 6, 8]