"""The speed options of issue 7: the faster decode, BatchNorm folding, channels_last and bfloat16 inference."""
import pytest
import torch
from torch.nn import functional as F

from detector.decode import decode, local_max


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


def _randomise_batchnorm(model):
    """Non-trivial running statistics and affine parameters, so that folding has something to fold."""
    g = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("neck", ["lean", "deconv"])
def test_batchnorm_folding_keeps_the_outputs(neck):
    from detector.model import CenterNet
    from detector.model.fuse import fold_batchnorm, prepare_for_inference

    model = _randomise_batchnorm(CenterNet(num_classes=3, neck=neck))
    x = torch.randn(2, 3, 64, 96)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    prepared = prepare_for_inference(model)
    assert prepared.stride == model.stride
    with torch.no_grad():
        expected = model(x)
        for candidate in (folded, prepared):
            out = candidate(x)
            for name in expected:
                assert torch.allclose(out[name], expected[name], atol=1e-4, rtol=1e-4), name


def test_folding_a_grouped_transposed_convolution():
    from detector.model.fuse import fold_batchnorm

    model = _randomise_batchnorm(torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 6, 4, 2, 1, groups=2),
                                                     torch.nn.BatchNorm2d(6)))
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        assert torch.allclose(fold_batchnorm(model)(x), model(x), atol=1e-5)


def test_a_batchnorm_without_a_convolution_is_refused():
    from detector.model.fuse import fold_batchnorm

    with pytest.raises(ValueError, match="no convolution"):
        fold_batchnorm(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.BatchNorm2d(3)))


needs_bf16 = pytest.mark.skipif(not __import__("detector.inference.pipeline", fromlist=["x"]).bf16_supported("cpu"),
                                reason="this CPU has no fast bfloat16 (AVX512-BF16/AMX)")


def _trained_like_model():
    """A random model whose heatmap has a few clear peaks, like a trained one (random logits all tie near 0.1)."""
    from detector.model import CenterNet

    torch.manual_seed(0)
    model = _randomise_batchnorm(CenterNet(num_classes=4))
    torch.nn.init.constant_(model.head.size[-1].bias, 4.0)  # boxes of about 16 px, not empty ones
    images = torch.randint(0, 256, (2, 3, 128, 160), dtype=torch.uint8)
    meta = torch.tensor([[1.0, 1.0, 160.0, 128.0], [0.5, 0.5, 320.0, 256.0]])
    return model, images, meta


@needs_bf16
def test_bf16_detections_are_close_to_fp32():
    from torchvision.ops import box_iou

    from detector.inference.pipeline import detect
    from detector.model.fuse import prepare_for_inference

    model, images, meta = _trained_like_model()
    fast = prepare_for_inference(model)
    full = detect(model, images, meta, k=10)
    for candidate, precision in ((fast, "fp32"), (fast, "bf16"), (model, "bf16")):
        out = detect(candidate, images, meta, k=50, precision=precision)
        tolerance = 1e-4 if precision == "fp32" else 0.03  # bf16 keeps 8 bits of mantissa
        assert torch.allclose(out["scores"][:, :10], full["scores"], atol=tolerance), precision
        for b in range(images.shape[0]):  # each fp32 detection is found again, same class, nearly the same box
            iou = box_iou(full["boxes"][b], out["boxes"][b]).nan_to_num()  # [10, 50]
            iou[full["labels"][b][:, None] != out["labels"][b][None, :]] = 0
            assert (iou.amax(1) > (0.999 if precision == "fp32" else 0.9)).all(), (precision, iou.amax(1))


@needs_bf16
def test_predictor_precision_option():
    import numpy as np

    from detector.inference.detectors import Detector

    model, _, _ = _trained_like_model()
    image = np.random.default_rng(0).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    full = Detector(model, list("abcd"), 128, prepare=False).predict(image, conf=0.0)
    fast = Detector(model, list("abcd"), 128).predict(image, conf=0.0)
    low = Detector(model, list("abcd"), 128, precision="bf16").predict(image, conf=0.0)
    np.testing.assert_allclose(fast.scores, full.scores, atol=1e-4)
    np.testing.assert_allclose(low.scores[:10], full.scores[:10], atol=0.05)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in Detector(model, list("abcd"), 128).model.modules())


def test_unknown_precision_is_refused():
    from detector.inference.pipeline import check_precision

    with pytest.raises(ValueError, match="unknown precision"):
        check_precision("fp8", "cpu")
