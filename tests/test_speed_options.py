"""The speed options of issue 7: the faster decode, BatchNorm folding, channels_last and bfloat16 inference."""
import pytest
import torch
from torch.nn import functional as F

from detector.decode import decode, local_max, peaks


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


def test_decode_accepts_bfloat16_outputs():
    outputs = {"heatmap": torch.randn(1, 4, 16, 16), "offset": torch.rand(1, 2, 16, 16),
               "size": torch.rand(1, 2, 16, 16) * 4}
    low = decode({k: v.bfloat16() for k, v in outputs.items()}, k=10)
    assert low["boxes"].dtype == torch.float32 and low["scores"].dtype == torch.float32
    assert torch.equal(low["labels"], decode({k: v.bfloat16().float() for k, v in outputs.items()}, k=10)["labels"])
