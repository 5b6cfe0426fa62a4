"""What a test needs of the machine, as skip marks whose reason names it: oneDNN's bfloat16 on this CPU, a C++
compiler for torch.compile."""
import os
import shutil

import pytest
import torch

from detector.inference.pipeline import bf16_supported

# torch's own check (mkldnn_bf16_device_check): on x86 oneDNN's bf16 kernels need AVX-512 BW, VL and DQ (or
# AVX-NE-CONVERT); on ARM the BF16 extension. AVX512-BF16 and AMX make them faster but are not what is checked.
needs_cpu_bf16 = pytest.mark.skipif(
    not bf16_supported("cpu"),
    reason="this CPU has no oneDNN bfloat16 (x86: AVX-512 BW+VL+DQ or AVX-NE-CONVERT; ARM: BF16)")


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile's inductor would call on this CPU (``$CXX``, else g++, c++, clang++), or None."""
    names = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    return next((shutil.which(name) for name in names if name and shutil.which(name)), None)


needs_cxx = pytest.mark.skipif(cxx_compiler() is None,
                               reason="torch.compile on the CPU needs a C++ compiler (g++ or clang++; none on PATH, "
                                      "$CXX unset)")
