"""Issue 13, runs and resume: a resume continues in the run's folder (one TensorBoard run, the best checkpoint
kept), and the closing hint resumes with the run's saved config, the user's overrides included."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run_train(*args):
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), *args], capture_output=True,
                            text=True, env=env, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def first_and_resumed(tmp_path_factory):
    """One epoch with overrides, then the closing hint's command, one epoch longer."""
    tmp = tmp_path_factory.mktemp("runs")
    first = run_train("--data.root", str(tmp / "synthetic"), "--data.num_train", "8", "--data.num_val", "2",
                      "--data.input_size", "64", "--data.batch_size", "4", "--data.num_workers", "0",
                      "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
                      "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                      "--trainer.logger.init_args.save_dir", str(tmp / "runs"),
                      "--trainer.default_root_dir", str(tmp / "runs"))
    hint = re.search(r"^resume: +python tools/train.py (.*)$", first.stdout, flags=re.M).group(1)
    resumed = run_train(*shlex.split(hint), "--trainer.max_epochs", "2")
    return tmp, first, hint, resumed


def run_folder(result) -> str:
    return re.search(r"^run folder: +(\S+)", result.stdout, flags=re.M).group(1)


def test_the_resume_hint_points_at_the_run_config_and_keeps_the_overrides(first_and_resumed):
    tmp, first, hint, resumed = first_and_resumed
    assert "<same config>" not in hint and str(Path(run_folder(first)) / "config.yaml") in hint
    last = re.search(r"last: (\S+)\)", resumed.stdout).group(1)
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 1 and state["detector"]["input_size"] == 64  # the override of the first run


def test_a_resume_continues_in_the_same_run_folder(first_and_resumed):
    tmp, first, hint, resumed = first_and_resumed
    assert run_folder(resumed) == run_folder(first)
    assert sorted(p.name for p in Path(run_folder(first)).parent.iterdir()) == ["version_0"]
    assert "dirpath has changed" not in resumed.stderr  # Lightning reloads the best score of the same folder
