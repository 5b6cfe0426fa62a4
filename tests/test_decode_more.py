"""Decoding and the flip test, checked against hand values and mirror symmetry (issue 12: tests that catch bugs)."""
import torch

from detector.decode import decode, flip_merge, local_max
from detector.inference.pipeline import forward_images


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
    # -30 cells next to the peak are not local maxima; the far corner ones are (a plateau of equal values)
    local = (heatmap >= local_max(heatmap)).sum()
    assert int((probabilities > 0).sum()) == int(local)



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
