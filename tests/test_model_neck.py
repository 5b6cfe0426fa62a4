"""The ``dcn`` neck (the paper's "ResNet-18 + DCN"): shapes, initialisation, learning, folding and export."""
import math

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch.nn import functional as F

from helpers.images import one_image
from helpers.networks import randomise_batchnorm

from detector.inference.export import ExportedDetector, example_input, export_onnx, export_torchscript
from detector.inference.pipeline import detect
from detector.losses import CenterNetLoss
from detector.model import CenterNet
from detector.model.fuse import fold_batchnorm, prepare_for_inference
from detector.model.neck import ModulatedDeformConv2d, bilinear_kernel, init_bilinear
from detector.preprocess import normalize, to_chw_tensor
from detector.targets import encode


def deformable_convs(model):
    return [m for m in model.modules() if isinstance(m, ModulatedDeformConv2d)]


def up_convs(model):
    return [m for m in model.neck.modules() if isinstance(m, torch.nn.ConvTranspose2d)]


def trained_like(model):
    """``model`` in eval mode with random BatchNorm statistics, offset/mask convs that move the taps by fractions of
    a cell to a few cells (at initialisation the offsets are all 0, which would hide offset and fold bugs) and
    heatmap logits spread enough that the top-K scores do not tie, as after training."""
    g = torch.Generator().manual_seed(0)
    model.head.heatmap[-1].weight.data.copy_(torch.randn(model.head.heatmap[-1].weight.shape, generator=g))
    randomise_batchnorm(model, g)
    for m in deformable_convs(model):
        m.offset_mask.weight.data.copy_(torch.randn(m.offset_mask.weight.shape, generator=g) * 0.005)
        m.offset_mask.bias.data.copy_(torch.randn(27, generator=g))
    return model.eval()


