"""Decoding: top-K peaks to boxes in input pixels and the flip merge, against hand values, mirror symmetry and the
plain max-pool reference (the faster decode, channels_last and bfloat16 outputs)."""
import torch
import pytest
from torch.nn import functional as F

from helpers.networks import randomise_batchnorm

from detector.decode import decode
from detector.decode import decode, flip_merge, local_max
from detector.inference.pipeline import forward_images
from detector.decode import decode, local_max


def naive_decode(outputs, k, stride):
    """A per-cell Python reference: every 3x3 local maximum, sorted by score."""
    heat = outputs["heatmap"].sigmoid()
    B, C, h, w = heat.shape
    results = []
    for b in range(B):
        found = []
        for c in range(C):
            for y in range(h):
                for x in range(w):
                    window = heat[b, c, max(0, y - 1):y + 2, max(0, x - 1):x + 2]
                    if heat[b, c, y, x] >= window.max():
                        ox, oy = outputs["offset"][b, :, y, x].tolist()
                        sw, sh = outputs["size"][b, :, y, x].clamp(min=0).tolist()
                        cx, cy = (x + ox) * stride, (y + oy) * stride
                        box = [cx - sw * stride / 2, cy - sh * stride / 2, cx + sw * stride / 2, cy + sh * stride / 2]
                        found.append((float(heat[b, c, y, x]), c, box))
        found.sort(key=lambda item: -item[0])
        results.append(found[:k])
    return results


def test_vectorised_decode_equals_a_naive_loop():
    g = torch.Generator().manual_seed(3)
    outputs = {"heatmap": torch.randn(2, 3, 10, 12, generator=g) * 2, "offset": torch.rand(2, 2, 10, 12, generator=g),
               "size": torch.randn(2, 2, 10, 12, generator=g) * 5}
    out = decode(outputs, k=15, stride=4)
    assert out["boxes"].shape == (2, 15, 4) and out["scores"].shape == (2, 15) and out["labels"].shape == (2, 15)
    for b, expected in enumerate(naive_decode(outputs, 15, 4)):
        for j, (score, label, box) in enumerate(expected):
            assert abs(float(out["scores"][b, j]) - score) < 1e-6
            assert int(out["labels"][b, j]) == label
            assert torch.allclose(out["boxes"][b, j], torch.tensor(box), atol=1e-4)


def test_boxes_are_never_inverted_and_k_is_capped():
    outputs = {"heatmap": torch.randn(1, 2, 3, 3), "offset": torch.rand(1, 2, 3, 3),
               "size": -torch.rand(1, 2, 3, 3) * 10}  # a bad size head predicts negative sizes
    out = decode(outputs, k=100)
    assert out["boxes"].shape == (1, 18, 4)
    assert (out["boxes"][..., 2] >= out["boxes"][..., 0]).all() and (out["boxes"][..., 3] >= out["boxes"][..., 1]).all()
    assert (out["scores"][:, :-1] >= out["scores"][:, 1:]).all()


# hand values and the flip test --------------------------------------------------------------------------------------

def mirror(outputs):
    """The outputs a perfectly mirror-equivariant network gives for the mirrored image (offset unused by flip_merge)."""
    return {k: v.flip(-1) for k, v in outputs.items()}


def test_flip_merge_of_a_mirrored_input_gives_back_the_plain_output():
    g = torch.Generator().manual_seed(0)
    outputs = {"heatmap": torch.randn(2, 3, 5, 7, generator=g), "offset": torch.rand(2, 2, 5, 7, generator=g),
               "size": torch.rand(2, 2, 5, 7, generator=g) * 9}
    merged = flip_merge(outputs, mirror(outputs))
    assert torch.allclose(merged["heatmap"].sigmoid(), outputs["heatmap"].sigmoid(), atol=1e-6)
    assert torch.allclose(merged["size"], outputs["size"], atol=1e-6)
    assert torch.equal(merged["offset"], outputs["offset"])


