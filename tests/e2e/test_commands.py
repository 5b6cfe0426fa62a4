"""The package's shape as a user meets it: a light ``from detector import Detector``, layers that do not import each
other the wrong way, the four commands (``python -m detector.cli``, the console script's function), their one-line
errors, and the configs shipped inside the package."""
import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

import pytest
import yaml

from helpers.commands import HEAVY, modules_after, python

ROOT = Path(__file__).resolve().parents[2]


# import weight and layers ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_importing_the_detector_loads_no_lightning_albumentations_or_pycocotools():
    loaded = modules_after("from detector import Detector")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert not any(name.startswith("detector.data") for name in loaded)


@pytest.mark.slow
def test_the_demo_imports_no_training_and_inference_no_data():
    loaded = modules_after("import detector.demo, detector.inference.export, detector.inference.detectors, "
                           "detector.visualize")
    assert not any(name.startswith("detector.training") for name in loaded)
    assert not loaded & set(HEAVY)
    assert not any(name.startswith("detector.data") for name in loaded)


def package_imports(path):
    """The ``detector.*`` modules a file imports itself (its own import statements, at any depth)."""
    tree = ast.parse(path.read_text())
    names = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return {name for name in names if name.startswith("detector")}


def test_drawing_takes_detections_not_a_model():
    # importing detector.visualize also runs detector/__init__.py (the detectors), so read its own imports
    assert package_imports(ROOT / "detector" / "visualize.py") == {
        "detector.detections", "detector.images", "detector.preprocess"}


def test_one_way_to_build_the_network_checkpoint_build_model():
    """Outside the network's own package, only ``checkpoint.build_model`` constructs a ``CenterNet``: the predictor,
    export, the training module and the evaluation run build theirs through it."""
    builders = []
    for path in sorted((ROOT / "detector").rglob("*.py")):
        if "model" in path.relative_to(ROOT / "detector").parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "CenterNet":
                builders.append(path.relative_to(ROOT).as_posix())
    assert builders == ["detector/checkpoint.py"]
    users = {p.relative_to(ROOT).as_posix() for p in (ROOT / "detector").rglob("*.py") if "build_model(" in p.read_text()}
    assert {"detector/training/module.py", "detector/training/evaluate.py"} <= users


@pytest.mark.slow
def test_training_does_not_import_the_demo_loop():
    loaded = modules_after("import detector.training.module, detector.training.run, detector.training.evaluate")
    assert not any(name == "detector.demo" or name.startswith("detector.demo.") for name in loaded)


def test_inference_imports_no_demo_training_data_or_commands():
    forbidden = ("detector.demo", "detector.training", "detector.data",
                 "detector.cli", "detector.check", "detector.evaluation", "detector.plots")
    for path in sorted((ROOT / "detector" / "inference").glob("*.py")):
        wrong = {name for name in package_imports(path) if name in forbidden or name.startswith(
            tuple(f"{module}." for module in forbidden))}
        assert not wrong, (path.name, wrong)


# commands ----------------------------------------------------------------------------------------------------------

def test_console_script_targets_import():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"centernet"}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(import_module(module), function))


def help_in_process(monkeypatch, capsys, argv0: str, command: str) -> str:
    """``main([command, "--help"])`` in this process with ``sys.argv[0]`` as the user's program: its stdout."""
    from detector import cli

    monkeypatch.setattr(sys, "argv", [argv0, command, "--help"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("command,expected,absent", [
    ("train", ["--model.neck", "--data.root", "default: 160", "default: 24", "--name", "--ckpt_path",
               "--model.optim.lr", "--data.augment.flip_prob", "float], default: (0.7, 1.3))"],
     ["--model.lr ", "--data.flip_prob"]),
    ("eval", ["--checkpoint", "--data.root", "--flip_test"],
     ["scale_range", "flip_prob", "colour_jitter", "min_visibility", "min_box_size", "--data.augment",
      "crop_scales", "lighting"]),
    ("demo", ["--source", "--show {true,false}", "--classes", "--precision {fp32,bf16,int8}"],
     ["<lambda>", "<function", "None}"]),
    ("export", ["--format", "--max_detections", "--precision {fp32,int8}"], ["<lambda>", "<function"]),
])
def test_each_command_has_help(command, expected, absent, monkeypatch, capsys):
    """In this process, as ``python -m detector.cli <command> --help`` runs it (the usage line names what was run)."""
    stdout = help_in_process(monkeypatch, capsys, str(ROOT / "detector" / "cli.py"), command)
    assert stdout.startswith(f"usage: python -m detector.cli {command} ")  # the command the user ran
    text = " ".join(stdout.split())  # help lines wrap anywhere
    for needle in expected:
        assert needle in text, needle
    for needle in absent:
        assert needle not in text, needle


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "eval", "demo", "export", "check"])
def test_the_usage_line_names_the_command_that_was_run(command, monkeypatch, capsys):
    """One subprocess per entry point (``tools/<command>.py --help``); the console script's usage in this process."""
    script = ROOT / "tools" / f"{command}.py"
    assert python(str(script), "--help").stdout.startswith(f"usage: {script} ")
    console = help_in_process(monkeypatch, capsys, "/usr/local/bin/centernet", command)
    assert console.startswith(f"usage: centernet {command} "), console[:200]


