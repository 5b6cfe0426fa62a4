"""Targets against hand values: the radius formula, its floor, a non-square map, clamping, crowd regions (issue 12).

Today's default behaviour only (``detector/targets.py`` is being extended elsewhere); each test stands alone.
"""
import math

import torch

from detector.targets import encode, gaussian_radius, ignore_regions


def shrink_radius(w, h, o):
    """The smaller root of (w - 2r)(h - 2r) = o w h: both corners move inwards by r (CornerNet's binding case)."""
    return ((w + h) - math.sqrt((w + h) ** 2 - 4 * (1 - o) * w * h)) / 4


def copied_radius(w, h, o):
    """The widely copied CenterNet formula, written out from its three quadratics (it divides by 2, not 2a)."""
    b1, c1 = w + h, w * h * (1 - o) / (1 + o)
    b2, c2 = 2 * (w + h), (1 - o) * w * h
    b3, c3 = -2 * o * (w + h), (o - 1) * w * h
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    r3 = (b3 + math.sqrt(b3 ** 2 - 16 * o * c3)) / 2
    return min(r1, r2, r3)


def test_radius_hand_values_for_several_overlaps():
    for w, h in [(10.0, 20.0), (3.0, 3.0), (100.0, 7.0), (0.5, 40.0), (0.1, 0.2)]:  # 0.1 x 0.2: b^2 - 4ac < 1
        for o in (0.05, 0.1, 0.3, 0.5, 0.7, 0.9):
            ours = float(gaussian_radius(torch.tensor(w, dtype=torch.float64), torch.tensor(h, dtype=torch.float64), o))
            assert math.isclose(ours, shrink_radius(w, h, o), rel_tol=1e-9), (w, h, o)
            legacy = float(gaussian_radius(torch.tensor(w, dtype=torch.float64), torch.tensor(h, dtype=torch.float64),
                                           o, legacy=True))
            assert math.isclose(legacy, copied_radius(w, h, o), rel_tol=1e-9), (w, h, o)


def test_default_overlap_is_0_7():
    w, h = torch.tensor(10.0), torch.tensor(20.0)
    assert torch.equal(gaussian_radius(w, h), gaussian_radius(w, h, 0.7))


def test_radius_is_floored_not_rounded():
    # a 33 x 33 cell box: radius 2.695 (0.0817 * 33). Floor 2 and round 3 draw different Gaussians.
    r = float(gaussian_radius(torch.tensor(33.0), torch.tensor(33.0)))
    assert 2.6 < r < 2.8
    boxes = torch.tensor([[[0.0, 0.0, 132.0, 132.0]]]) + 4 * 15.5 - 66  # centre at cell (15.5, 15.5) -> cell 15
    t = encode(boxes, torch.tensor([[0]]), torch.tensor([[True]]), 1, (32, 32), 4)
    heat = t["heatmap"][0, 0]
    sigma = (2 * 2 + 1) / 6
    assert math.isclose(float(heat[15, 17]), math.exp(-4 / (2 * sigma ** 2)), rel_tol=1e-6)
    assert math.isclose(float(heat[17, 17]), math.exp(-8 / (2 * sigma ** 2)), rel_tol=1e-6)  # the corner is inside
    assert heat[15, 18] == 0 and heat[18, 15] == 0 and heat[12, 15] == 0
    assert (heat > 0).sum() == 25  # the 5 x 5 window of radius 2


def test_a_16x24_map_indexes_rows_by_width_and_clamps_each_axis_by_its_own_size():
    # input 64 x 96 px at stride 4 -> h = 16, w = 24
    boxes = torch.tensor([[[78.0, 24.0, 92.0, 36.0],  # centre (85, 30) px -> (21.25, 7.5) cells
                           [88.0, 60.0, 102.0, 70.0],  # centre (95, 65) -> (23.75, 16.25): y past the map
                           [-10.0, 2.0, 4.0, 6.0],  # centre (-3, 4) -> x before the map
                           [90.0, 20.0, 104.0, 30.0]]])  # centre (97, 25) -> (24.25, 6.25): x past the map
    t = encode(boxes, torch.tensor([[1, 0, 1, 0]]), torch.ones(1, 4, dtype=torch.bool), 2, (16, 24), 4)
    assert t["heatmap"].shape == (1, 2, 16, 24)
    assert t["index"][0].tolist() == [7 * 24 + 21, 15 * 24 + 23, 1 * 24 + 0, 6 * 24 + 23]
    assert t["heatmap"][0, 1, 7, 21] == 1 and t["heatmap"][0, 0, 15, 23] == 1 and t["heatmap"][0, 1, 1, 0] == 1
    assert torch.allclose(t["offset"][0], torch.tensor([[0.25, 0.5], [0.75, 1.25], [-0.75, 0.0], [1.25, 0.25]]))
    assert torch.allclose(t["size"][0], torch.tensor([[3.5, 3.0], [3.5, 2.5], [3.5, 1.0], [3.5, 2.5]]))
    # the Gaussian at the right border does not wrap around to the start of the next row, nor the left one back
    assert t["heatmap"][0, 0, 15, 0] == 0 and t["heatmap"][0, 1, 8, 0] == 0 and t["heatmap"][0, 1, 0, 23] == 0
    assert (t["heatmap"] == 1).sum() == 4


