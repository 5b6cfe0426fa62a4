"""The bad-input corpus that the data tests don't already hold, crash-safe training, and non-finite losses."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fsspec.implementations.local import LocalFileOpener
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from helpers.datasets import write_voc_devkit

from detector.checkpoint import load_checkpoint
from detector.data import DatasetError, VocDetection
from detector.data.dataset import Sample
from detector.data.transforms import EvalTransform, TrainTransform
from detector.images import read_image
from detector.training.module import CenterNetModule

ROOT = Path(__file__).resolve().parents[2]


def tool_env():
    return dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(ROOT))


# images --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width,height", [(8000, 8000), (1, 1)])
def test_extreme_image_sizes_go_through_both_transforms(tmp_path, width, height):
    path = tmp_path / "extreme.jpg"
    cv2.imwrite(str(path), np.full((height, width, 3), 90, dtype=np.uint8))
    image = read_image(path)
    assert image.shape == (height, width, 3)
    sample = Sample(image, np.array([[0, 0, width, height]], dtype=np.float32), np.array([0]), 1)
    train = TrainTransform(128, seed=0)(sample)
    evaluated = EvalTransform(128)(sample)
    for out in (train, evaluated):
        assert out["image"].shape == (3, 128, 128)
        boxes = out["boxes"]
        assert (boxes[:, 2:] >= boxes[:, :2]).all() and ((boxes >= 0) & (boxes <= 128)).all()
    assert torch.allclose(evaluated["boxes"], torch.tensor([[0.0, 0.0, 128.0, 128.0]]))


# annotations ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("broken, message", [
    (lambda xml: xml.replace("<size><width>60</width><height>30</height><depth>3</depth></size>", ""), "<size>"),
    (lambda xml: xml.split("<bndbox>")[0] + "</object></annotation>", "bndbox"),
])
def test_voc_xml_missing_size_or_bndbox_is_a_clear_error(tmp_path, broken, message):
    root = write_voc_devkit(tmp_path)
    xml = root / "VOC2007" / "Annotations" / "000001.xml"
    xml.write_text(broken(xml.read_text()))
    with pytest.raises(DatasetError, match=message) as error:
        VocDetection(root, [("2007", "test")])
    assert "000001.xml" in str(error.value)


# checkpoints ---------------------------------------------------------------------------------------------------


def test_an_interrupted_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """Lightning writes through an fsspec transaction (temporary file, then rename): the guarantee we rely on."""
    path = tmp_path / "last.ckpt"
    io = TorchCheckpointIO()
    io.save_checkpoint({"global_step": 1, "weights": torch.ones(1000)}, path)
    real_write = LocalFileOpener.write

    def dying_write(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError("killed half-way through the write")

    monkeypatch.setattr(LocalFileOpener, "write", dying_write)
    with pytest.raises(OSError, match="half-way"):
        io.save_checkpoint({"global_step": 2, "weights": torch.zeros(1000)}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1


# crash-safe training -------------------------------------------------------------------------------------------


def train_args(tmp_path, *extra):
    return [sys.executable, str(ROOT / "tools" / "train.py"), "--data.dataset", "synthetic",
            "--data.root", str(tmp_path / "synthetic"),
            "--data.num_train", "48", "--data.num_val", "4", "--data.input_size", "96", "--data.batch_size", "4",
            "--data.num_workers", "0", "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
            "--last_checkpoint.every_n_steps", "2", *extra]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_from_last(tmp_path):
    process = subprocess.Popen(train_args(tmp_path), env=tool_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    last, saved = None, {"global_step": 0}
    deadline = time.time() + 300
    try:
        while time.time() < deadline and process.poll() is None:  # wait for a periodic save in the first epoch
            found = sorted((tmp_path / "runs").glob("**/last.ckpt"))
            if found:
                last = found[0]
                try:
                    saved = torch.load(last, weights_only=True)
                except Exception:  # noqa: BLE001 - the rename is atomic, so this is never a torn file
                    raise AssertionError(f"{last} was unreadable while training ran")
                if saved["global_step"] >= 4:
                    break
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read()[-3000:]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    step = torch.load(last, weights_only=True)["global_step"]  # the file survived the kill, intact
    assert 4 <= step < 12  # mid first epoch (12 steps per epoch)
    resumed = subprocess.run(train_args(tmp_path, "--ckpt_path", "last"), env=tool_env(), cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {step}" in resumed.stdout
    final = sorted((tmp_path / "runs").glob("**/last.ckpt"), key=lambda p: p.stat().st_mtime)[-1]
    checkpoint = load_checkpoint(final)
    assert checkpoint["global_step"] == 24 and checkpoint["epoch"] == 1


# non-finite losses ---------------------------------------------------------------------------------------------


def nan_batch():
    boxes = torch.tensor([[[4.0, 4.0, 40.0, 40.0]]])
    return {"images": torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "boxes": boxes, "labels": torch.tensor([[0]]),
            "mask": torch.tensor([[True]]), "image_ids": torch.tensor([7]), "meta": torch.tensor([[1, 1, 64, 64.0]]),
            "crowd_boxes": torch.zeros(1, 0, 4), "crowd_mask": torch.zeros(1, 0, dtype=torch.bool)}


class NanLoss(torch.nn.Module):
    def forward(self, outputs, targets):
        nan = outputs["heatmap"].sum() * float("nan")
        return {"loss": nan, "heatmap": nan, "offset": nan, "size": nan}


def test_nonfinite_loss_is_skipped_counted_then_stops(monkeypatch):
    module = CenterNetModule(num_classes=2, nonfinite_limit=3)
    module.criterion = NanLoss()
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    with pytest.warns(UserWarning, match=r"non-finite loss at step 0 .*images \[7\].*1 so far"):
        loss = module.training_step(nan_batch(), 0)
    assert loss == 0
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in module.parameters())
    with pytest.warns(UserWarning):
        module.training_step(nan_batch(), 1)
    with pytest.warns(UserWarning), pytest.raises(FloatingPointError, match="3 steps in a row"):
        module.training_step(nan_batch(), 2)
    assert module.nonfinite_steps == 3


# tools ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_with_an_unwritable_run_folder_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    # the progress bar on: it prints "Epoch 0" (to stdout) as soon as training starts
    result = subprocess.run(train_args(tmp_path)[:-2] + ["--trainer.logger.init_args.save_dir", str(blocker / "runs"),
                                                         "--trainer.enable_progress_bar", "true"],
                            env=tool_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "a_file" in result.stderr and "Epoch 0" not in result.stdout + result.stderr


def test_weights_of_another_architecture_are_a_clear_error(tmp_path):
    from detector.checkpoint import CheckpointError, build_model

    module = CenterNetModule(num_classes=2, neck="deconv")
    description = {**module.description().to_dict(), "neck": "lean"}  # e.g. a file edited or from an older version
    with pytest.raises(CheckpointError, match="do not fit the lean network its description names"):
        build_model({"detector": description, "state_dict": module.state_dict()})
