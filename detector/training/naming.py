"""Run naming: the name of a run's folder (``<save_dir>/<name>/version_N``) from what it trains."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from detector.data.detect import json_data_name
from detector.data.voc import voc_layout
from detector.training.configs import packaged_configs

# Logger names that are nobody's choice: TensorBoardLogger's own default (a config without a name gets it).
LIBRARY_RUN_NAMES = ("lightning_logs",)


def packaged_run_names() -> dict[str, str]:
    """The logger name of each packaged config -> the dataset that config was written for."""
    names = {}
    for path in packaged_configs():
        config = yaml.safe_load(path.read_text()) or {}
        logger = (config.get("trainer") or {}).get("logger")
        name = ((logger or {}).get("init_args") or {}).get("name") if isinstance(logger, dict) else None
        if name:
            names[name] = (config.get("data") or {}).get("dataset", "synthetic")
    return names


def own_data_name(dataset: str, root: str | None, train_json: str | None) -> str | None:
    """The name of a user's own data: the training json's stem (COCO format), a single VOC folder's name, the
    dataset YAML's stem (YOLO); None for the synthetic set and the official COCO and VOCdevkit layouts."""
    if dataset == "yolo" and root:
        return Path(root).stem
    if train_json:
        return json_data_name(train_json)
    if dataset == "voc" and root and voc_layout(root) in ("folder", "labelimg"):
        return Path(root).resolve().name
    return None


def run_name(given: str | None, logger_name: str | None, data: dict[str, Any]) -> str:
    """The name of a run's folder (``<save_dir>/<name>/version_N``), from what it trains.

    ``given`` (``--name``) wins; then a logger name of the user's own (their config file, the command line, a run's
    saved ``config.yaml``). A packaged config's name (``synthetic``, ``coco_resnet18``, ...) is only a default: it
    names runs on the dataset that config was written for, in its official layout; on the user's own data the run is
    named after the data (:func:`own_data_name`), on another official dataset after the format (``coco``, ``voc``).
    """
    if given:
        return given
    defaults = packaged_run_names()
    if logger_name and logger_name not in defaults and logger_name not in LIBRARY_RUN_NAMES:
        return logger_name
    own = own_data_name(data["dataset"], data.get("root"), data.get("train_json"))
    if own:
        return own
    return logger_name if defaults.get(logger_name) == data["dataset"] else data["dataset"]

