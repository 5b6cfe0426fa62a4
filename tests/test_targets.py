"""Targets: Gaussian heatmaps, centre index, offsets, sizes and masks against hand values (the radius formula and
its floor, a non-square map, clamping, crowd regions) and the paper's radius and elliptical Gaussian."""
import math
import pytest
import torch
import numpy as np

from detector.boxes import iou_xyxy, matched_iou_xyxy
from detector.decode import decode
from detector.targets import encode, gaussian_radius
from detector.targets import encode, gaussian_radius, ignore_regions
from detector.data import Sample
from detector.data.transforms import (PAD_VALUE, PAPER_CROP_SCALES, PAPER_EIGVAL, PAPER_EIGVEC,
                                      CropTrainTransform, paper_border, warp)
from detector.targets import ELLIPSE_ALPHA, encode, gaussian_extent, gaussian_radius


def displaced_ious(w, h, r):
    """IoU of a w x h box with its three CornerNet displacements by r (shift, shrink, grow)."""
    box = torch.stack([torch.zeros_like(w), torch.zeros_like(w), w, h], dim=-1)
    shift = box + torch.stack([r, r, r, r], dim=-1)
    shrink = box + torch.stack([r, r, -r, -r], dim=-1)
    grow = box + torch.stack([-r, -r, r, r], dim=-1)
    return [matched_iou_xyxy(box, other) for other in (shift, shrink, grow)]


def test_radius_keeps_iou_at_least_min_overlap():
    w, h = torch.rand(2, 1000, dtype=torch.float64) * 200 + 0.5
    r = gaussian_radius(w, h, 0.7)
    for iou in displaced_ious(w, h, r):
        assert (iou >= 0.7 - 1e-9).all()
    # and it is the largest such radius: one of the three cases is tight
    tight = torch.stack(displaced_ious(w, h, r)).min(dim=0).values
    assert torch.allclose(tight, torch.full_like(tight, 0.7), atol=1e-9)


def test_an_overlap_of_one_allows_no_displacement():
    """min_overlap 1.0: only the box itself keeps IoU 1, so every radius is 0, exact and legacy (case 1's constant
    is then 0 / 2; a mutant dividing by ``1 - o`` makes it 0 / 0, a NaN radius)."""
    w, h = torch.tensor([1.0, 30.0, 200.0]), torch.tensor([1.0, 50.0, 20.0])
    for legacy in (False, True):
        assert torch.equal(gaussian_radius(w, h, 1.0, legacy=legacy), torch.zeros(3)), legacy


def test_legacy_radius_is_larger_and_breaks_the_overlap_rule():
    w, h = torch.rand(2, 1000, dtype=torch.float64) * 200 + 2
    legacy = gaussian_radius(w, h, 0.7, legacy=True)
    assert (legacy > gaussian_radius(w, h, 0.7)).all()
    assert (torch.stack(displaced_ious(w, h, legacy)).min(dim=0).values < 0.7).all()


def test_one_box_gives_a_peak_of_exactly_one_at_its_centre_cell():
    boxes = torch.tensor([[[40.0, 20.0, 80.0, 100.0]]])  # centre (60, 60) px -> cell (15, 15) at stride 4
    t = encode(boxes, torch.tensor([[2]]), torch.tensor([[True]]), 3, (32, 32), 4)
    assert t["heatmap"].shape == (1, 3, 32, 32)
    assert t["heatmap"][0, 2, 15, 15] == 1.0
    assert (t["heatmap"] == 1).sum() == 1
    assert t["heatmap"][0, :2].sum() == 0
    assert t["index"][0, 0] == 15 * 32 + 15
    assert torch.allclose(t["offset"][0, 0], torch.tensor([0.0, 0.0]))
    assert torch.allclose(t["size"][0, 0], torch.tensor([10.0, 20.0]))
    radius = int(gaussian_radius(torch.tensor(10.0), torch.tensor(20.0)))
    sigma = (2 * radius + 1) / 6
    assert math.isclose(float(t["heatmap"][0, 2, 15, 16]), math.exp(-1 / (2 * sigma**2)), rel_tol=1e-6)
    assert t["heatmap"][0, 2, 15, 15 + radius + 1] == 0


def test_overlapping_objects_of_one_class_take_the_elementwise_max():
    a = torch.tensor([[[0.0, 0.0, 64.0, 64.0]]])
    b = torch.tensor([[[16.0, 8.0, 88.0, 72.0]]])
    label, mask = torch.tensor([[0]]), torch.tensor([[True]])
    ha = encode(a, label, mask, 1, (32, 32), 4)["heatmap"]
    hb = encode(b, label, mask, 1, (32, 32), 4)["heatmap"]
    both = encode(torch.cat([a, b], 1), torch.tensor([[0, 0]]), torch.tensor([[True, True]]), 1, (32, 32), 4)
    assert torch.equal(both["heatmap"], torch.maximum(ha, hb))


