"""The transforms: boxes follow the image through augmentation; the train transform's rules checked on the pixels
(kept boxes visible enough, tiny ones gone, a seeded stream, bad ranges refused); the paper's crop-and-warp (zoom
distribution, centre margin, box keeping) and colour and PCA-lighting jitter against the formulas; the eval letterbox
inverts exactly; collate pads to the contract."""
import numpy as np
import pytest
import torch
import math

from detector.data import EvalTransform, Sample, TrainTransform, collate_detection
from detector.preprocess import PAD_VALUE, unletterbox_boxes
from detector.data import Sample, TrainTransform, collate_detection
from detector.preprocess import letterbox
from detector.data import Sample
from detector.data.transforms import (PAD_VALUE, PAPER_CLIP_MARGIN, PAPER_CROP_SCALES, PAPER_EIGVAL, PAPER_EIGVEC,
                                      CropTrainTransform, paper_border, warp)
from detector.targets import ELLIPSE_ALPHA, encode, gaussian_extent, gaussian_radius


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


# the train transform's rules ----------------------------------------------------------------------------------------

COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)])


def painted_sample(rng):
    """A 300 x 200 black image with six filled rectangles, colour i for label i."""
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    boxes = []
    for label in range(6):
        x1, y1 = 100 * (label % 3) + rng.integers(5, 30), 100 * (label // 3) + rng.integers(5, 30)
        x2, y2 = x1 + rng.integers(20, 65), y1 + rng.integers(20, 65)
        image[y1:y2, x1:x2] = COLOURS[label]
        boxes.append((x1, y1, x2, y2))
    return Sample(image, np.array(boxes, dtype=np.float32), np.arange(6, dtype=np.int64), 7)


def visible_fraction(image, label, full_area):
    pixels = image.permute(1, 2, 0).numpy().astype(int)
    return (np.abs(pixels - COLOURS[label]).sum(-1) < 60).sum() / full_area


@pytest.mark.parametrize("min_visibility", [None, 0.6])
def test_kept_boxes_are_visible_enough_and_the_others_are_dropped(min_visibility):
    """Scale fixed at 1.5 (longest side 192 px on a 128 px canvas): rectangles are cut by the random crop."""
    rule = 0.3 if min_visibility is None else min_visibility  # 0.3: the default
    options = {} if min_visibility is None else {"min_visibility": min_visibility}
    transform = TrainTransform(128, scale_range=(1.5, 1.5), colour_jitter=0.0, min_box_size=1.0, seed=0, **options)
    rng = np.random.default_rng(0)
    scale = 192 / 300
    kept_partial = dropped_partial = 0
    for _ in range(40):
        sample = painted_sample(rng)
        out = transform(sample)
        kept = out["labels"].tolist()
        for label in range(6):
            x1, y1, x2, y2 = sample.boxes[label]
            full_area = (x2 - x1) * (y2 - y1) * scale ** 2
            fraction = visible_fraction(out["image"], label, full_area)
            if label in kept:
                box = out["boxes"][kept.index(label)].numpy()
                assert (box >= 0).all() and (box <= 128).all()  # clipped to the canvas
                box_fraction = (box[2] - box[0]) * (box[3] - box[1]) / full_area
                assert box_fraction >= rule - 0.02, (label, box_fraction)
                kept_partial += box_fraction < 0.95
            else:
                assert fraction < rule + 0.05, (label, fraction)
                dropped_partial += fraction > 0.05
    assert kept_partial > 0 and dropped_partial > 0  # the rule was exercised on both sides


def test_boxes_smaller_than_min_box_size_are_dropped():
    image = np.zeros((128, 128, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 13, 40], [50, 50, 90, 52.5], [60, 10, 100, 40]], dtype=np.float32)  # 3 px wide, 2.5 tall
    sample = Sample(image, boxes, np.array([0, 1, 2]), 1)
    plain = dict(scale_range=(1.0, 1.0), flip_prob=0.0, colour_jitter=0.0, seed=0)
    assert TrainTransform(128, min_box_size=2.0, **plain)(sample)["labels"].tolist() == [0, 1, 2]
    assert TrainTransform(128, min_box_size=2.8, **plain)(sample)["labels"].tolist() == [0, 2]
    assert TrainTransform(128, min_box_size=3.5, **plain)(sample)["labels"].tolist() == [2]


