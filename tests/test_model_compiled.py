"""``Detector(compile=True)``: the network through torch.compile with frozen weights, and the eager fallback."""
import numpy as np
import pytest
import torch
from torch import nn

from helpers.hardware import needs_cxx

from detector.model import CenterNet
from detector.model.compiled import CompiledNetwork
from detector.inference.detectors import Detector


class TinyNetwork(nn.Module):
    """A one-conv stand-in with CenterNet's output contract, so tracing and compiling stay quick."""

    stride = 4
    num_classes = 2

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=4, padding=1)

    def forward(self, images):
        heatmap, offset, size = self.conv(images).relu().split([2, 2, 2], dim=1)
        return {"heatmap": heatmap, "offset": offset, "size": size}


@needs_cxx
@pytest.mark.slow  # compiling a CenterNet takes 30-60 s on 2 busy cores
def test_compiled_detector_gives_the_eager_outputs_and_detections():
    torch.manual_seed(0)
    model = CenterNet(3, neck="lean")
    eager, compiled = Detector(model, ["a", "b", "c"], 64), Detector(model, ["a", "b", "c"], 64, compile=True)
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    meta = torch.tensor([[1.0, 1.0, 64.0, 64.0]])
    expected, _, _ = eager.infer(images, meta)
    got, _, _ = compiled.infer(images, meta)
    assert isinstance(compiled.model, CompiledNetwork) and compiled.model.compiled  # no silent fallback
    assert torch.allclose(got["scores"], expected["scores"], atol=1e-5)
    assert torch.allclose(got["boxes"], expected["boxes"], atol=1e-3)
    image = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    assert np.allclose(compiled.predict(image, conf=0.0).scores, eager.predict(image, conf=0.0).scores, atol=1e-5)


def test_without_a_cpp_compiler_the_network_runs_eagerly_after_one_line(capsys):
    import torch._inductor.config as inductor_config

    torch.manual_seed(0)
    model = TinyNetwork().eval()
    wrapper = CompiledNetwork(model)
    images = torch.randn(1, 3, 32, 32)
    torch._dynamo.reset()
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}), torch.no_grad():
        first = wrapper(images)
        second = wrapper(images)
    expected = model(images)
    assert not wrapper.compiled
    for out in (first, second):
        assert all(torch.equal(out[k], expected[k]) for k in expected)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "torch.compile is not available" in lines[0] and "C++ compiler" in lines[0]


def test_compiled_network_keeps_what_inference_reads():
    model = TinyNetwork()
    wrapper = CompiledNetwork(model)
    assert wrapper.stride == 4 and wrapper.num_classes == 2
    assert list(wrapper.state_dict()) == [f"network.{k}" for k in model.state_dict()]  # no second copy


def test_where_torch_compile_refuses_the_platform_the_wrapper_runs_eagerly(monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise RuntimeError("torch.compile is not supported on this Python")

    monkeypatch.setattr(torch, "compile", refuse)
    model = TinyNetwork().eval()
    wrapper = CompiledNetwork(model)
    images = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(wrapper(images)["heatmap"], model(images)["heatmap"])
    assert not wrapper.compiled
    assert "not supported on this Python" in capsys.readouterr().err