def test_two_centres_in_one_cell_give_one_peak_and_both_targets():
    boxes = torch.tensor([[[10.0, 10.0, 30.0, 30.0], [12.0, 11.0, 29.0, 30.0]]])  # centres (20, 20), (20.5, 20.5)
    t = encode(boxes, torch.tensor([[1, 1]]), torch.tensor([[True, True]]), 2, (16, 16), 4)
    assert (t["heatmap"] == 1).sum() == 1 and t["heatmap"][0, 1, 5, 5] == 1
    assert t["index"][0, 0] == t["index"][0, 1] == 5 * 16 + 5
    assert t["mask"].all()
    assert not torch.equal(t["size"][0, 0], t["size"][0, 1])


def test_border_boxes_keep_full_size_and_padding_is_ignored():
    boxes = torch.tensor([[[0.0, 0.0, 16.0, 8.0], [100.0, 120.0, 128.0, 128.0], [5.0, 5.0, 5.0, 9.0], [0, 0, 9, 9]]])
    mask = torch.tensor([[True, True, True, False]])
    t = encode(boxes, torch.tensor([[0, 0, 0, 0]]), mask, 1, (32, 32), 4)
    assert torch.allclose(t["size"][0, :2], torch.tensor([[4.0, 2.0], [7.0, 2.0]]))
    assert t["mask"].tolist() == [[True, True, False, False]]  # zero-width box and padding: no target
    assert (t["heatmap"] == 1).sum() == 2


def test_empty_batch_and_batch_equals_per_image():
    empty = encode(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, dtype=torch.bool),
                   4, (8, 8), 4)
    assert empty["heatmap"].shape == (2, 4, 8, 8) and empty["heatmap"].sum() == 0
    boxes, labels, mask = random_scene(3, 6, 128)
    batched = encode(boxes, labels, mask, 3, (32, 32), 4)
    for i in range(3):
        single = encode(boxes[i:i + 1], labels[i:i + 1], mask[i:i + 1], 3, (32, 32), 4)
        for key in batched:
            assert torch.equal(batched[key][i:i + 1], single[key]), key


def random_scene(batch, count, size, generator=None):
    """Random xyxy boxes in a size x size image: every 4th tiny, and boxes touching each of the four borders."""
    g = generator or torch.Generator().manual_seed(0)
    wh = torch.rand(batch, count, 2, generator=g) * size * 0.5 + 1
    wh[:, ::4] = torch.rand(batch, len(range(0, count, 4)), 2, generator=g) * 3 + 1
    top_left = torch.rand(batch, count, 2, generator=g) * (size - wh)
    top_left[:, 1::5, 0] = 0  # left border
    top_left[:, 2::5, 1] = 0  # top border
    top_left[:, 3::5, 0] = size - wh[:, 3::5, 0]  # right border
    top_left[:, 4::5, 1] = size - wh[:, 4::5, 1]  # bottom border
    boxes = torch.cat([top_left, top_left + wh], dim=-1)
    labels = torch.randint(0, 3, (batch, count), generator=g)
    return boxes, labels, torch.ones(batch, count, dtype=torch.bool)


def targets_as_outputs(t, num_classes, output_size):
    """Perfect network outputs for targets t: heatmap logits, and offset/size scattered to the centre cells."""
    B = t["index"].shape[0]
    h, w = output_size
    eps = 1e-6
    outputs = {"heatmap": torch.logit(t["heatmap"].clamp(eps, 1 - eps))}
    for key in ("offset", "size"):
        maps = torch.zeros(B, 2, h * w)
        index = t["index"][:, None, :].expand(B, 2, -1)
        maps.scatter_(2, index, t[key].transpose(1, 2))
        outputs[key] = maps.view(B, 2, h, w)
    return outputs


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_encode_decode(seed):
    g = torch.Generator().manual_seed(seed)
    size, stride, num_classes = 256, 4, 3
    boxes, labels, mask = random_scene(4, 12, size, g)
    # overlapping boxes of one class: nudge the last box onto a neighbour
    boxes[:, -1] = boxes[:, 0] + torch.tensor([6.0, 5.0, 9.0, 7.0])
    labels[:, -1] = labels[:, 0]
    t = encode(boxes, labels, mask, num_classes, (size // stride, size // stride), stride)
    # centres sharing a cell cannot both be decoded (documented in targets.py): keep scenes where they don't
    for i in range(4):
        assert len(set(t["index"][i].tolist())) == 12, "the scene generator put two centres in one cell"
    out = decode(targets_as_outputs(t, num_classes, (size // stride,) * 2), k=12, stride=stride)
    worst = 1.0
    for i in range(4):
        ious = iou_xyxy(boxes[i], out["boxes"][i])  # [12 truth, 12 decoded]
        best, match = ious.max(dim=1)
        assert (out["labels"][i][match] == labels[i]).all()
        worst = min(worst, float(best.min()))
    assert worst >= 0.99, worst
    print(f"worst round-trip IoU (seed {seed}): {worst:.6f}")


# hand values --------------------------------------------------------------------------------------------------------

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


# the paper's radius -------------------------------------------------------------------------------------------------

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
