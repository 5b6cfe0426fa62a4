"""``torch.compile`` for inference: the network as one inductor graph per input shape, weights frozen.

``CompiledNetwork(model)`` wraps an eval-mode network (best one from ``prepare_for_inference``). Its first call at
each input shape compiles with inductor and ``freezing`` (parameters become constants: folded, and the
convolution weights prepacked for oneDNN once), later calls at that shape reuse the compiled code; shapes are
static (``dynamic=False``), so each letterbox size and batch size gets its own graph, up to torch's recompile limit
(8 by default; beyond it torch runs the network eagerly). Compiling takes tens of seconds on a small CPU the first
time (C++ kernels are built; they are cached on disk for later processes), so it pays for long runs (video, folders),
not for one image.

Where compiling fails (no C++ compiler, an unsupported platform) the wrapper prints one line and runs ``model``
eagerly from then on: same outputs, eager speed. Frozen weights are a snapshot: change the wrapped network's
weights and build a new wrapper.
"""
from __future__ import annotations

import sys

import torch
from torch import nn


def compile_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "this machine cannot compile", not "the input is wrong"."""
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InductorError

    return BackendCompilerFailed, InductorError, OSError


class CompiledNetwork(nn.Module):
    """``model`` (a ``CenterNet`` in eval mode) behind ``torch.compile``; ``forward`` as ``model.forward``.

    Keeps ``stride`` and ``num_classes`` so it drops in for ``model`` at inference; ``compiled`` is False once
    compiling has failed and the wrapper runs ``model`` eagerly. Call it under ``torch.inference_mode`` or
    ``torch.no_grad`` (``detector.inference.pipeline.detect`` does): freezing applies to inference only.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.network = model.eval()
        self.stride = getattr(model, "stride", None)
        self.num_classes = getattr(model, "num_classes", None)
        try:  # torch.compile itself refuses some Python versions and platforms
            self._forward = torch.compile(model.forward, dynamic=False, options={"freezing": True})
            self.compiled = True
        except RuntimeError as error:
            self._fall_back(error)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.compiled:
            try:
                return self._forward(images)
            except compile_errors() as error:
                self._fall_back(error)
        return self.network(images)

    def _fall_back(self, error: BaseException) -> None:
        self.compiled = False
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"note: torch.compile is not available here ({message[:160]}); running the network eagerly",
              file=sys.stderr)