def test_gaussian_extent_follows_each_box_radius_in_one_batch():
    # 40 x 10 cells: radius 1.26 -> 1 (a 3 x 3 window); 2 x 2 cells: radius 0.16 -> 0 (the centre cell alone).
    # One call with both: the shared window is sized by the largest radius, each Gaussian is cut at its own.
    assert int(gaussian_radius(torch.tensor(40.0), torch.tensor(10.0))) == 1
    assert int(gaussian_radius(torch.tensor(10.0), torch.tensor(10.0))) == 0
    boxes = torch.tensor([[[0.0, 44.0, 160.0, 84.0], [96.0, 8.0, 104.0, 16.0]]])  # centres (20, 16), (25, 3) cells
    t = encode(boxes, torch.tensor([[0, 1]]), torch.tensor([[True, True]]), 2, (32, 40), 4)
    wide, small = t["heatmap"][0, 0], t["heatmap"][0, 1]
    assert (wide > 0).sum() == 9 and (wide[15:18, 19:22] > 0).all()
    sigma = (2 * 1 + 1) / 6
    assert math.isclose(float(wide[17, 21]), math.exp(-2 / (2 * sigma ** 2)), rel_tol=1e-6)
    assert (small > 0).sum() == 1 and small[3, 25] == 1


def test_each_gaussian_goes_to_its_own_image_and_class():
    boxes = torch.tensor([[[8.0, 8.0, 24.0, 24.0]], [[40.0, 8.0, 56.0, 24.0]]])  # cells (4, 4) and (12, 4)
    t = encode(boxes, torch.tensor([[2], [1]]), torch.ones(2, 1, dtype=torch.bool), 3, (16, 16), 4)
    assert t["heatmap"][0, 2, 4, 4] == 1 and t["heatmap"][1, 1, 4, 12] == 1
    assert t["heatmap"][0, :2].sum() == 0 and t["heatmap"][1, [0, 2]].sum() == 0
    assert t["heatmap"][0, 2, :, 8:].sum() == 0 and t["heatmap"][1, 1, :, :8].sum() == 0
    assert t["index"].tolist() == [[4 * 16 + 4], [4 * 16 + 12]]


def test_targets_are_float32_with_zero_rows_for_padding():
    boxes = torch.tensor([[[8.0, 8.0, 24.0, 28.0], [1.0, 2.0, 3.0, 4.0]]], dtype=torch.float64)
    t = encode(boxes, torch.tensor([[0, 0]]), torch.tensor([[True, False]]), 1, (16, 16), 4)
    assert t["heatmap"].dtype == t["offset"].dtype == t["size"].dtype == torch.float32
    assert t["index"].dtype == torch.int64 and t["mask"].dtype == torch.bool
    assert t["index"][0, 1] == 0 and t["offset"][0, 1].abs().sum() == 0 and t["size"][0, 1].abs().sum() == 0
    assert torch.allclose(t["size"][0, 0], torch.tensor([4.0, 5.0])) and torch.allclose(
        t["offset"][0, 0], torch.tensor([0.0, 0.5]))


def test_ignore_regions_hand_case_with_edges_on_cell_centres():
    # stride 4: cell centres at 2, 6, 10, 14, ... px. The box [6, 10] x [2, 14] has its edges on centres.
    crowd = torch.tensor([[[6.0, 2.0, 10.0, 14.0], [0.0, 0.0, 32.0, 32.0]], [[20.0, 24.0, 31.0, 32.0], [0, 0, 0, 0]]])
    mask = torch.tensor([[True, False], [True, False]])
    regions = ignore_regions(crowd, mask, (8, 8), 4)
    assert regions.shape == (2, 1, 8, 8) and regions.dtype == torch.bool
    expected = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    expected[0, 0, 0:4, 1:3] = True  # x centres 6, 10 -> cells 1, 2; y centres 2..14 -> cells 0..3
    expected[1, 0, 6:8, 5:8] = True  # x centres 22, 26, 30 (<= 31) -> cells 5..7; y centres 26, 30 -> cells 6, 7
    assert torch.equal(regions, expected)
    none = ignore_regions(crowd, torch.zeros_like(mask), (8, 8), 4)
    assert not none.any()


def test_a_gaussian_in_the_last_corner_of_the_last_image_and_class_stays_in_the_map():
    # a 30 x 30 cell box centred on cell (23, 15), the bottom-right cell of a 16 x 24 map: radius 2.45 -> 2, so
    # the window reaches 2 cells past the map's right and bottom edges, in the very last plane of the batch
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 8.0]], [[34.0, 2.0, 154.0, 122.0]]])  # centre (94, 62) px
    t = encode(boxes, torch.tensor([[0], [1]]), torch.ones(2, 1, dtype=torch.bool), 2, (16, 24), 4)
    last = t["heatmap"][1, 1]
    assert last[15, 23] == 1 and (last > 0).sum() == 9  # the 3 x 3 quarter of the 5 x 5 window inside the map
    sigma = (2 * 2 + 1) / 6
    assert math.isclose(float(last[13, 21]), math.exp(-8 / (2 * sigma ** 2)), rel_tol=1e-6)
    assert t["heatmap"][1, 0].sum() == 0 and t["heatmap"][0, 0, 1, 1] == 1
