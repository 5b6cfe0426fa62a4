"""The train transform's rules, checked on the pixels: kept boxes are visible enough, tiny ones go, the stream is
seeded, bad ranges are refused (issue 12). Today's default augmentation only; each test stands alone."""
import numpy as np
import pytest
import torch

from detector.data import Sample, TrainTransform, collate_detection
from detector.preprocess import letterbox

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
