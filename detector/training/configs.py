"""The config lookup: a config file by path, or a packaged config (the top-level ``configs/``) by name."""
from __future__ import annotations

import importlib
from pathlib import Path

DEFAULT_CONFIG = "synthetic.yaml"
# The checkout holding this package: <checkout>/detector/training/configs.py.
CHECKOUT = Path(__file__).resolve().parents[2]


def config_folder() -> Path:
    """The folder of the packaged configs.

    pyproject.toml ships the top-level ``configs/`` as the package ``detector.configs``: in a wheel it is
    ``detector/configs/``, in an editable install the checkout's ``configs/`` (both found by importing it). A
    checkout on ``sys.path`` (``PYTHONPATH``) reads its own ``configs/`` first, whatever else is installed.
    """
    own = CHECKOUT / "configs"
    if (CHECKOUT / "pyproject.toml").is_file() and (own / DEFAULT_CONFIG).is_file():
        return own
    package = importlib.import_module("detector.configs")
    return Path(next(iter(package.__path__)))


def packaged_configs() -> list[Path]:
    """The packaged config files (``configs/*.yaml`` and ``configs/paper/*.yaml``)."""
    folder = config_folder()
    return sorted(folder.glob("*.yaml")) + sorted(folder.glob("paper/*.yaml"))


def config_path(name: str | Path) -> Path:
    """A config file: ``name`` itself if it exists, else the packaged config of that file name, so that
    ``--config coco_resnet18.yaml`` works after a plain ``pip install``; otherwise ``name`` (the parser says it is
    missing)."""
    path = Path(name)
    if path.is_file():
        return path
    by_path = [p for p in packaged_configs() if p.as_posix().endswith("/" + path.as_posix().removeprefix("configs/"))]
    return next(iter(by_path), next((p for p in packaged_configs() if p.name == path.name), path))
