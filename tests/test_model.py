"""The network (``detector/model/``: backbone, head, centernet): output shapes, the backbone contract, the paper's
initialisation of the heads, gradients, local weights and their errors."""
import pytest
import torch
import torchvision
import math
import numpy as np

from detector.model import CenterNet, ResNet18Backbone, WeightsError
from detector.data import Sample
from detector.data.transforms import (PAD_VALUE, PAPER_CROP_SCALES, PAPER_EIGVAL, PAPER_EIGVEC,
                                      CropTrainTransform, paper_border, warp)
from detector.targets import ELLIPSE_ALPHA, encode, gaussian_extent, gaussian_radius


@pytest.mark.parametrize("neck", ["lean", "deconv"])
@pytest.mark.parametrize("height,width", [(64, 64), (96, 160), (128, 32)])
def test_output_shapes(neck, height, width):
    model = CenterNet(num_classes=5, neck=neck).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, height, width))
    assert set(out) == {"heatmap", "offset", "size"}
    assert out["heatmap"].shape == (2, 5, height // 4, width // 4)
    assert out["offset"].shape == (2, 2, height // 4, width // 4)
    assert out["size"].shape == (2, 2, height // 4, width // 4)
    assert model.stride == 4


def test_backbone_contract():
    body = ResNet18Backbone(weights=None).eval()
    with torch.no_grad():
        features = body(torch.randn(1, 3, 64, 96))
    for feature, channels, stride in zip(features, body.channels, body.strides):
        assert feature.shape == (1, channels, 64 // stride, 96 // stride)


def test_heatmap_prior_bias():
    model = CenterNet(num_classes=3)
    bias = model.head.heatmap[-1].bias
    assert torch.allclose(bias.sigmoid(), torch.full_like(bias, 0.1))


@pytest.mark.parametrize("neck", ["lean", "deconv"])
def test_every_parameter_gets_a_finite_gradient(neck):
    model = CenterNet(num_classes=2, neck=neck)
    out = model(torch.randn(2, 3, 64, 64))
    sum(v.square().mean() for v in out.values()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


def test_lean_neck_is_lighter_than_deconv():
    lean = sum(p.numel() for p in CenterNet(80, neck="lean").neck.parameters())
    deconv = sum(p.numel() for p in CenterNet(80, neck="deconv").neck.parameters())
    assert lean < deconv / 4


def test_imagenet_download_failure_names_the_alternatives(monkeypatch):
    def offline(url, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as error:
        ResNet18Backbone(weights="imagenet")
    message = str(error.value)
    assert "weights=None" in message and "local path" in message and "network is unreachable" in message


def test_local_pth_weights_are_loaded(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    body = ResNet18Backbone(weights=str(path))
    assert torch.equal(body.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert torch.equal(body.stem[0].weight, source.conv1.weight)


def test_local_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        ResNet18Backbone(weights=str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable"):
        ResNet18Backbone(weights=str(junk))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(WeightsError, match="does not hold torchvision resnet18"):
        ResNet18Backbone(weights=str(wrong))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown neck"):
        CenterNet(3, neck="fpn9000")
    with pytest.raises(ValueError, match="num_classes"):
        CenterNet(0)


# the paper's initialisation of the heads ----------------------------------------------------------------------------

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
