"""Boxes follow the image through augmentation; the eval letterbox inverts exactly; collate pads to the contract."""
import numpy as np
import pytest
import torch

from detector.data import EvalTransform, Sample, TrainTransform, collate_detection
from detector.preprocess import PAD_VALUE, unletterbox_boxes

COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)])


def _painted_sample(rng: np.random.Generator) -> Sample:
    """A 300x200 black image with six non-overlapping filled rectangles, colour i for label i."""
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    boxes = []
    for label in range(6):
        cell_x, cell_y = 100 * (label % 3), 100 * (label // 3)
        x1, y1 = cell_x + rng.integers(5, 30), cell_y + rng.integers(5, 30)
        x2, y2 = x1 + rng.integers(20, 65), y1 + rng.integers(20, 65)
        image[y1:y2, x1:x2] = COLOURS[label]
        boxes.append((x1, y1, x2, y2))
    return Sample(image, np.array(boxes, dtype=np.float32), np.arange(6, dtype=np.int64), 7)


def _colour_pixels(image: torch.Tensor, label: int) -> np.ndarray:
    """``[H, W]`` bool: pixels of ``[3, H, W]`` uint8 ``image`` close to colour ``label``."""
    pixels = image.permute(1, 2, 0).numpy().astype(int)
    return np.abs(pixels - COLOURS[label]).sum(axis=-1) < 60


def test_boxes_follow_their_rectangles_through_augmentation():
    rng = np.random.default_rng(0)
    transform = TrainTransform(128, colour_jitter=0.0, min_visibility=0.3, min_box_size=2.0, seed=0)
    dropped_total = 0
    for _ in range(60):
        sample = _painted_sample(rng)
        out = transform(sample)
        assert out["image"].shape == (3, 128, 128) and out["image"].dtype == torch.uint8
        kept = out["labels"].tolist()
        scales = []
        for box, label in zip(out["boxes"].numpy(), kept):
            ys, xs = np.nonzero(_colour_pixels(out["image"], label))
            covered = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            np.testing.assert_allclose(box, covered, atol=1.6)  # the box is its rectangle, to a pixel
            orig = sample.boxes[label]
            scales.append(max(box[2] - box[0], box[3] - box[1]) / max(orig[2] - orig[0], orig[3] - orig[1]))
        for label in set(range(6)) - set(kept):
            dropped_total += 1
            if scales:
                orig = sample.boxes[label]
                full_area = (orig[2] - orig[0]) * (orig[3] - orig[1]) * max(scales) ** 2
                assert _colour_pixels(out["image"], label).sum() < 0.35 * full_area
    assert dropped_total > 0


def test_crowd_boxes_are_transformed_and_kept_apart():
    sample = _painted_sample(np.random.default_rng(1))
    sample.crowd_boxes = sample.boxes[4:]
    sample.boxes, sample.labels = sample.boxes[:4], sample.labels[:4]
    out = TrainTransform(256, scale_range=(1.0, 1.0), flip_prob=0.0, colour_jitter=0.0, seed=0)(sample)
    expected = np.concatenate([sample.boxes, sample.crowd_boxes]) * 256 / 300
    shift = out["boxes"][0, 1].item() - expected[0, 1]  # random vertical placement in the square canvas
    expected[:, 1::2] += shift
    np.testing.assert_allclose(out["boxes"].numpy(), expected[:4], atol=1.0)
    np.testing.assert_allclose(out["crowd_boxes"].numpy(), expected[4:], atol=1.0)
    assert out["labels"].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("size", [None, 256, 512])
def test_eval_letterbox_then_inverse_returns_the_boxes(size):
    rng = np.random.default_rng(0)
    for _ in range(40):
        width, height = (int(s) for s in rng.integers(1, 700, size=2))
        corners = np.sort(rng.uniform(0, 1, size=(5, 2, 2)), axis=1) * [width, height]  # [5, 2 corners, (x, y)]
        boxes = corners.reshape(5, 4).astype(np.float32)
        sample = Sample(np.zeros((height, width, 3), dtype=np.uint8), boxes, np.zeros(5, dtype=np.int64), 1)
        out = EvalTransform(size)(sample)
        input_h, input_w = out["image"].shape[1:]
        assert input_h % 32 == 0 and input_w % 32 == 0
        assert size is None or (input_h, input_w) == (size, size)
        restored = unletterbox_boxes(out["boxes"][None], out["meta"][None])[0]
        np.testing.assert_allclose(restored.numpy(), boxes, atol=1e-3 * max(width, height))


def _transformed(height: int, width: int, objects: int, crowd: int, image_id: int) -> dict:
    return {"image": torch.full((3, height, width), 9, dtype=torch.uint8),
            "boxes": torch.arange(objects * 4, dtype=torch.float32).view(objects, 4) + 1,
            "labels": torch.arange(objects) + 1, "crowd_boxes": torch.ones(crowd, 4), "image_id": image_id,
            "meta": torch.tensor([1.0, 1.0, width, height])}


def test_collate_pads_images_boxes_and_crowd_to_the_batch_max():
    batch = collate_detection([_transformed(64, 96, 0, 2, 5), _transformed(96, 32, 3, 0, 6)])
    assert batch["images"].shape == (2, 3, 96, 96) and batch["images"].dtype == torch.uint8
    assert (batch["images"][0, :, :64, :96] == 9).all()
    assert batch["images"][0, :, 64:, :].flatten(1).unique(dim=1).T.tolist() == [list(PAD_VALUE)]
    assert batch["boxes"].shape == (2, 3, 4) and batch["boxes"].dtype == torch.float32
    assert batch["labels"].dtype == torch.int64 and batch["labels"][1].tolist() == [1, 2, 3]
    assert batch["mask"].tolist() == [[False] * 3, [True] * 3]
    assert batch["crowd_boxes"].shape == (2, 2, 4) and batch["crowd_mask"].tolist() == [[True, True], [False] * 2]
    assert batch["image_ids"].tolist() == [5, 6] and batch["image_ids"].dtype == torch.int64
    assert batch["meta"].shape == (2, 4) and batch["meta"].dtype == torch.float32


def test_collate_with_no_objects_at_all():
    batch = collate_detection([_transformed(32, 32, 0, 0, 1), _transformed(32, 32, 0, 0, 2)])
    assert batch["boxes"].shape == (2, 0, 4) and batch["mask"].shape == (2, 0)
    assert batch["crowd_boxes"].shape == (2, 0, 4) and batch["labels"].shape == (2, 0)