@pytest.mark.parametrize("height,width", [(256, 256), (192, 256)])
def test_output_shapes_and_full_heads(height, width):
    model = CenterNet(num_classes=5, neck="dcn").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, height, width))
    assert {name: tuple(v.shape) for name, v in out.items()} == {
        "heatmap": (1, 5, height // 4, width // 4), "offset": (1, 2, height // 4, width // 4),
        "size": (1, 2, height // 4, width // 4)}
    assert model.stride == 4 and model.neck.out_channels == 64
    assert [m.out_channels for m in deformable_convs(model)] == [256, 128, 64]
    first = model.head.heatmap[0]  # the paper's full 3x3 conv, not a depthwise one
    assert first.kernel_size == (3, 3) and first.groups == 1 and first.in_channels == 64


def test_every_parameter_gets_a_finite_nonzero_gradient():
    model = CenterNet(num_classes=2, neck="dcn")
    out = model(torch.randn(2, 3, 64, 64))
    sum(v.square().mean() for v in out.values()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name  # the zero-initialised offset/mask convs must still learn


def test_initial_deformable_conv_is_half_the_plain_conv():
    """Offsets 0 and mask sigmoid(0) = 0.5, which scales the sampled values: 0.5 x a plain 3x3 conv (no bias)."""
    for conv in deformable_convs(CenterNet(num_classes=2, neck="dcn")):
        assert conv.bias is None
        x = torch.randn(2, conv.in_channels, 5, 6)
        with torch.no_grad():
            plain = F.conv2d(x, conv.weight, padding=1)
            torch.testing.assert_close(conv(x), 0.5 * plain, atol=1e-5, rtol=1e-5)


def test_offsets_are_the_first_18_channels_and_the_mask_the_last_9():
    conv = ModulatedDeformConv2d(4, 3)
    x = torch.randn(1, 4, 6, 7)
    with torch.no_grad():
        conv.offset_mask.bias[18:] = 30.0  # mask 1
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, padding=1), atol=1e-5, rtol=1e-5)
        conv.offset_mask.bias[:18] = 1.0  # every tap moves one cell down and one right: out[i, j] reads
        # x[i + dy, j + dx] for dy, dx in 0..2 instead of -1..1, zero outside the map
        moved = F.conv2d(F.pad(x, (0, 2, 0, 2)), conv.weight)
        torch.testing.assert_close(conv(x), moved, atol=1e-5, rtol=1e-5)


def test_upsampling_starts_as_bilinear_interpolation():
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(bilinear_kernel(4), taps[:, None] * taps[None, :])
    for up in up_convs(CenterNet(num_classes=2, neck="dcn")):
        x = torch.randn(1, up.in_channels, 6, 7)
        with torch.no_grad():
            got = up(x)  # [1, C, 12, 14]
        want = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        # the border differs: the transposed conv pads with zeros, interpolate repeats the edge
        torch.testing.assert_close(got[..., 1:-1, 1:-1], want[..., 1:-1, 1:-1], atol=1e-5, rtol=1e-5)


def official_up_kernel(k):
    """The paper's code's fill, written out: f = ceil(k / 2), c = (2f - 1 - f % 2) / 2f,
    w[i, j] = (1 - |i / f - c|) (1 - |j / f - c|)."""
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    return torch.tensor([[(1 - abs(i / f - c)) * (1 - abs(j / f - c)) for j in range(k)] for i in range(k)])


def test_official_upconv_fill_is_the_kernel_into_output_channel_0_the_rest_random():
    torch.manual_seed(0)
    ups = up_convs(CenterNet(num_classes=2, neck="dcn", upconv_init="official"))
    assert len(ups) == 3
    for up in ups:
        weight = up.weight.detach()  # [C_in, C_out, 4, 4]
        torch.testing.assert_close(weight[:, 0], official_up_kernel(4).expand_as(weight[:, 0]))
        rest = weight[:, 1:]
        bound = 1 / math.sqrt(up.out_channels * 16)  # PyTorch's default init of a transposed conv: U(+-1/sqrt(fan))
        assert rest.abs().max() <= bound and rest.std() > bound / 3  # random, not zero, not the kernel


def test_diagonal_upconv_fill_stays_the_default():
    for up in up_convs(CenterNet(num_classes=2, neck="dcn")):
        weight, C = up.weight.detach(), up.out_channels
        torch.testing.assert_close(weight[range(C), range(C)], official_up_kernel(4).expand(C, 4, 4))
        assert weight.abs().sum() == pytest.approx(C * official_up_kernel(4).sum().item(), rel=1e-5)  # all else 0
    with pytest.raises(ValueError, match="upconv_init"):
        init_bilinear(torch.nn.ConvTranspose2d(2, 2, 4), "channel0")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_deformable_conv_computes_in_fp32_under_autocast(dtype):
    """torchvision's CPU kernel has no bf16/fp16: the block runs it in fp32, the result only rounded to the input's
    dtype (the same bits as the fp32 result rounded)."""
    conv = ModulatedDeformConv2d(4, 3)
    torch.nn.init.normal_(conv.offset_mask.weight, std=0.3)  # taps moved by fractions of a cell, masks apart
    x = torch.randn(1, 4, 5, 6).to(dtype)  # representable in ``dtype``
    with torch.no_grad():
        want = conv(x.float())
        with torch.autocast("cpu", dtype=dtype):
            got = conv(x)
    assert got.dtype == dtype
    assert torch.equal(got, want.to(dtype))


def test_tiny_training_run_learns():
    image, boxes, labels = one_image()
    x = F.interpolate(normalize(to_chw_tensor(image)[None]), scale_factor=0.5, mode="bilinear")  # [1, 3, 64, 64]
    model = CenterNet(num_classes=2, neck="dcn", weights=None)
    criterion = CenterNetLoss()
    targets = encode(boxes[None] / 2, labels[None], torch.ones(1, 3, dtype=torch.bool), 2, (16, 16), model.stride)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = criterion(model(x), targets)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) / 10, (losses[:3], losses[-3:])


def test_batchnorm_folding_and_channels_last_keep_the_outputs():
    model = trained_like(CenterNet(num_classes=3, neck="dcn"))
    folded = fold_batchnorm(model)  # raises if a BatchNorm after a deformable conv were left unfolded
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(conv.bias is not None for conv in deformable_convs(folded))
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
        for candidate in (folded, prepare_for_inference(model)):
            out = candidate(x)
            for name in expected:
                torch.testing.assert_close(out[name], expected[name], atol=1e-4, rtol=1e-4)


def test_detect_runs_the_prepared_network():
    model = trained_like(CenterNet(num_classes=3, neck="dcn"))
    images = torch.randint(0, 256, (2, 3, 128, 160), dtype=torch.uint8)
    meta = torch.tensor([[1.0, 1.0, 160.0, 128.0], [0.5, 0.5, 320.0, 256.0]])
    full = detect(model, images, meta, k=10)
    fast = detect(prepare_for_inference(model), images, meta, k=10)
    assert full["boxes"].shape == (2, 10, 4)
    torch.testing.assert_close(fast["scores"], full["scores"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast["boxes"], full["boxes"], atol=1e-3, rtol=1e-4)
    assert torch.equal(fast["labels"], full["labels"])


K = 20  # fewer than the local maxima of a 32x32 heatmap: no detections of score 0, whose order would be arbitrary


def assert_same_detections(got, want):
    assert (want[1] > 0).all()
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), w.numpy(), atol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # torch deprecates TorchScript; it still works
def test_torchscript_gives_the_eager_detections(tmp_path):
    model = trained_like(CenterNet(num_classes=3, neck="dcn"))
    eager = ExportedDetector(model, k=K).eval()
    traced = torch.jit.load(str(export_torchscript(model, tmp_path / "model.pt", ["a", "b", "c"], 128, k=K)))
    scripted = torch.jit.script(model)
    for batch in (1, 2):
        images = example_input(128, batch)
        with torch.no_grad():
            assert_same_detections(traced(images), eager(images))
            expected = model(normalize(images))
            for name, value in scripted(normalize(images)).items():
                torch.testing.assert_close(value, expected[name], atol=1e-5, rtol=1e-5)


def test_onnx_runtime_gives_the_eager_detections_at_two_sizes(tmp_path):
    """torch's exporter writes torchvision's deform_conv2d as ONNX's DeformConv (onnxscript's translation); the one
    file runs at the training size and at another multiple of 32."""
    model = trained_like(CenterNet(num_classes=3, neck="dcn"))
    path = export_onnx(model, tmp_path / "model.onnx", ["a", "b", "c"], 128, k=K)
    proto = onnx.load(str(path))
    assert {entry.domain: entry.version for entry in proto.opset_import}[""] == 19
    assert sum(node.op_type == "DeformConv" for node in proto.graph.node) == 3
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    eager = ExportedDetector(model, k=K).eval()
    for batch, size in ((1, 128), (2, 128), (1, 96), (2, 160)):
        images = example_input(size, batch)
        with torch.no_grad():
            assert_same_detections(session.run(["boxes", "scores", "labels"], {"images": images.numpy()}),
                                   eager(images))
