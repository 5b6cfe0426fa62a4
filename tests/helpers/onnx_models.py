"""ONNX files for the tests: the suite's one real export of the standard checkpoint (through tools/export.py; torch's
exporter takes seconds per file, so the files that need an exported model share it), and tiny hand-made graphs that
carry our metadata, for what reads a file rather than what runs it."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from helpers.checkpoints import make_checkpoint
from helpers.commands import run_tool


@dataclass(frozen=True)
class Exported:
    checkpoint: Path  # make_checkpoint's, seed 0
    onnx: Path  # written by tools/export.py --format onnx
    result: subprocess.CompletedProcess  # the export's run (its stdout and stderr)


def export_with_the_tool(folder: Path) -> Exported:
    """The standard checkpoint (``make_checkpoint``) in ``folder``, exported to ONNX by ``tools/export.py``."""
    checkpoint = make_checkpoint(folder / "model.ckpt")
    result = run_tool("export.py", "--checkpoint", str(checkpoint), "--format", "onnx", "--output",
                      str(folder / "model.onnx"))
    assert result.returncode == 0, result.stderr
    return Exported(checkpoint, folder / "model.onnx", result)


def identity_onnx(path: Path, size: int, description: str | None = None) -> Path:
    """A one-node graph (``images`` uint8 ``[1, 3, size, size]`` -> ``boxes``), with our metadata entry
    ``description`` when given: a file as the exports before any-size ONNX were (one fixed size), in milliseconds."""
    import onnx
    from onnx import TensorProto, helper

    shape = [1, 3, size, size]
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["boxes"])], "identity",
                              [helper.make_tensor_value_info("images", TensorProto.UINT8, shape)],
                              [helper.make_tensor_value_info("boxes", TensorProto.UINT8, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if description is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "detector", description
    onnx.save(model, str(path))
    return Path(path)
