"""A run's folder and resume: a run's folder is named from what it trains, ``--ckpt_path last`` resumes only a
run of that name and refuses a checkpoint of other classes before making a folder, a resume continues in the run's
folder (one TensorBoard run, the best checkpoint kept) with the schedule it started with, and the closing hint
resumes with the run's saved config, the user's overrides included."""
import contextlib
import io
import json
import logging
import re
import shlex
import subprocess
import warnings
from pathlib import Path

import pytest
import torch

from detector.cli import run
from detector.training.naming import run_name

ROOT = Path(__file__).resolve().parents[2]
LR = 2e-3  # synthetic.yaml's


@contextlib.contextmanager
def logging_to(stream):
    """Log records reach ``stream`` meanwhile, as they reach stderr in a process of its own: through a handler on
    the root logger (under pytest, Lightning's loggers propagate there) and through the stream handlers of loggers
    that do not propagate (made at import, they hold the stderr of that moment)."""
    root = logging.getLogger()
    loggers = [logger for logger in logging.Logger.manager.loggerDict.values()
               if isinstance(logger, logging.Logger) and not logger.propagate]
    handlers = [handler for logger in loggers for handler in logger.handlers
                if type(handler) is logging.StreamHandler]
    streams = [handler.stream for handler in handlers]
    extra = logging.StreamHandler(stream)
    root.addHandler(extra)
    for handler in handlers:
        handler.setStream(stream)
    try:
        yield
    finally:
        root.removeHandler(extra)
        for handler, old in zip(handlers, streams):
            handler.setStream(old)


def run_train(*args, status=0):
    """``centernet train args`` in this process (the module fixture cannot take ``capsys``: its output is caught by
    redirecting sys.stdout and sys.stderr, every warning shown each time); a ``CompletedProcess``. tools/train.py
    as a subprocess is tests/test_plots.py's fixture and tests/e2e/test_commands.py's."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), logging_to(err), \
            warnings.catch_warnings():
        warnings.simplefilter("always")
        code = run("train", list(args))
    result = subprocess.CompletedProcess(["train", *args], code, out.getvalue(), err.getvalue())
    assert result.returncode == status, result.stderr
    return result


def tiny(tmp: Path, *args) -> list[str]:
    """One epoch of 2 steps (8 images, batch 4) at 64 px, the learning rate logged at every step."""
    return ["--data.num_train", "8", "--data.num_val", "2", "--data.input_size", "64", "--data.batch_size", "4",
            "--data.num_workers", "0", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
            "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.logger.init_args.save_dir", str(tmp / "runs"),
            "--trainer.default_root_dir", str(tmp / "runs"), *args]


def write_circles(tmp: Path) -> list[str]:
    """A one-class COCO-format set of the user's own (the synthetic images, circles only): its --data options."""
    from detector.data.synthetic import synthetic_dataset

    folder = synthetic_dataset(tmp / "synthetic", 0, 8, 2)
    args = ["--data.dataset", "coco"]
    for split in ("train", "val"):
        coco = json.loads((folder / "annotations" / f"instances_{split}.json").read_text())
        circle = next(c["id"] for c in coco["categories"] if c["name"] == "circle")
        coco["categories"] = [c for c in coco["categories"] if c["id"] == circle]
        coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] == circle]
        path = tmp / f"circles_{split}.json" if split == "val" else tmp / "circles.json"
        path.write_text(json.dumps(coco))
        args += [f"--data.{split}_json", str(path), f"--data.{split}_images", str(folder / split)]
    return args


@pytest.fixture(scope="module")
def first_and_resumed(tmp_path_factory):
    """A run on one-class data of the user's own; then one epoch on the synthetic set with overrides and the
    closing hint's command, one epoch longer; then ``--ckpt_path last`` on the one-class data (a newer last.ckpt
    of the synthetic run exists), and on the synthetic data under the one-class run's name."""
    tmp = tmp_path_factory.mktemp("runs")
    circles = write_circles(tmp)
    own = run_train(*tiny(tmp, *circles))
    first = run_train(*tiny(tmp, "--data.dataset", "synthetic", "--data.root", str(tmp / "synthetic")))
    hint = re.search(r"^resume: +python tools/train.py (.*)$", first.stdout, flags=re.M).group(1)
    resumed = run_train(*shlex.split(hint), "--trainer.max_epochs", "2")
    own_resumed = run_train(*tiny(tmp, *circles, "--ckpt_path", "last"))
    refused = run_train(*tiny(tmp, "--data.dataset", "synthetic",
                              "--data.root", str(tmp / "synthetic"), "--name", "circles", "--ckpt_path", "last"),
                        status=1)
    return tmp, first, hint, resumed, own, own_resumed, refused


