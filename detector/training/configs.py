"""The config lookup: the packaged configs (the top-level ``configs/``, shipped as ``detector.configs``) by name."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_CONFIG = "synthetic.yaml"


def packaged_configs() -> list[Path]:
    """The config files shipped inside the package (``detector/configs/*.yaml`` and ``configs/paper/*.yaml``)."""
    folder = Path(str(resources.files("detector") / "configs"))
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

