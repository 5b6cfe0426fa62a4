import torch

from detector.decode import decode


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
