"""BatchNorm folding for inference (``detector/model/fuse.py``): the outputs kept, grouped transposed convolutions,
and a BatchNorm without a convolution refused."""
import pytest
import torch
from torch.nn import functional as F

from helpers.networks import randomise_batchnorm

from detector.decode import decode, local_max


@pytest.mark.parametrize("neck", ["lean", "deconv"])
def test_batchnorm_folding_keeps_the_outputs(neck):
    from detector.model import CenterNet
    from detector.model.fuse import fold_batchnorm, prepare_for_inference

    model = randomise_batchnorm(CenterNet(num_classes=3, neck=neck))
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

    model = randomise_batchnorm(torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 6, 4, 2, 1, groups=2),
                                                     torch.nn.BatchNorm2d(6)))
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        assert torch.allclose(fold_batchnorm(model)(x), model(x), atol=1e-5)


def test_a_batchnorm_without_a_convolution_is_refused():
    from detector.model.fuse import fold_batchnorm

    with pytest.raises(ValueError, match="no convolution"):
        fold_batchnorm(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.BatchNorm2d(3)))
