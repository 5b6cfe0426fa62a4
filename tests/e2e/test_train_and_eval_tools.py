"""The trainer, the CLI tools and DDP, on tiny synthetic sets (CPU)."""
import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

from detector.checkpoint import CheckpointError, build_model, load_checkpoint
from detector.cli import eval_main, train_main
from helpers.commands import run_tool as tool

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def tiny_args(tmp, *extra):
    """CLI arguments for a small, fast synthetic run writing everything under tmp."""
    return ["--data.dataset", "synthetic",
            "--data.root", str(tmp / "synthetic"), "--data.num_train", "24", "--data.num_val", "5",
            "--data.input_size", "128", "--data.batch_size", "4", "--data.num_workers", "0",
            "--trainer.logger.init_args.save_dir", str(tmp / "runs"), "--trainer.default_root_dir", str(tmp / "runs"),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.accelerator", "cpu", *extra]


def run_tool(script, *args, env_extra=None, timeout=600):
    return tool(script, *args, timeout=timeout, omp_threads=None, env_extra=env_extra)  # the threads it inherits


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short training run shared by the tests below: (tmp folder, cli)."""
    tmp = tmp_path_factory.mktemp("train")
    cli = train_main(tiny_args(tmp, "--trainer.max_epochs", "2"))
    return tmp, cli


def test_fit_writes_best_and_last_checkpoints_that_load_safely(trained):
    tmp, cli = trained
    assert Path(cli.best_checkpoint).is_file() and Path(cli.last_checkpoint).is_file()
    for path in (cli.best_checkpoint, cli.last_checkpoint):
        checkpoint = load_checkpoint(path)  # weights_only=True
        info = checkpoint["detector"]
        assert info["num_classes"] == 5 and info["input_size"] == 128 and info["neck"] == "lean"
        assert info["class_names"] == cli.datamodule.class_names
        model = build_model(checkpoint)
        assert model(torch.zeros(1, 3, 64, 64))["heatmap"].shape == (1, 5, 16, 16)
    assert (Path(cli.trainer.log_dir) / "val_per_class_ap.txt").is_file()
    assert {"val/AP", "val/AP50", "val/AP75", "val/AP_small", "val/AP_medium", "val/AP_large"} <= set(
        cli.trainer.callback_metrics)


def plain(options) -> dict:
    """A dataclass's fields, sequences as lists (a checkpoint keeps a tuple as a list)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(options).items()}


def test_the_option_groups_are_plain_dicts_in_the_checkpoint_and_nested_in_the_run_config(trained):
    """``model.optim`` and ``data.augment`` (dataclasses) are stored as dicts, so the file loads weights_only and
    rebuilds the modules; the run's config.yaml nests them as the packaged configs do (synthetic.yaml's values)."""
    from detector.data import DetectionDataModule
    from detector.training.module import CenterNetModule

    tmp, cli = trained
    checkpoint = load_checkpoint(cli.last_checkpoint)  # weights_only=True
    optim, augment = checkpoint["hyper_parameters"]["optim"], checkpoint["datamodule_hyper_parameters"]["augment"]
    assert optim["lr"] == 2e-3 and optim["schedule"] == "cosine" and optim["warmup_epochs"] == 0.5
    assert list(augment["scale_range"]) == [0.7, 1.3] and augment["min_visibility"] is None  # every box kept
    model_args, data_args = ({k: v for k, v in checkpoint[key].items() if not k.startswith("_")}  # no _instantiator
                             for key in ("hyper_parameters", "datamodule_hyper_parameters"))
    assert CenterNetModule(**{**model_args, "weights": None}).optim == cli.model.optim
    assert plain(DetectionDataModule(**data_args).augment) == plain(cli.datamodule.augment)
    config = yaml.safe_load((Path(cli.trainer.log_dir) / "config.yaml").read_text())
    assert config["model"]["optim"]["lr"] == 2e-3 and config["data"]["augment"]["scale_range"] == [0.7, 1.3]


def test_resume_continues_step_epoch_and_optimiser(trained, tmp_path):
    tmp, cli = trained
    last = cli.last_checkpoint
    before = torch.load(last, weights_only=True)
    resumed = train_main(tiny_args(tmp, "--trainer.max_epochs", "3", "--ckpt_path", last))
    assert before["epoch"] == 1 and resumed.trainer.current_epoch == 3
    assert resumed.trainer.global_step == before["global_step"] + 6  # 24 images / batch 4 = one more epoch
    state = resumed.trainer.optimizers[0].state_dict()["state"]
    old_state = before["optimizer_states"][0]["state"]
    assert float(state[0]["step"]) == float(old_state[0]["step"]) + 6


def test_checkpoint_for_other_classes_and_bad_files_are_refused(trained, tmp_path):
    tmp, cli = trained
    best = cli.best_checkpoint
    not_ckpt = tmp_path / "notes.ckpt"
    not_ckpt.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(not_ckpt)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"detector": Evil(), "state_dict": {}}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(evil)
    other = torch.load(best, weights_only=True)
    other["detector"]["class_names"] = ["a", "b"]
    other["detector"]["num_classes"] = 2
    other["detector"]["category_ids"] = [1, 2]  # a consistent description (one id per class)
    other_path = tmp_path / "other.ckpt"
    torch.save(other, other_path)
    with pytest.raises(CheckpointError, match="2 classes.*has 5 classes.*init_from"):
        eval_main(["--checkpoint", str(other_path), "--data.root", str(tmp / "synthetic")])


