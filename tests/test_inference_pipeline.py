"""Around the network (``detector/inference/pipeline.py``): bfloat16 inference close to fp32, the predictor's
precision option and an unknown precision refused."""
import pytest
import torch
from torch.nn import functional as F

from helpers.hardware import needs_cpu_bf16
from helpers.networks import randomise_batchnorm

from detector.decode import decode, local_max


needs_bf16 = needs_cpu_bf16


def _trained_like_model():
    """A random model whose heatmap has a few clear peaks, like a trained one (random logits all tie near 0.1)."""
    from detector.model import CenterNet

    torch.manual_seed(0)
    model = randomise_batchnorm(CenterNet(num_classes=4))
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