def test_flip_merge_averages_probabilities_not_logits():
    ones = torch.ones(1, 2, 1, 1)
    plain = {"heatmap": torch.logit(torch.full((1, 1, 1, 1), 0.9)), "offset": ones * 0.25, "size": ones * 2}
    other = {"heatmap": torch.logit(torch.full((1, 1, 1, 1), 0.5)), "offset": ones * 0.75, "size": ones * 6}
    merged = flip_merge(plain, other)
    assert torch.allclose(merged["heatmap"].sigmoid(), torch.tensor(0.7), atol=1e-6)  # (0.9 + 0.5) / 2
    assert torch.allclose(merged["size"], ones * 4) and torch.equal(merged["offset"], plain["offset"])


class _Asymmetric(torch.nn.Module):
    """A tiny fixed 'network' with stride 4: heatmap and size from the image through an asymmetric kernel, offsets
    0.5 (the cell centre, which mirrors onto itself). Its outputs for a mirrored image are not a mirror of anything
    it computed for the plain one, so a flip test that forgets to flip back cannot hide."""

    stride = 4

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.heat = torch.nn.Conv2d(3, 2, 4, stride=4)
        self.size = torch.nn.Conv2d(3, 2, 4, stride=4)
        for conv in (self.heat, self.size):
            conv.weight.data = torch.randn(conv.weight.shape, generator=g)
            conv.bias.data.zero_()

    def forward(self, x):
        heat = self.heat(x)
        return {"heatmap": heat, "offset": torch.full_like(heat, 0.5), "size": self.size(x).abs() + 1}


def test_flip_test_boxes_on_a_mirrored_image_mirror_the_plain_image_boxes():
    model = _Asymmetric()
    images = torch.randint(0, 256, (1, 3, 32, 48), dtype=torch.uint8)
    with torch.no_grad():
        plain = decode(forward_images(model, images, flip=True), k=20, stride=4)
        mirrored = decode(forward_images(model, images.flip(-1), flip=True), k=20, stride=4)
    width = images.shape[-1]
    expected = plain["boxes"][..., [2, 1, 0, 3]] * torch.tensor([-1.0, 1.0, -1.0, 1.0]) + torch.tensor(
        [width, 0.0, width, 0.0])  # x1' = W - x2, x2' = W - x1
    assert torch.allclose(mirrored["scores"], plain["scores"], atol=1e-6)
    order_plain = sorted(zip(plain["scores"][0].tolist(), expected[0].tolist(), plain["labels"][0].tolist()))
    order_mirror = sorted(zip(mirrored["scores"][0].tolist(), mirrored["boxes"][0].tolist(),
                              mirrored["labels"][0].tolist()))
    for (s1, box1, l1), (s2, box2, l2) in zip(order_plain, order_mirror):
        assert abs(s1 - s2) < 1e-6 and l1 == l2
        assert torch.allclose(torch.tensor(box1), torch.tensor(box2), atol=1e-4), (box1, box2)


def test_decode_hand_values_on_a_non_square_map():
    """One peak at class 1, cell (x=5, y=2) of a 3 x 7 map: box from offset and size, in input pixels."""
    heatmap = torch.full((1, 2, 3, 7), -5.0)
    heatmap[0, 1, 2, 5] = 2.0
    heatmap[0, 0, 0, 0] = 1.0  # a second, lower peak in class 0
    offset, size = torch.zeros(1, 2, 3, 7), torch.zeros(1, 2, 3, 7)
    offset[0, :, 2, 5] = torch.tensor([0.25, 0.75])
    size[0, :, 2, 5] = torch.tensor([3.0, 1.0])
    out = decode({"heatmap": heatmap, "offset": offset, "size": size}, k=2, stride=8)
    # centre ((5 + 0.25) * 8, (2 + 0.75) * 8) = (42, 22); half size (12, 4)
    assert torch.allclose(out["boxes"][0, 0], torch.tensor([30.0, 18.0, 54.0, 26.0]))
    assert out["labels"][0].tolist() == [1, 0]
    assert torch.allclose(out["scores"][0], torch.tensor([2.0, 1.0]).sigmoid())
    assert torch.allclose(out["boxes"][0, 1], torch.zeros(4))  # zero size at cell (0, 0), offset 0