def run_folder(result) -> str:
    return re.search(r"^run folder: +(\S+)", result.stdout, flags=re.M).group(1)


@pytest.mark.slow
def test_the_resume_hint_points_at_the_run_config_and_keeps_the_overrides(first_and_resumed):
    tmp, first, hint, resumed, *_ = first_and_resumed
    assert "<same config>" not in hint and str(Path(run_folder(first)) / "config.yaml") in hint
    last = re.search(r"last: (\S+)\)", resumed.stdout).group(1)
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 1 and state["detector"]["input_size"] == 64  # the override of the first run


@pytest.mark.slow
def test_a_resume_continues_in_the_same_run_folder(first_and_resumed):
    tmp, first, hint, resumed, *_ = first_and_resumed
    assert run_folder(resumed) == run_folder(first)
    assert sorted(p.name for p in Path(run_folder(first)).parent.iterdir()) == ["version_0"]
    assert "dirpath has changed" not in resumed.stderr  # Lightning reloads the best score of the same folder


@pytest.mark.slow
def test_a_run_on_own_data_is_named_after_it_and_last_resumes_only_that_run(first_and_resumed):
    tmp, first, hint, resumed, own, own_resumed, refused = first_and_resumed
    assert Path(run_folder(first)) == tmp / "runs" / "synthetic" / "version_0"
    assert Path(run_folder(own)) == tmp / "runs" / "circles" / "version_0"  # the training json's stem
    # the synthetic run's last.ckpt is newer, but it is another experiment
    picked = re.search(r"^resuming from (\S+) ", own_resumed.stdout, flags=re.M).group(1)
    assert Path(picked) == tmp / "runs" / "circles" / "version_0" / "checkpoints" / "last.ckpt"
    assert Path(run_folder(own_resumed)) == tmp / "runs" / "circles" / "version_0"


@pytest.mark.slow
def test_last_of_other_classes_is_refused_in_one_line_before_a_run_folder_is_made(first_and_resumed):
    tmp, *_, refused = first_and_resumed
    lines = refused.stderr.strip().splitlines()
    assert "Traceback" not in refused.stderr and "size mismatch" not in refused.stderr
    assert re.fullmatch(r"error: cannot resume from \S+/circles/version_0/checkpoints/last\.ckpt: the checkpoint "
                        r"was trained for 1 classes \['circle'\] but the training data has 5 classes .*"
                        r"--model\.init_from.*", lines[-1]), lines[-1]
    assert sorted(p.name for p in (tmp / "runs" / "circles").iterdir()) == ["version_0"]


