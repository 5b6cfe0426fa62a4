"""The cache of exported networks: one ONNX file per checkpoint content, input size, runtime and versions.

Running a checkpoint's network in ONNX Runtime or OpenVINO first exports it to ONNX (seconds for the ResNet-18
networks). ``Detector.from_checkpoint`` keeps that file in ``~/.cache/detector/exported/`` (the environment variable
``DETECTOR_CACHE`` names another folder), named by a hash of what makes it (:func:`entry_key`): the checkpoint
file's bytes, the input size, the runtime's name and version, the exporter (torch's version and the source of
``detector/inference/runtime.py``, which traces) and this package's version; so the second build of the same
checkpoint loads the file instead of exporting again, and any change to one of them exports a new one.

An entry is written to a temporary name in the folder and renamed when complete (a crash leaves no half file under
its key). An entry the runtime cannot load (cut, corrupt) is exported again with a one-line note on stderr; a folder
that cannot be written is skipped with a note (the network is then exported to a temporary folder, as without it).
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

import torch

CACHE_ENV = "DETECTOR_CACHE"
DEFAULT_FOLDER = Path("~/.cache/detector/exported")
Loaded = TypeVar("Loaded")


def cache_folder() -> Path:
    """``$DETECTOR_CACHE`` if set, else ``~/.cache/detector/exported``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_FOLDER).expanduser()


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def exporter_version() -> str:
    """torch's version and a hash of the tracer's source (``detector/inference/runtime.py``): a change to either
    can change the exported graph."""
    from detector.inference import runtime

    source = hashlib.sha256(Path(runtime.__file__).read_bytes()).hexdigest()[:16]
    return f"torch {torch.__version__}, runtime.py {source}"


def package_version() -> str:
    """This package's installed version (``"unknown"`` when run from a checkout that is not installed)."""
    from importlib import metadata

    try:
        return metadata.version("centernet-detector")
    except metadata.PackageNotFoundError:
        return "unknown"


def entry_key(weights: str, input_size: int, runtime: str, runtime_version: str) -> str:
    """The name of an entry: a hash of the checkpoint's digest ``weights``, the input size, the runtime's name and
    version, the exporter's version and the package's."""
    parts = [weights, str(input_size), runtime, runtime_version, exporter_version(), package_version()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def cached_export(key: str, export: Callable[[Path], object], load: Callable[[Path], Loaded]) -> Loaded:
    """``load(file)`` of the entry ``key``, after ``export(file)`` has written it if it is missing or cannot be
    loaded (a note says so); written to a temporary name and renamed (see the module docstring)."""
    folder = cache_folder()
    path = folder / f"{key}.onnx"
    if path.is_file():
        try:
            return load(path)
        except MemoryError:
            raise
        except Exception as error:  # noqa: BLE001  (a cut or foreign file: export it again)
            reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
            print(f"note: cached exported network {path} cannot be loaded ({reason[:160]}); exporting it again",
                  file=sys.stderr)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".onnx.tmp")
        os.close(handle)
    except OSError as error:
        print(f"note: the exported-network cache {folder} cannot be written ({error.strerror or error}); exporting "
              f"without it (set {CACHE_ENV} to a writable folder)", file=sys.stderr)
        with tempfile.TemporaryDirectory() as scratch:
            file = Path(scratch) / "network.onnx"
            export(file)
            return load(file)
    try:
        export(Path(temporary))
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return load(path)