def test_identity_settings_keep_pixels_boxes_and_meta():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    boxes = np.array([[3.5, 7.0, 40.0, 90.25]], dtype=np.float32)
    out = TrainTransform(128, scale_range=(1.0, 1.0), flip_prob=0.0, colour_jitter=0.0, seed=0)(
        Sample(image, boxes, np.array([4]), 11))
    assert torch.equal(out["image"], torch.from_numpy(image).permute(2, 0, 1))
    np.testing.assert_allclose(out["boxes"].numpy(), boxes)
    assert out["labels"].tolist() == [4] and out["labels"].dtype == torch.int64 and out["image_id"] == 11
    assert out["boxes"].dtype == torch.float32 and out["crowd_boxes"].shape == (0, 4)
    assert torch.equal(out["meta"], torch.tensor([1.0, 1.0, 128.0, 128.0]))


def test_train_meta_is_the_eval_letterbox_of_the_original_image():
    sample = painted_sample(np.random.default_rng(0))
    out = TrainTransform(128, seed=0)(sample)
    _, meta = letterbox(sample.image, 128)
    np.testing.assert_array_equal(out["meta"].numpy(), meta)


def test_flip_mirrors_pixels_and_boxes():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    boxes = np.array([[3.0, 7.0, 40.0, 90.0]], dtype=np.float32)
    out = TrainTransform(128, scale_range=(1.0, 1.0), flip_prob=1.0, colour_jitter=0.0, seed=0)(
        Sample(image, boxes, np.array([0]), 1))
    assert torch.equal(out["image"], torch.from_numpy(image[:, ::-1].copy()).permute(2, 0, 1))
    np.testing.assert_allclose(out["boxes"].numpy(), [[88.0, 7.0, 125.0, 90.0]])


def test_colour_jitter_changes_colours_and_zero_disables_it():
    image = np.full((128, 128, 3), 120, dtype=np.uint8)
    image[:, :64, 0] = 200
    sample = Sample(image, np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int64), 1)
    fixed = dict(scale_range=(1.0, 1.0), flip_prob=0.0)
    outs = [TrainTransform(128, colour_jitter=0.4, seed=seed, **fixed)(sample)["image"] for seed in range(5)]
    assert sum(not torch.equal(o, torch.from_numpy(image).permute(2, 0, 1)) for o in outs) >= 3
    for seed in range(3):
        out = TrainTransform(128, colour_jitter=0.0, seed=seed, **fixed)(sample)["image"]
        assert torch.equal(out, torch.from_numpy(image).permute(2, 0, 1))


def test_the_augmentation_stream_is_seeded():
    sample = painted_sample(np.random.default_rng(0))
    a, b, c = (TrainTransform(128, seed=s) for s in (5, 5, 6))
    first, again, other = a(sample), b(sample), c(sample)
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["boxes"], again["boxes"])
    assert not torch.equal(first["image"], other["image"])
    a.set_random_seed(5)
    assert torch.equal(a(sample)["image"], first["image"])


def test_scale_range_drives_the_size_and_bad_ranges_are_refused():
    image = np.full((100, 200, 3), 255, dtype=np.uint8)
    sample = Sample(image, np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int64), 1)
    small = TrainTransform(128, scale_range=(0.5, 0.5), flip_prob=0.0, colour_jitter=0.0, seed=0)(sample)
    white = (small["image"] == 255).all(dim=0)
    assert white.sum() == 64 * 32  # longest side 64 px, aspect ratio kept, placed whole on the padded canvas
    for bad in [(1.2, 0.8), (0.0, 1.0), (-0.5, 1.0)]:
        with pytest.raises(ValueError, match="scale_range"):
            TrainTransform(128, scale_range=bad)
    TrainTransform(128, scale_range=(1.0, 1.0))