def logged_rates(run_dir: Path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tag = next(t for t in events.Tags()["scalars"] if t.startswith("lr-"))
    return {e.step: e.value for e in events.Scalars(tag)}


@pytest.mark.slow
def test_a_longer_resume_keeps_the_schedule_it_started_with_and_says_so(first_and_resumed):
    """The first run's cosine spans its 2 steps (warmup 1 step); resumed with max_epochs 2 (4 steps), the rate stays
    at the end of that schedule, 0, instead of climbing back up a cosine re-stretched over 4 steps."""
    tmp, first, hint, resumed, *_ = first_and_resumed
    rates = logged_rates(Path(run_folder(resumed)))
    assert sorted(rates) == [0, 1, 2, 3]
    assert rates[0] == pytest.approx(0.1 * LR) and rates[1] == pytest.approx(LR)
    assert rates[2] == 0 and rates[3] == 0, rates  # re-stretched: step 3 would be 0.25 * LR
    output = resumed.stdout + resumed.stderr
    assert re.search(r"keep their learning-rate schedule: cosine over 2 steps of 2 per epoch \(this command's "
                     r"settings would give cosine over 4 steps.*the learning rate is 0 from step 2 on.*"
                     r"--model\.init_from", output), output


def voc_folder(path: Path) -> Path:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (path / sub).mkdir(parents=True)
    return path


def test_the_run_name_comes_from_what_the_run_trains(tmp_path):
    synthetic = {"dataset": "synthetic"}
    assert run_name(None, "synthetic", synthetic) == "synthetic"
    # the packaged default's name on other data: the data's name (own data) or its format (official layouts)
    assert run_name(None, "synthetic", {"dataset": "coco", "train_json": "sets/circles.json"}) == "circles"
    assert run_name(None, "synthetic", {"dataset": "coco", "root": "/data/coco"}) == "coco"
    assert run_name(None, "synthetic", {"dataset": "yolo", "root": "sets/birds.yaml"}) == "birds"
    assert run_name(None, "lightning_logs", {"dataset": "voc", "root": str(voc_folder(tmp_path / "BCCD"))}) == "BCCD"
    (tmp_path / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main").mkdir(parents=True)
    devkit = {"dataset": "voc", "root": str(tmp_path / "VOCdevkit")}
    assert run_name(None, "synthetic", devkit) == "voc"
    # a packaged config's name on the data it was written for stays; on own data the data's name
    assert run_name(None, "voc_resnet18", devkit) == "voc_resnet18"
    assert run_name(None, "paper_coco_resnet18_dcn", {"dataset": "coco", "root": "/data/coco"}) == \
        "paper_coco_resnet18_dcn"
    assert run_name(None, "coco_resnet18", {"dataset": "coco", "train_json": "x/train.json"}) == "train"
    # the user's own choice: --name first, then a logger name of their own config (or a run's config.yaml)
    assert run_name("exp1", "coco_resnet18", {"dataset": "coco", "train_json": "x/train.json"}) == "exp1"
    assert run_name(None, "mine", {"dataset": "coco", "train_json": "x/train.json"}) == "mine"


def test_init_from_keeps_the_heatmap_head_only_from_a_checkpoint_of_the_same_classes(tmp_path):
    """A fine-tune is how to get a fresh schedule (the resume line says so): on the same classes it loses nothing."""
    from detector.training.module import CenterNetModule

    source = CenterNetModule(num_classes=2, class_names=["a", "b"], input_size=64)
    path = tmp_path / "source.ckpt"
    torch.save({"detector": source.description().to_dict(), "state_dict": source.state_dict()}, path)
    same = CenterNetModule(num_classes=2, class_names=["a", "b"], init_from=str(path)).model.state_dict()
    other = CenterNetModule(num_classes=2, class_names=["a", "c"], init_from=str(path)).model.state_dict()
    weights = source.model.state_dict()
    assert all(torch.equal(same[k], v) for k, v in weights.items())
    heatmap = [k for k in weights if k.startswith("head.heatmap.") and k.endswith("weight")]
    assert heatmap and not any(torch.equal(other[k], weights[k]) for k in heatmap)
    assert torch.equal(other["head.size.0.weight"], weights["head.size.0.weight"])


def test_a_checkpoint_of_another_network_is_refused_with_what_differs():
    from dataclasses import replace

    from detector.checkpoint import CheckpointError, ModelDescription, check_network

    trained = ModelDescription(2, ["a", "b"], [1, 2], 64, "lean", 64)
    state = {"detector": trained.to_dict()}
    check_network(state, replace(trained, input_size=96), "the training data")  # a new input size is fine
    with pytest.raises(CheckpointError, match=r"2 classes \['a', 'b'\] but the training data has 2 classes "
                                              r"\['a', 'c'\].*--model.init_from"):
        check_network(state, replace(trained, class_names=["a", "c"]), "the training data")
    with pytest.raises(CheckpointError, match=r"network has neck lean \(this run: dcn\), head_channels 64 \(this "
                                              r"run: 128\).*config.yaml.*--model.init_from"):
        check_network(state, replace(trained, neck="dcn", head_channels=128), "the training data")
