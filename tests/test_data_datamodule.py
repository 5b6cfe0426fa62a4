"""The DataModule yields batches of the contract for all three datasets; workers get distinct, reproducible streams."""
import gc
import logging
from types import SimpleNamespace

import pytest
import torch
from pycocotools.cocoeval import COCOeval

from helpers.datasets import write_coco_dataset, write_voc_devkit

from detector.data import DetectionDataModule
from detector.data.datamodule import per_device_batch

CONTRACT = {"images": torch.uint8, "boxes": torch.float32, "labels": torch.int64, "mask": torch.bool,
            "image_ids": torch.int64, "meta": torch.float32, "crowd_boxes": torch.float32,
            "crowd_mask": torch.bool}


def _check_batch(batch: dict, batch_size: int, size: int | None) -> None:
    assert {k: v.dtype for k, v in batch.items()} == CONTRACT
    B, C, H, W = batch["images"].shape
    assert B == batch_size and C == 3 and (size is None or (H, W) == (size, size))
    N = batch["boxes"].shape[1]
    assert batch["boxes"].shape == (B, N, 4) and batch["labels"].shape == batch["mask"].shape == (B, N)
    assert batch["crowd_boxes"].shape[::2] == (B, 4) and batch["crowd_mask"].shape == batch["crowd_boxes"].shape[:2]
    assert batch["image_ids"].shape == (B,) and batch["meta"].shape == (B, 4)


def test_synthetic_datamodule(tmp_path):
    dm = DetectionDataModule(root=str(tmp_path), num_train=8, num_val=4, batch_size=4, num_workers=0,
                             input_size=128)
    assert dm.num_classes == 5 and dm.category_ids == [1, 2, 3, 4, 5]  # before setup
    dm.prepare_data()
    dm.setup("fit")
    _check_batch(next(iter(dm.train_dataloader())), 4, 128)
    batch = next(iter(dm.val_dataloader()))
    _check_batch(batch, 4, 128)
    assert set(batch["image_ids"].tolist()) <= set(dm.val_coco.getImgIds())


def test_coco_datamodule_at_original_resolution_and_cocoeval(tmp_path):
    write_coco_dataset(tmp_path, "train2017")
    write_coco_dataset(tmp_path, "val2017")
    dm = DetectionDataModule("coco", root=str(tmp_path), batch_size=3, num_workers=0, eval_size=None)
    assert dm.class_names == ["person", "kite", "toothbrush"] and dm.category_ids == [1, 7, 90]
    dm.setup("fit")
    _check_batch(next(iter(dm.train_dataloader())), 3, 256)
    batch = next(iter(dm.val_dataloader()))
    _check_batch(batch, 3, None)
    assert batch["images"].shape[2:] == (64, 64)  # max H and W of the batch, multiples of 32
    assert batch["crowd_mask"].sum() == 1
    # ground truth boxes written back as detections score AP 1 against val_coco
    detections = [{"image_id": int(i), "category_id": dm.category_ids[int(label)], "score": 1.0,
                   "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]}
                  for i, boxes, labels, mask in zip(batch["image_ids"], batch["boxes"], batch["labels"], batch["mask"])
                  for box, label in zip(boxes[mask], labels[mask])]
    evaluator = COCOeval(dm.val_coco, dm.val_coco.loadRes(detections), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] > 0.99


def test_voc_datamodule(tmp_path):
    dm = DetectionDataModule("voc", root=str(write_voc_devkit(tmp_path)), batch_size=2, num_workers=0,
                             input_size=96, eval_size=64)
    assert dm.num_classes == 20
    dm.setup("fit")
    assert len(dm.train_dataset) == 3 and len(dm.val_dataset) == 2
    _check_batch(next(iter(dm.train_dataloader())), 2, 96)
    _check_batch(next(iter(dm.val_dataloader())), 2, 64)
    assert sorted(dm.val_coco.getImgIds()) == [1, 2]


def _augmented_images(seed: int, tmp_path) -> torch.Tensor:
    """One epoch of 2 workers over 4 copies of one image (batch size 1): ``[4, 3, S, S]``."""
    write_coco_dataset(tmp_path, "train2017")
    write_coco_dataset(tmp_path, "val2017")
    dm = DetectionDataModule("coco", root=str(tmp_path), batch_size=1, num_workers=2, seed=seed, input_size=64)
    dm.setup("fit")
    dm.train_dataset.annotations = [dm.train_dataset.annotations[0]] * 4
    images = torch.cat([batch["images"] for batch in dm.train_dataloader()])
    gc.collect()  # shut the persistent workers down now, not during a later test
    return images


def test_workers_have_distinct_streams_and_seed_reproduces(tmp_path):
    images = _augmented_images(0, tmp_path)
    # worker 0 serves batches 0 and 2, worker 1 batches 1 and 3: their first augmentations differ
    assert not torch.equal(images[0], images[1])
    assert torch.equal(images, _augmented_images(0, tmp_path))
    assert not torch.equal(images, _augmented_images(1, tmp_path))


@pytest.mark.parametrize("devices, accumulate, per_device, total", [
    (1, 1, 114, 114), (2, 1, 57, 114), (4, 1, 28, 112), (8, 1, 14, 112), (1, 4, 28, 112), (16, 1, 7, 112)])
def test_total_batch_stays_near_its_value_whatever_the_device_count(devices, accumulate, per_device, total, caplog):
    """Equal per-device batches (DDP): round(114 / (devices x accumulation)); the paper's 114 on 4 GPUs is 4 x 28."""
    assert per_device_batch(114, devices, accumulate) == per_device == round(114 / (devices * accumulate))
    dm = DetectionDataModule(batch_size=32, total_batch=114, drop_last=True, num_workers=0)
    dm.train_dataset, dm.val_dataset = list(range(300)), list(range(10))  # the loaders are not iterated
    dm.trainer = SimpleNamespace(world_size=devices, accumulate_grad_batches=accumulate, global_rank=0)
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    rank_zero.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=rank_zero.name):
            loader = dm.train_dataloader()
    finally:
        rank_zero.removeHandler(caplog.handler)
    assert loader.batch_size == per_device and loader.drop_last
    assert per_device * devices * accumulate == total
    assert f"batch: {per_device} per device x {devices} devices x {accumulate} accumulated = {total}" in caplog.text
    assert dm.val_dataloader().batch_size == 32 and not dm.val_dataloader().drop_last  # validation keeps batch_size


def test_without_total_batch_the_batch_is_per_device_and_bad_values_are_refused():
    dm = DetectionDataModule(batch_size=6, num_workers=0)
    dm.train_dataset = list(range(20))
    dm.trainer = SimpleNamespace(world_size=4, accumulate_grad_batches=1, global_rank=0)
    assert dm.train_dataloader().batch_size == 6 and not dm.train_dataloader().drop_last  # the defaults: unchanged
    assert per_device_batch(3, 8) == 1  # never 0
    with pytest.raises(ValueError, match="--data.total_batch 0"):
        DetectionDataModule(total_batch=0)