def test_fewer_peaks_than_k_score_zero_and_plateaus_count_once_per_cell():
    heatmap = torch.full((1, 1, 4, 4), -30.0)
    heatmap[0, 0, 1, 1] = 3.0
    out = decode({"heatmap": heatmap, "offset": torch.zeros(1, 2, 4, 4), "size": torch.ones(1, 2, 4, 4)}, k=16)
    probabilities = out["scores"][0]
    assert probabilities[0] > 0.95
    # -30 cells next to the peak are not local maxima; the 7 cells of row 3 and column 3, two or more cells from it,
    # are (a plateau of equal values): 8 peaks counted by hand, the other 8 of the k=16 score 0
    assert int((probabilities > 0).sum()) == 8
    far = {(3, 0), (3, 1), (3, 2), (3, 3), (0, 3), (1, 3), (2, 3)}
    centres = (out["boxes"][0, 1:8, :2] + out["boxes"][0, 1:8, 2:]) / 2 / 4  # offset 0: the cell index, stride 4
    assert {(int(y), int(x)) for x, y in centres.round()} == far



def test_local_max_pads_with_minus_infinity():
    heat = torch.full((1, 1, 2, 3), -7.0)
    assert torch.equal(local_max(heat), heat)  # a zero padding would make every negative cell lose to the border


def test_flip_merge_of_saturated_probabilities_stays_finite():
    ones = torch.ones(1, 2, 1, 2)
    plain = {"heatmap": torch.tensor([[[[100.0, -100.0]]]]), "offset": ones, "size": ones}
    merged = flip_merge(plain, mirror(plain) | {"heatmap": torch.tensor([[[[-100.0, 100.0]]]])})
    assert torch.isfinite(merged["heatmap"]).all()  # probabilities exactly 0 and 1 are clamped before the logit
    assert merged["heatmap"][0, 0, 0, 0] > 15 and merged["heatmap"][0, 0, 0, 1] < -15


def test_decode_keeps_100_detections_by_default():
    g = torch.Generator().manual_seed(2)
    outputs = {"heatmap": torch.randn(1, 2, 16, 16, generator=g), "offset": torch.zeros(1, 2, 16, 16),
               "size": torch.ones(1, 2, 16, 16)}
    out = decode(outputs)
    assert out["boxes"].shape == (1, 100, 4)
    assert torch.allclose(decode(outputs, stride=4)["boxes"], out["boxes"])
    assert torch.allclose(decode(outputs, stride=8)["boxes"], 2 * out["boxes"])  # the default stride is 4


# the faster decode against the first implementation -----------------------------------------------------------------

def peaks(heatmap):
    """Probabilities ``[B, C, h, w]`` with every cell that is not the maximum of its 3x3 window set to 0."""
    return heatmap * (local_max(heatmap) == heatmap).to(heatmap.dtype)