@pytest.mark.slow
def test_the_dispatcher_without_a_command_prints_its_usage():
    result = python("-m", "detector.cli")
    assert result.returncode == 2 and "centernet {train,eval,demo,export,check}" in result.stdout


def assert_one_error_line(result, *needles):
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), errors
    for needle in needles:
        assert needle in errors[0]


@pytest.mark.slow
def test_train_with_a_malformed_json_prints_one_error_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = python(str(ROOT / "tools" / "train.py"), "--data.train_json", str(bad), "--data.train_images",
                    str(tmp_path), "--data.val_json", str(bad), "--data.val_images", str(tmp_path),
                    "--seed_everything", "false", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"))
    assert_one_error_line(result, "bad.json", "malformed json")


@pytest.mark.slow
def test_eval_and_export_of_a_file_that_is_no_checkpoint_print_one_error_line(tmp_path):
    notes = tmp_path / "notes.ckpt"
    notes.write_text("hello")
    assert_one_error_line(python(str(ROOT / "tools" / "eval.py"), "--checkpoint", str(notes)), "notes.ckpt")
    assert_one_error_line(python("-m", "detector.cli", "export", "--checkpoint", str(notes), "--output",
                                 str(tmp_path / "m.onnx")), "not a PyTorch checkpoint")


@pytest.mark.slow
def test_demo_of_a_missing_source_prints_one_error_line(tmp_path):
    result = python(str(ROOT / "tools" / "demo.py"), "--checkpoint", "x.ckpt", "--source", str(tmp_path / "no.mp4"))
    assert_one_error_line(result, "no.mp4 does not exist")


@pytest.mark.parametrize("flag", [["--optimizer", "SGD"], ["--lr_scheduler=StepLR"],
                                  ["--optimizer.init_args.lr", "0.1"]])
def test_lightnings_optimizer_flags_are_refused_in_one_line_naming_model_optim(flag, capsys):
    """They would replace model.optim silently (its scaling, warmup and milestones lost)."""
    from detector import cli

    assert cli.run("train", ["--trainer.max_epochs", "1", *flag]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "--model.optim" in errors[0], errors
    assert flag[0].split("=")[0] in errors[0]


def eval_help(capsys, *args):
    from detector import cli

    with pytest.raises(SystemExit) as exit_:
        cli.run("eval", [*args, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    start = text.rindex("--data.dataset {")  # its help entry, after the usage lines
    return text[start:text.index("--data.root ROOT", start)]


def test_eval_help_shows_the_checkpoints_data_as_the_defaults(tmp_path, capsys):
    """Without a checkpoint no dataset default is claimed; with one, its training data are the defaults shown."""
    import torch

    from detector.checkpoint import ModelDescription

    assert "default:" not in eval_help(capsys)
    description = ModelDescription(num_classes=1, class_names=["a"], category_ids=[1], input_size=64, neck="lean",
                                   head_channels=8)
    path = tmp_path / "voc.ckpt"
    torch.save({"detector": description.to_dict(), "state_dict": {},
                "datamodule_hyper_parameters": {"dataset": "voc", "root": str(tmp_path)}}, path)
    assert "default: voc" in eval_help(capsys, "--checkpoint", str(path))


def test_unexpected_exceptions_keep_their_traceback(monkeypatch, capsys):
    from detector import cli

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "export", broken)
    with pytest.raises(KeyError):
        cli.run("export", [])


def test_the_python_names_the_readme_shows_exist():
    """Every ``from detector... import ...`` of the README (its code blocks and inline code) imports."""
    import re

    text = (ROOT / "README.md").read_text()
    statements = re.findall(r"from (detector[\w.]*) import ([\w, ]+)", text)
    assert ("detector.training.evaluate", "evaluate") in statements
    for module, names in statements:
        imported = import_module(module)
        for name in names.split(","):
            assert hasattr(imported, name.strip()), f"README: from {module} import {name.strip()}"


# configs -----------------------------------------------------------------------------------------------------------

def packaged():
    from detector.training.configs import packaged_configs

    return packaged_configs()


def relative(path):
    return path.relative_to(path.parent.parent if path.parent.name == "paper" else path.parent).as_posix()


PACKAGED = ["coco_resnet18.yaml", "synthetic.yaml", "voc_resnet18.yaml", "paper/coco_resnet18_dcn.yaml",
            "paper/coco_resnet18_deconv.yaml", "paper/voc_resnet18_dcn_384.yaml", "paper/voc_resnet18_dcn_512.yaml",
            "paper/voc_resnet18_deconv_384.yaml"]


def test_the_packaged_configs_are_the_top_level_configs_folder():
    names = [relative(path) for path in packaged()]
    assert names == PACKAGED
    assert not (ROOT / "detector" / "configs").exists(), "one config tree: configs/ (shipped as detector.configs)"
    for path in packaged():
        assert path.read_bytes() == (ROOT / "configs" / relative(path)).read_bytes()


def test_the_installed_package_finds_its_configs_with_importlib_resources():
    """The current install (editable, or a wheel in CI's place) ships configs/ as ``detector.configs``."""
    from importlib import resources

    folder = resources.files("detector.configs")  # ModuleNotFoundError: an install older than this tree (pip install -e .)
    for name in PACKAGED:
        file = folder
        for part in name.split("/"):
            file = file.joinpath(part)
        assert file.is_file(), name


def test_pyproject_lists_every_package_of_the_tree():
    """pyproject.toml names the packages (to map configs/ into the package): a new folder of detector/ with an
    __init__.py must be added there or the wheel would lack it."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    tree = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "detector").rglob("__init__.py")}
    assert set(packages) == tree | {"detector.configs"}


@pytest.mark.slow
def test_a_wheel_ships_the_configs_where_the_lookup_finds_them(tmp_path):
    import zipfile

    source = tmp_path / "source"  # a copy: the build writes build/ and *.egg-info beside the sources
    for name in ("detector", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"detector/configs/{name}" for name in PACKAGED} <= names
    installed = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(installed)  # a pure-Python wheel: its files as pip lays them out
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(installed))
    code = "from detector.training.configs import config_path; print(config_path('synthetic.yaml'))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                           cwd=tmp_path)
    assert found.returncode == 0, found.stderr[-3000:]
    assert Path(found.stdout.strip()) == installed / "detector" / "configs" / "synthetic.yaml"


@pytest.mark.parametrize("name", PACKAGED)
def test_every_config_parses_and_instantiates_the_model_and_data(name, tmp_path):
    import pytorch_lightning as pl
    from jsonargparse import ArgumentParser

    from detector.training.configs import config_path
    from detector.data import DetectionDataModule
    from detector.training.module import CenterNetModule

    parser = ArgumentParser()
    parser.add_argument("--seed_everything", type=int | bool | None, default=None)
    parser.add_argument("--report_checkpoint", type=str, default="best")
    parser.add_class_arguments(pl.Trainer, "trainer", skip={"callbacks", "logger", "plugins"})
    parser.add_argument("--trainer.logger", type=dict | bool | None, default=None)
    parser.add_class_arguments(CenterNetModule, "model")
    parser.add_class_arguments(DetectionDataModule, "data")
    config = parser.parse_path(config_path(name))  # every key known, every value of its type
    raw = yaml.safe_load(config_path(name).read_text())
    parsed = config.model.as_dict()
    assert {k: v for k, v in raw["model"].items() if k != "optim"}.items() <= parsed.items()
    assert raw["model"].get("optim", {}).items() <= parsed["optim"].items()  # a group: the keys it states
    model = CenterNetModule(**{**config.model.as_dict(), "weights": None, "num_classes": 3})
    data = DetectionDataModule(**{**config.data.as_dict(), "root": str(tmp_path)})  # reads no file yet
    assert model.hparams.neck == raw["model"]["neck"] and data.hparams.input_size == raw["data"]["input_size"]
    assert data.augment.kind == raw["data"].get("augment", {}).get("kind", "resize")
    assert model.optim.lr == raw["model"].get("optim", {}).get("lr", 5e-4)


def test_a_packaged_config_is_found_by_name(tmp_path, monkeypatch):
    from detector.training.configs import config_path

    monkeypatch.chdir(tmp_path)  # no configs/ folder here: as after a plain pip install
    assert config_path("voc_resnet18.yaml") == config_path("configs/voc_resnet18.yaml")
    assert config_path("voc_resnet18.yaml").parent.name == "configs"
    assert config_path("configs/paper/voc_resnet18_dcn_384.yaml").parent.name == "paper"
    assert config_path("voc_resnet18_dcn_384.yaml") == config_path("paper/voc_resnet18_dcn_384.yaml")


@pytest.mark.parametrize("best, reported, title", [
    (None, "best", "validation split, final weights (no best checkpoint was saved)"),
    ("runs/x/best.ckpt", "best", "validation split, best checkpoint"),
    ("runs/x/best.ckpt", "last", "validation split, final weights (no last checkpoint was saved)"),
])
def test_the_train_report_names_the_checkpoint_it_validated_and_never_a_missing_one(best, reported, title, capsys):
    from types import SimpleNamespace

    from detector.cli import _print_train_report

    titles = []
    result = SimpleNamespace(table=lambda name: titles.append(name) or name)
    trainer = SimpleNamespace(log_dir="runs/x", is_global_zero=True, checkpoint_callback=None)
    cli = SimpleNamespace(trainer=trainer, model=SimpleNamespace(last_result=result), reported=reported,
                          best_checkpoint=best, last_checkpoint=None)
    _print_train_report(cli)
    out = capsys.readouterr().out
    assert titles == [title]
    assert "best: None" not in out and "last: none" in out