def white_width(out):
    """Width in pixels of the white (255) region of a transformed all-white image (the canvas padding is grey)."""
    columns = (out["image"] == 255).all(dim=0).any(dim=0)
    return int(columns.sum())


def test_the_random_scale_covers_its_range_in_whole_pixels():
    sample = Sample(np.full((100, 200, 3), 255, dtype=np.uint8), np.zeros((0, 4), dtype=np.float32),
                    np.zeros(0, dtype=np.int64), 1)
    fixed = dict(flip_prob=0.0, colour_jitter=0.0)
    widths = {white_width(TrainTransform(128, scale_range=(0.5, 1.0), seed=s, **fixed)(sample)) for s in range(12)}
    assert min(widths) >= 64 and max(widths) <= 128 and len(widths) > 4, widths
    # 0.6 * 128 = 76.8: the longest side is rounded to 77, not truncated to 76
    assert {white_width(TrainTransform(128, scale_range=(0.6, 0.6), seed=s, **fixed)(sample)) for s in range(6)} == {77}
    # a scale that rounds to 0 px still gives a 1 px image
    for seed in range(6):
        assert white_width(TrainTransform(128, scale_range=(0.001, 0.008), seed=seed, **fixed)(sample)) == 1


def test_colour_jitter_both_darkens_and_brightens():
    sample = Sample(np.full((64, 64, 3), 120, dtype=np.uint8), np.zeros((0, 4), dtype=np.float32),
                    np.zeros(0, dtype=np.int64), 1)
    means = [float(TrainTransform(64, scale_range=(1.0, 1.0), flip_prob=0.0, colour_jitter=0.4, seed=s)(sample)
                   ["image"].float().mean()) for s in range(12)]
    assert min(means) < 115 and max(means) > 125, means
    assert min(means) > 0.6 * 120 - 2 and max(means) < 1.4 * 120 + 2, means  # brightness factor in [0.6, 1.4]
    hue = next(t for t in TrainTransform(64, colour_jitter=0.4).pipeline.transforms if hasattr(t, "hue")).hue
    assert hue == pytest.approx((-0.04, 0.04))  # hue gets a tenth of the jitter


def test_documented_defaults():
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(TrainTransform).parameters.items()}
    assert defaults["scale_range"] == (0.6, 1.4) and defaults["flip_prob"] == 0.5
    assert defaults["colour_jitter"] == 0.3 and defaults["min_visibility"] == 0.3 and defaults["min_box_size"] == 2.0
    image = np.zeros((128, 128, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 11.5, 40], [50, 50, 52.5, 90]], dtype=np.float32)  # 1.5 and 2.5 px wide
    out = TrainTransform(128, scale_range=(1.0, 1.0), flip_prob=0.0, seed=0)(Sample(image, boxes, np.array([0, 1]), 1))
    assert out["labels"].tolist() == [1]


def test_collate_a_single_sample():
    sample = {"image": torch.zeros(3, 32, 64, dtype=torch.uint8), "boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]),
              "labels": torch.tensor([2]), "crowd_boxes": torch.zeros(0, 4), "image_id": 9,
              "meta": torch.tensor([1.0, 1.0, 64.0, 32.0])}
    batch = collate_detection([sample])
    assert batch["boxes"].tolist() == [[[1.0, 2.0, 3.0, 4.0]]] and batch["labels"].tolist() == [[2]]
    assert batch["mask"].tolist() == [[True]] and batch["crowd_boxes"].shape == (1, 0, 4)


def test_boxes_slightly_past_the_image_are_clipped_first():
    image = np.zeros((128, 128, 3), dtype=np.uint8)
    boxes = np.array([[100.0, 100.0, 128.5, 130.0]], dtype=np.float32)  # a reader's box half a pixel past the border
    out = TrainTransform(128, scale_range=(1.0, 1.0), flip_prob=0.0, colour_jitter=0.0, seed=0)(
        Sample(image, boxes, np.array([0]), 1))
    np.testing.assert_allclose(out["boxes"].numpy(), [[100.0, 100.0, 128.0, 128.0]])