def test_eval_writes_results_with_dataset_category_ids(trained, tmp_path):
    tmp, cli = trained
    out = tmp_path / "dets.json"
    metrics = eval_main(["--checkpoint", cli.best_checkpoint, "--results", str(out),
                         "--accelerator", "cpu"])
    results = json.loads(out.read_text())
    assert results and {r["category_id"] for r in results} <= set(cli.datamodule.category_ids)
    assert metrics["val/images"] == 5


def test_init_from_keeps_backbone_and_neck(trained):
    from detector.training.module import CenterNetModule

    tmp, cli = trained
    source = cli.model.model
    module = CenterNetModule(num_classes=2, init_from=cli.best_checkpoint)
    assert torch.equal(module.model.backbone.layer3[0].conv1.weight, source.backbone.layer3[0].conv1.weight)
    assert torch.equal(module.model.neck.smooth[2][0].weight, source.neck.smooth[2][0].weight)
    assert module.model.head.heatmap[-1].weight.shape[0] == 2


def test_tools_help(monkeypatch, capsys):
    """In this process (``tools/<command>.py --help`` runs in a subprocess in ``test_commands.py``)."""
    for command, main in (("train", train_main), ("eval", eval_main)):
        monkeypatch.setattr(sys, "argv", [str(ROOT / "tools" / f"{command}.py"), "--help"])
        with pytest.raises(SystemExit) as exit_:
            main(["--help"])
        assert exit_.value.code in (0, None)
        stdout = capsys.readouterr().out
        assert "--data.dataset" in stdout and "--data.root" in stdout
        assert command == "eval" or "--model.neck" in stdout


def test_cli_two_step_fit_then_eval(tmp_path):
    result = run_tool("train.py", *tiny_args(tmp_path, "--trainer.max_steps", "2", "--trainer.max_epochs", "1",
                                              "--trainer.limit_val_batches", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "evaluate:    python tools/eval.py --checkpoint" in result.stdout
    checkpoint = result.stdout.split("evaluate:    python tools/eval.py --checkpoint ")[1].split()[0]
    evaluated = run_tool("eval.py", "--checkpoint", checkpoint, "--accelerator", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "AP50" in evaluated.stdout and "per-class AP" in evaluated.stdout


def test_unknown_config_key_is_rejected(tmp_path):
    result = run_tool("train.py", *tiny_args(tmp_path, "--model.no_such_option", "3"))
    assert result.returncode != 0 and "no_such_option" in result.stderr


def test_ddp_two_processes_match_one(trained, tmp_path):
    """Validation on 5 images (odd: the sampler pads rank 1) gives the same metric on 1 and 2 gloo processes."""
    tmp, cli = trained
    best = cli.best_checkpoint
    runs = {}
    for devices in ("1", "2"):
        out = tmp_path / f"dets{devices}.json"
        result = run_tool("eval.py", "--checkpoint", best, "--accelerator", "cpu", "--devices", devices,
                          "--strategy", "ddp" if devices == "2" else "auto", "--results", str(out),
                          env_extra={"OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-3000:]
        runs[devices] = (result.stdout, json.loads(out.read_text()))
    (out1, dets1), (out2, dets2) = runs["1"], runs["2"]
    assert "images: 5" in out1 and "images: 5" in out2
    table = lambda text: text.split("per-class AP")[0].splitlines()[-1]
    assert table(out1) == table(out2)
    # the detections themselves (the AP of this barely trained model is ~0 on both sides, so equal tables prove
    # little): each image once, the same boxes, classes and scores
    assert len(dets1) == len(dets2) and {r["image_id"] for r in dets1} == {r["image_id"] for r in dets2}
    key = lambda r: (r["image_id"], r["category_id"], -r["score"], r["bbox"])
    for one, two in zip(sorted(dets1, key=key), sorted(dets2, key=key)):
        assert (one["image_id"], one["category_id"]) == (two["image_id"], two["category_id"])
        assert abs(one["score"] - two["score"]) <= 1e-4 and max(
            abs(a - b) for a, b in zip(one["bbox"], two["bbox"])) <= 0.05, (one, two)


def test_bf16_autocast_trains_without_nan(tmp_path):
    cli = train_main(tiny_args(tmp_path, "--trainer.max_steps", "3", "--trainer.max_epochs", "1",
                               "--trainer.precision", "bf16-mixed", "--trainer.limit_val_batches", "1",
                               "--trainer.log_every_n_steps", "1"))
    assert cli.trainer.global_step == 3
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])  # the final validation, also under bf16
    for param in cli.model.parameters():
        assert torch.isfinite(param).all()
