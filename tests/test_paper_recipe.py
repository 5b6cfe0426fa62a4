"""The paper's recipe, component by component, against the formulas it implements: the Gaussian radius (with its
rounding), the elliptical alternative, the crop-and-warp augmentation (zoom distribution, centre margin, boxes
following pixels, box keeping), and the colour and PCA-lighting jitter."""
import math

import numpy as np
import pytest
import torch

from detector.data import Sample
from detector.data.transforms import (PAD_VALUE, PAPER_CROP_SCALES, PAPER_EIGVAL, PAPER_EIGVEC,
                                      CropTrainTransform, paper_border, warp)
from detector.targets import ELLIPSE_ALPHA, encode, gaussian_extent, gaussian_radius

# ---------------------------------------------------------------------------------------------------------------
# radius


def paper_radius(w: float, h: float, o: float = 0.7) -> int:
    """The radius as the paper's code computes it, written out with scalars: sizes rounded up, the three quadratics
    with their roots over 2 (not 2a), the smallest, truncated."""
    w, h = math.ceil(w), math.ceil(h)
    r1 = ((h + w) + math.sqrt((h + w) ** 2 - 4 * w * h * (1 - o) / (1 + o))) / 2
    r2 = (2 * (h + w) + math.sqrt(4 * (h + w) ** 2 - 16 * (1 - o) * w * h)) / 2
    r3 = (-2 * o * (h + w) + math.sqrt(4 * o * o * (h + w) ** 2 - 16 * o * (o - 1) * w * h)) / 2
    return max(0, int(min(r1, r2, r3)))


def test_paper_radius_equals_the_formula_on_a_grid_of_box_sizes():
    sizes = torch.tensor([0.3, 1.0, 1.2, 2.5, 3.0, 4.7, 8.0, 12.25, 25.0, 40.5, 77.0, 128.0])
    w, h = torch.meshgrid(sizes, sizes, indexing="xy")
    got = gaussian_extent(torch.stack([w, h], -1), "paper")
    for i in range(len(sizes)):
        for j in range(len(sizes)):
            expected = paper_radius(float(w[i, j]), float(h[i, j]))
            assert got[i, j].tolist() == [expected, expected], (float(w[i, j]), float(h[i, j]))


def test_paper_radius_rounds_sizes_up_before_the_formula():
    # 7.1 x 7.1 cells is taken as 8 x 8: radius 2 (the formula on 7.1 x 7.1 unrounded gives 1.9, truncated 1)
    assert gaussian_extent(torch.tensor([7.1, 7.1]), "paper").tolist() == [paper_radius(8, 8)] * 2 == [2, 2]
    assert gaussian_radius(torch.tensor(7.1), torch.tensor(7.1), legacy=True) < 2


def test_exact_radius_is_about_a_third_of_the_papers():
    w = torch.tensor([12.0, 30.0, 60.0, 100.0])
    h = torch.tensor([12.0, 20.0, 90.0, 40.0])
    ratio = gaussian_radius(w, h, legacy=True) / gaussian_radius(w, h)
    assert (ratio > 3.0).all() and (ratio < 3.6).all(), ratio


def test_elliptical_extent_scales_with_each_side():
    extent = gaussian_extent(torch.tensor([[40.0, 10.0], [3.0, 3.0]]), "elliptical")
    assert extent.tolist() == [[math.floor(ELLIPSE_ALPHA * 20), math.floor(ELLIPSE_ALPHA * 5)], [0.0, 0.0]]


def test_elliptical_gaussian_values_and_support():
    # one 40 x 10 cell box centred in cell (30, 20): half-axes (10, 2), sigmas (21/6, 5/6)
    boxes = torch.tensor([[[4 * 10.5, 4 * 15.5, 4 * 50.5, 4 * 25.5]]])
    heat = encode(boxes, torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool), 1, (40, 64), 4,
                  radius="elliptical")["heatmap"][0, 0]
    sx, sy = 21 / 6, 5 / 6
    for dx, dy in [(0, 0), (10, 0), (-7, 1), (3, -2), (0, 2)]:
        expected = math.exp(-dx * dx / (2 * sx * sx) - dy * dy / (2 * sy * sy))
        assert float(heat[20 + dy, 30 + dx]) == pytest.approx(expected, rel=1e-5), (dx, dy)
    assert float(heat[20, 41]) == 0 and float(heat[23, 30]) == 0  # outside the half-axes
    assert int((heat > 0).sum()) == 21 * 5


def test_encode_draws_the_paper_radius():
    boxes = torch.tensor([[[40.0, 40.0, 80.0, 120.0]]])  # 10 x 20 cells
    heat = encode(boxes, torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.bool), 1, (64, 64), 4,
                  radius="paper")["heatmap"][0, 0]
    r = paper_radius(10, 20)
    row = heat[20]  # the centre row (centre cell (15, 20))
    assert int((row > 0).sum()) == 2 * r + 1
    sigma = (2 * r + 1) / 6
    assert float(row[15 + r]) == pytest.approx(math.exp(-r * r / (2 * sigma * sigma)), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# crop-and-warp augmentation


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


# ---------------------------------------------------------------------------------------------------------------
# initialisation of the paper's networks


@pytest.mark.parametrize("neck,small", [("deconv", [False, True]), ("dcn", [True, True]), ("lean", [False, False])])
def test_offset_and_size_heads_start_as_the_papers_code_starts_them(neck, small):
    from detector.model import CenterNet

    model = CenterNet(3, neck=neck)
    for head in (model.head.offset, model.head.size):
        convs = [m for m in head if isinstance(m, torch.nn.Conv2d)]
        first, last = convs[0], convs[-1]
        assert [float(first.weight.std()) < 0.002, float(last.weight.std()) < 0.002] == small
        if small[-1]:
            assert float(last.bias.abs().max()) == 0
    assert float(model.head.heatmap[-1].bias.mean()) == pytest.approx(-math.log(9), abs=1e-6)
    if neck == "deconv":
        ups = [m for m in model.neck.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
        assert len(ups) == 3 and all(float(up.weight.std()) == pytest.approx(0.001, rel=0.05) for up in ups)