def test_flip_and_colour_jitter_are_drawn_independently():
    """Each augmentation gets its own derived seed. With one shared seed, the flip (p 0.5) and the jitter (p 0.8)
    would read the same first random number, and every flipped image would also be jittered."""
    image = np.full((128, 128, 3), 120, dtype=np.uint8)
    image[:, :32] = 0  # a black stripe on the left shows the flip
    sample = Sample(image, np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int64), 1)
    seen = set()
    for seed in range(40):
        out = TrainTransform(128, scale_range=(1.0, 1.0), colour_jitter=0.3, seed=seed)(sample)["image"]
        flipped = bool((out[:, :, -1] == 0).all())
        jittered = bool((out[:, 64, 64] != 120).any())
        seen.add((flipped, jittered))
    assert seen == {(False, False), (False, True), (True, False), (True, True)}, seen


# the paper's crop-and-warp augmentation -----------------------------------------------------------------------------

def painted(width=320, height=240, seed=0):
    """A grey image with three filled rectangles of distinct colours; boxes in xyxy original pixels."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 90, dtype=np.uint8)
    colours = [(250, 20, 20), (20, 250, 20), (20, 20, 250)]
    boxes = []
    for i, colour in enumerate(colours):
        x1, y1 = int(rng.integers(5 + 100 * i, 60 + 100 * i)), int(rng.integers(5, height - 80))
        x2, y2 = x1 + int(rng.integers(20, 40)), y1 + int(rng.integers(20, 70))
        image[y1:y2, x1:x2] = colour
        boxes.append((x1, y1, x2, y2))
    sample = Sample(image, np.array(boxes, dtype=np.float32), np.arange(3, dtype=np.int64), 1)
    return sample, np.array(colours)


def test_the_paper_constants_are_the_papers_code_numbers():
    # written out from the CenterNet code (its COCO dataset class and its crop loop), not read from the module
    from detector.data.transforms import PAPER_BORDER, PAPER_LIGHTING_STD

    np.testing.assert_array_equal(PAPER_EIGVAL, np.float32([0.2141788, 0.01817699, 0.00341571]))
    np.testing.assert_array_equal(PAPER_EIGVEC, np.float32([[-0.58752847, -0.69563484, 0.41340352],
                                                            [-0.5832747, 0.00994535, -0.81221408],
                                                            [-0.56089297, 0.71832671, 0.41158938]]))
    assert PAPER_CROP_SCALES == pytest.approx(np.arange(0.6, 1.4, 0.1)) and len(PAPER_CROP_SCALES) == 8
    assert (PAPER_BORDER, PAPER_LIGHTING_STD) == (128, 0.1)


def test_paper_zoom_takes_the_eight_crop_scales_uniformly():
    transform = CropTrainTransform(256, seed=0)
    zooms = []
    for _ in range(4000):
        cx, cy, side = transform.crop(640, 480)
        zooms.append(round(640 / side, 6))  # zoom relative to the letterbox of the longer side
    values, counts = np.unique(zooms, return_counts=True)
    assert sorted(values) == sorted(round(1 / s, 6) for s in PAPER_CROP_SCALES)
    assert counts.min() > 0.8 * 500 and counts.max() < 1.2 * 500
    assert min(zooms) == pytest.approx(1 / 1.3, rel=1e-5) and max(zooms) == pytest.approx(1 / 0.6, rel=1e-5)


def test_paper_crop_centre_keeps_its_margin():
    transform = CropTrainTransform(256, seed=1)
    centres = np.array([transform.crop(640, 200)[:2] for _ in range(3000)])
    assert centres[:, 0].min() >= 128 and centres[:, 0].max() < 640 - 128
    assert paper_border(128, 200) == 64 and centres[:, 1].min() >= 64 and centres[:, 1].max() < 200 - 64
    assert centres[:, 0].min() < 140 and centres[:, 0].max() > 500  # the whole range is used


def test_boxes_follow_their_rectangles_through_the_crop():
    transform = CropTrainTransform(192, colour_jitter=0.0, lighting_std=0.0, seed=3)
    checked = 0
    for seed in range(40):
        sample, colours = painted(seed=seed)
        out = transform(sample)
        pixels = out["image"].permute(1, 2, 0).numpy().astype(int)
        for box, label in zip(out["boxes"].numpy(), out["labels"].tolist()):
            ys, xs = np.nonzero(np.abs(pixels - colours[label]).sum(-1) < 60)
            if len(xs) < 9:  # a sliver at the border: its colour is blended away
                continue
            covered = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            np.testing.assert_allclose(box, covered, atol=1.6)
            checked += 1
    assert checked > 60


def test_paper_keeps_every_box_with_area_and_the_visibility_rule_drops():
    boxes = np.array([[0, 0, 128, 128], [123, 40, 228, 60]], np.float32)
    sample = Sample(np.zeros((128, 128, 3), np.uint8), boxes, np.array([0, 1]), 0)
    keep_all = CropTrainTransform(128, scales=(1.0,), flip_prob=0.0, seed=0)
    keep_all.crop = lambda w, h: (64.0, 64.0, 128.0)  # the identity crop
    out = keep_all(sample)
    assert out["labels"].tolist() == [0, 1]  # 5 of 105 px of the second box visible: kept, clipped
    np.testing.assert_allclose(out["boxes"][1].numpy(), [123, 40, 128, 60])
    dropping = CropTrainTransform(128, scales=(1.0,), flip_prob=0.0, min_visibility=0.3, seed=0)
    dropping.crop = keep_all.crop
    assert dropping(sample)["labels"].tolist() == [0]


def test_identity_crop_and_flip_map_pixels_exactly():
    sample, _ = painted(256, 256)
    transform = CropTrainTransform(256, flip_prob=1.0, colour_jitter=0.0, lighting_std=0.0, seed=0)
    transform.crop = lambda w, h: (128.0, 128.0, 256.0)
    out = transform(sample)
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), sample.image[:, ::-1])
    expected = np.stack([256 - sample.boxes[:, 2], sample.boxes[:, 1], 256 - sample.boxes[:, 0], sample.boxes[:, 3]], 1)
    np.testing.assert_allclose(out["boxes"].numpy(), expected)


class FixedDraws:
    """Stands in for the transform's random generator with chosen values."""

    def __init__(self, order, alphas, lighting):
        self.order, self.alphas, self.lighting = order, list(alphas), lighting

    def permutation(self, n):
        return np.array(self.order)

    def uniform(self, low, high):
        return self.alphas.pop(0)

    def normal(self, mean, std, size):
        return np.array(self.lighting)