def reference_decode(outputs, k, stride):
    """The first implementation: max-pool peaks of the probabilities, one top-K over every class and cell."""
    heat = outputs["heatmap"].sigmoid()
    B, C, h, w = heat.shape
    kept = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    scores, flat = kept.flatten(1).topk(k, dim=1)
    labels, cell = flat // (h * w), flat % (h * w)
    offset = outputs["offset"].flatten(2).gather(2, cell[:, None].expand(B, 2, k)).transpose(1, 2)
    size = outputs["size"].flatten(2).gather(2, cell[:, None].expand(B, 2, k)).transpose(1, 2).clamp(min=0)
    centre = torch.stack([cell % w, cell // w], dim=-1) + offset
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1) * stride
    return {"boxes": boxes, "scores": scores, "labels": labels}


def test_local_max_equals_max_pool():
    heat = torch.randn(2, 5, 7, 9)
    assert torch.equal(local_max(heat), F.max_pool2d(heat, 3, stride=1, padding=1))
    prob = heat.sigmoid()
    assert torch.equal(peaks(prob), prob * (F.max_pool2d(prob, 3, stride=1, padding=1) == prob))


@pytest.mark.parametrize("C,h,w,k", [(80, 32, 32, 100), (3, 4, 5, 60), (1, 1, 1, 5), (2, 8, 8, 300)])
def test_decode_equals_the_max_pool_reference(C, h, w, k):
    g = torch.Generator().manual_seed(C + h)
    outputs = {"heatmap": torch.randn(2, C, h, w, generator=g) * 1.5, "offset": torch.rand(2, 2, h, w, generator=g),
               "size": torch.randn(2, 2, h, w, generator=g) * 5}
    k = min(k, C * h * w)
    out, expected = decode(outputs, k=k), reference_decode(outputs, k, 4)
    # probabilities near 1 can tie where the logits differ: 1.5 sigma keeps them apart
    peaks_found = int((expected["scores"] > 0).sum(1).min())  # beyond the peaks, both fill with arbitrary zeros
    assert torch.allclose(out["scores"], expected["scores"], atol=1e-6)
    assert torch.equal(out["labels"][:, :peaks_found], expected["labels"][:, :peaks_found])
    assert torch.allclose(out["boxes"][:, :peaks_found], expected["boxes"][:, :peaks_found], atol=1e-4)


@pytest.mark.parametrize("C,h,w,k", [(80, 32, 32, 100), (3, 4, 5, 60), (2, 8, 8, 128)])
def test_decode_of_channels_last_outputs_equals_decode_of_nchw_ones(C, h, w, k):
    """A prepared network returns channels_last maps, decoded by cell instead of by class row: same detections."""
    g = torch.Generator().manual_seed(C * w)
    nchw = {"heatmap": torch.randn(2, C, h, w, generator=g) * 1.5, "offset": torch.rand(2, 2, h, w, generator=g),
            "size": torch.randn(2, 2, h, w, generator=g) * 5}
    last = {key: value.contiguous(memory_format=torch.channels_last) for key, value in nchw.items()}
    assert torch.equal(local_max(last["heatmap"]), F.max_pool2d(nchw["heatmap"], 3, stride=1, padding=1))
    expected, got = reference_decode(nchw, k, 4), decode(last, k=k)
    peaks_found = int((expected["scores"] > 0).sum(1).min())
    assert torch.allclose(got["scores"], expected["scores"], atol=1e-6)
    assert torch.equal(got["labels"][:, :peaks_found], expected["labels"][:, :peaks_found])
    assert torch.allclose(got["boxes"][:, :peaks_found], expected["boxes"][:, :peaks_found], atol=1e-4)


def test_decode_accepts_bfloat16_outputs():
    """Hand values that bfloat16 holds exactly, but whose boxes it cannot: decoding must compute in float32."""
    heatmap = torch.full((1, 2, 8, 128), -4.0)
    heatmap[0, 1, 5, 100] = 1.5  # class 1, cell (x=100, y=5)
    heatmap[0, 0, 2, 3] = 1.25
    offset, size = torch.zeros(1, 2, 8, 128), torch.ones(1, 2, 8, 128)
    offset[0, :, 5, 100] = torch.tensor([0.375, 0.625])
    size[0, :, 5, 100] = torch.tensor([3.0, 5.0])
    low = decode({"heatmap": heatmap.bfloat16(), "offset": offset.bfloat16(), "size": size.bfloat16()}, k=2)
    assert low["boxes"].dtype == torch.float32 and low["scores"].dtype == torch.float32
    # centre (100.375 * 4, 5.625 * 4) = (401.5, 22.5), half size (6, 10): x1 = 395.5 has no bfloat16 value
    assert torch.equal(low["boxes"][0, 0], torch.tensor([395.5, 12.5, 407.5, 32.5]))
    assert torch.equal(low["scores"][0], torch.tensor([1.5, 1.25]).sigmoid())
    assert low["labels"][0].tolist() == [1, 0]