def test_colour_and_lighting_equal_the_plain_formula():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 10, 3)).astype(np.uint8)
    transform = CropTrainTransform(32, seed=0)
    transform.rng = FixedDraws(order=[2, 0, 1], alphas=[0.3, -0.2, 0.1], lighting=[0.05, -0.1, 0.2])
    got = transform.colour(image).astype(np.float64)

    x = image.astype(np.float64)
    grey = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    grey = np.rint(grey)  # OpenCV's uint8 grey image
    x = 1.3 * x + (1 - 1.3) * grey[..., None]  # saturation, alpha 1 + 0.3
    x = 0.8 * x  # brightness, alpha 1 - 0.2
    x = 1.1 * x + (1 - 1.1) * grey.mean()  # contrast, alpha 1 + 0.1
    shift_bgr = PAPER_EIGVEC.astype(np.float64) @ (PAPER_EIGVAL * np.array([0.05, -0.1, 0.2]))
    x = x + 255 * shift_bgr[::-1]
    expected = np.rint(np.clip(x, 0, 255))
    assert np.abs(got - expected).max() <= 1  # float32 arithmetic vs float64


def test_colour_draws_three_strengths_within_point_four_and_a_lighting_of_sigma_point_one():
    transform = CropTrainTransform(32, seed=0)
    real, draws = transform.rng, []

    class Recording:
        def permutation(self, n):
            return real.permutation(n)

        def uniform(self, low, high):
            draws.append(("uniform", low, high))
            return real.uniform(low, high)

        def normal(self, mean, std, size):
            draws.append(("normal", mean, std, size))
            return real.normal(mean, std, size)

    transform.rng = Recording()
    transform.colour(np.full((4, 4, 3), 100, np.uint8))
    assert draws == [("uniform", -0.4, 0.4)] * 3 + [("normal", 0.0, 0.1, 3)]


@pytest.mark.parametrize("size,border", [(640, 128), (257, 128), (256, 64), (200, 64), (129, 64), (128, 32),
                                         (3, 1), (2, 1), (1, 1)])
def test_paper_border_halves_until_the_image_holds_two_and_stops_at_one(size, border):
    assert paper_border(128, size) == border  # by hand: halve 128 while size <= 2 * border and border > 1


def test_paper_crop_centre_of_a_side_without_room_is_its_middle():
    transform = CropTrainTransform(64, seed=0)
    for _ in range(20):
        assert transform.crop(2, 300)[0] == 1.0 and transform.crop(300, 2)[1] == 1.0  # border 1: 2 > 2 fails
        assert transform.crop(300, 129)[1] == 64.0  # border 64: the one integer in [64, 65), not the middle 64.5
        assert transform.crop(129, 300)[0] == 64.0


@pytest.mark.parametrize("scales", [(0.0, 1.0), (1.0, -0.5), ()])
def test_crop_scales_must_all_be_positive(scales):
    with pytest.raises(ValueError, match="crop scales must be positive"):
        CropTrainTransform(64, scales=scales)
    CropTrainTransform(64, scales=(0.01, 1.0))  # any positive scales are fine


def test_paper_meta_is_the_letterbox_meta():
    sample = Sample(np.zeros((160, 320, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 7)
    out = CropTrainTransform(128, seed=0)(sample)
    np.testing.assert_allclose(out["meta"].numpy(), [0.4, 0.4, 320, 160], rtol=1e-6)  # 128 / 320, 64 / 160
    assert out["image_id"] == 7
    assert out["image"].shape == (3, 128, 128) and out["boxes"].shape == (0, 4)


def test_place_keeps_boxes_on_the_size_and_visibility_boundaries():
    transform = CropTrainTransform(100, min_visibility=0.5, min_box_size=4.0, seed=0)
    boxes = np.array([[-10, 0, 10, 10],    # half of it visible: kept (>=)
                      [-11, 0, 9, 10],     # 9 of 20 px: dropped
                      [20, 20, 24, 30],    # exactly min_box_size wide: kept (>=)
                      [20, 20, 23.9, 30],  # narrower: dropped
                      [50, 50, 60, 50],    # no height: dropped
                      [95, 90, 105, 130]], np.float32)  # clipped at the far edges to 5 x 10 of 10 x 40: dropped
    placed, keep = transform.place(boxes, 1.0, (0.0, 0.0), flip=False)
    assert keep.tolist() == [True, False, True, False, False, False]
    np.testing.assert_array_equal(placed[0], [0, 0, 10, 10])
    np.testing.assert_array_equal(placed[5], [95, 90, 100, 100])
    # scale and shift, then the mirror of the canvas
    placed, keep = CropTrainTransform(100, seed=0).place(np.array([[10, 20, 30, 60]], np.float32), 0.5, (3.0, -4.0),
                                                         flip=True)
    np.testing.assert_allclose(placed[0], [100 - 18, 6, 100 - 8, 26])
    assert keep.tolist() == [True]


def test_paper_defaults_flip_half_the_images_and_keep_a_sliver():
    sample = Sample(np.zeros((64, 64, 3), np.uint8), np.array([[4, 4, 20, 20]], np.float32), np.array([0]), 0)
    transform = CropTrainTransform(64, seed=0)
    transform.crop = lambda w, h: (32.0, 32.0, 64.0)  # the identity crop
    flipped = [float(transform(sample)["boxes"][0, 0]) > 32 for _ in range(400)]
    assert 0.4 < np.mean(flipped) < 0.6
    _, keep = CropTrainTransform(100).place(np.array([[10, 10, 10.5, 20]], np.float32), 1.0, (0.0, 0.0), False)
    assert keep.tolist() == [True]  # half a pixel wide: any positive size is kept by default
    _, keep = CropTrainTransform(100).place(np.array([[50, 50, 60, 50], [50, 50, 50, 60], [110, 10, 130, 20]],
                                                     np.float32), 1.0, (0.0, 0.0), False)
    assert keep.tolist() == [False, False, False]  # no height, no width, outside the canvas (clipped to nothing)


def test_lighting_adds_255_times_the_eigen_shift_exactly():
    transform = CropTrainTransform(32, colour_jitter=0.0, seed=0)
    transform.rng = FixedDraws(order=[0, 1, 2], alphas=[], lighting=[-4.0, 0.0, 0.0])
    shift = 255 * (PAPER_EIGVEC.astype(np.float64) @ (PAPER_EIGVAL * np.array([-4.0, 0, 0])))[::-1]
    assert np.abs(shift - np.floor(shift) - 0.5).min() > 0.01  # no value at a rounding tie (float32 errs ~1e-5)
    np.testing.assert_array_equal(transform.colour(np.zeros((1, 1, 3), np.uint8))[0, 0], np.rint(shift))
    assert np.rint(shift).tolist() == [123, 127, 128]  # 256 times the shift would give 123, 128, 129


@pytest.mark.parametrize("scale,shift", [(2.0, (7.0, -3.0)), (3.0, (-20.0, 11.0)), (1.0, (4.0, 9.0))])
def test_warp_maps_a_pixel_centre_to_scale_times_centre_plus_shift(scale, shift):
    # pixel (i, j) spans [i, i + 1): its centre i + 0.5 must land at scale * (i + 0.5) + shift (the continuous frame)
    image = np.full((40, 40, 3), PAD_VALUE, np.uint8)
    image[17, 12] = 255  # row 17 (y), column 12 (x), on the padding colour: only this pixel weighs
    out = warp(image, scale, shift, 128)[..., 0].astype(np.float64) - PAD_VALUE[0]
    ys, xs = np.mgrid[0:128, 0:128] + 0.5
    cx, cy = (out * xs).sum() / out.sum(), (out * ys).sum() / out.sum()
    assert cx == pytest.approx(scale * 12.5 + shift[0], abs=0.05)
    assert cy == pytest.approx(scale * 17.5 + shift[1], abs=0.05)
    assert (out >= 0).all()


def test_colour_keeps_black_and_white_at_the_ends_of_uint8():
    image = np.array([[[0, 0, 0], [255, 255, 255], [0, 255, 0]]], np.uint8)
    transform = CropTrainTransform(32, colour_jitter=0.0, seed=0)
    transform.rng = FixedDraws(order=[0, 1, 2], alphas=[], lighting=[3.0, 0.0, 0.0])  # a strong darkening
    dark = transform.colour(image)
    transform.rng = FixedDraws(order=[0, 1, 2], alphas=[], lighting=[-3.0, 0.0, 0.0])
    bright = transform.colour(image)
    assert dark.min() == 0 and dark[0, 0].tolist() == [0, 0, 0]
    assert bright.max() == 255 and bright[0, 1].tolist() == [255, 255, 255]


def test_no_jitter_draws_nothing_for_it_and_still_applies_the_lighting_and_the_reverse():
    transform = CropTrainTransform(32, colour_jitter=0.0, seed=0)
    transform.rng = FixedDraws(order=[0, 1, 2], alphas=[], lighting=[0.5, 0.0, 0.0])  # uniform() would fail
    image = np.full((2, 2, 3), 100, np.uint8)
    shift = 255 * (PAPER_EIGVEC @ (PAPER_EIGVAL * np.float32([0.5, 0, 0])))[::-1]
    np.testing.assert_array_equal(transform.colour(image), np.rint(100 + shift).astype(np.uint8)[None, None]
                                  .repeat(2, 0).repeat(2, 1))
    jitter_only = CropTrainTransform(32, colour_jitter=0.4, lighting_std=0.0, seed=0)
    jitter_only.rng = FixedDraws(order=[0, 1, 2], alphas=[0.3, 0.0, 0.0], lighting=None)  # brightness x 1.3
    np.testing.assert_array_equal(jitter_only.colour(image), np.full((2, 2, 3), 130, np.uint8))
    untouched = CropTrainTransform(32, colour_jitter=0.0, lighting_std=0.0, seed=0)
    untouched.rng = None  # neither may draw
    assert untouched.colour(image) is image


# the paper's code to the letter (colour_float, clip_margin: the paper configs) ----------------------------------------

def test_colour_float_is_the_papers_float_formula_neither_clipped_nor_rounded():
    """The paper's code on ``inp = image / 255`` (float): grey = cvtColor of the float image, the three blends, the
    lighting shift; never clipped, never rounded. Ours works in 0..255 units: 255 x that."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (8, 10, 3)).astype(np.uint8)
    transform = CropTrainTransform(32, seed=0, colour_float=True)
    transform.rng = FixedDraws(order=[0, 2, 1], alphas=[0.4, 0.35, -0.1], lighting=[-2.0, 0.5, 0.3])
    got = transform.colour(image)

    inp = image.astype(np.float64) / 255  # RGB here; the paper's code holds BGR, grey and lighting agree with it
    grey = 0.299 * inp[..., 0] + 0.587 * inp[..., 1] + 0.114 * inp[..., 2]  # not rounded
    inp = 1.4 * inp  # brightness
    inp = 1.35 * inp + (1 - 1.35) * grey[..., None]  # saturation
    inp = 0.9 * inp + (1 - 0.9) * grey.mean()  # contrast
    inp = inp + (PAPER_EIGVEC.astype(np.float64) @ (PAPER_EIGVAL * np.array([-2.0, 0.5, 0.3])))[::-1]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, 255 * inp, atol=2e-3)
    assert got.max() > 255 and (np.abs(got - np.rint(got)) > 0.01).any()  # past uint8's end, between integers
    flat = CropTrainTransform(32, colour_jitter=0.0, lighting_std=0.0, colour_float=True).colour(image)
    assert flat.dtype == np.float32 and np.array_equal(flat, image)


def test_paper_box_clip_is_the_papers_last_cell_w_minus_1():
    """The paper's code clips each box in output cells to [0, output_w - 1] (stride 4) and keeps those with w, h > 0:
    in input pixels, stride x clip(box / stride, 0, size / stride - 1)."""
    size, stride = 128, 4
    boxes = np.array([[100, 90, 140, 150],   # past the far edges: clipped to 124 = (32 - 1) x 4
                      [-8, -4, 20, 30],      # past the near edges: 0
                      [125, 10, 127, 20],    # inside the last cell column only: no width left, dropped
                      [40, 40, 60, 70]], np.float32)
    placed, keep = CropTrainTransform(size, clip_margin=PAPER_CLIP_MARGIN).place(boxes, 1.0, (0.0, 0.0), False)
    official = stride * np.clip(boxes / stride, 0, size // stride - 1)
    np.testing.assert_array_equal(placed, official)
    wide, high = official[:, 2] - official[:, 0], official[:, 3] - official[:, 1]
    assert keep.tolist() == ((wide > 0) & (high > 0)).tolist() == [True, True, False, True]
    placed, keep = CropTrainTransform(size).place(boxes, 1.0, (0.0, 0.0), False)  # the default: the whole canvas
    assert placed[0].tolist() == [100, 90, 128, 128] and keep.tolist() == [True, True, True, True]


def test_a_float_paper_batch_stays_float32_padded_with_the_mean():
    sample, _ = painted()
    transform = CropTrainTransform(64, seed=0, colour_float=True)
    small = CropTrainTransform(32, seed=0, colour_float=True)
    batch = collate_detection([transform(sample), small(sample)])
    assert batch["images"].dtype == torch.float32 and batch["images"].shape == (2, 3, 64, 64)
    assert (batch["images"][1, :, 32:, :] == torch.tensor(PAD_VALUE, dtype=torch.float32)[:, None, None]).all()
