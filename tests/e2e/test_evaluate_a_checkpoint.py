"""Evaluating a checkpoint: a COCO-format validation json alone is enough, a VOC training run and tools/eval.py print
the same table, no "epoch 0" and no -100.00 for a checkpoint's evaluation, and Lightning's and torch's noise kept
out of the commands' output."""
import re

import pytest

from helpers.checkpoints import make_checkpoint
from helpers.datasets import write_coco_split, write_voc_devkit

from detector.evaluation import CocoResult, format_table
from helpers.commands import run_tool

pytestmark = pytest.mark.slow
NOISE = ("💡", "Tip:", "Restoring states", "Loaded model weights", "LeafSpec", "TPU available")


@pytest.fixture(scope="module")
def coco_eval(tmp_path_factory):
    """tools/eval.py on a checkpoint (trained on the synthetic default) with a COCO-format validation json only."""
    tmp = tmp_path_factory.mktemp("coco")
    checkpoint = make_checkpoint(tmp / "model.ckpt")
    val_json = write_coco_split(tmp)
    return run_tool("eval.py", "--checkpoint", str(checkpoint), "--data.dataset", "coco", "--data.val_json",
                    str(val_json), "--data.val_images", str(tmp / "images"), "--data.num_workers", "0",
                    "--accelerator", "cpu")


@pytest.fixture(scope="module")
def voc_runs(tmp_path_factory):
    """(train, eval): one epoch on a tiny VOCdevkit with int years in the splits, then tools/eval.py on its best
    checkpoint."""
    tmp = tmp_path_factory.mktemp("voc")
    devkit = write_voc_devkit(tmp / "VOCdevkit")
    train = run_tool("train.py", "--data.dataset", "voc", "--data.root", str(devkit),
                     "--data.voc_train_splits", "[[2007,trainval]]", "--data.voc_val_splits", "[[2007,test]]",
                     "--data.input_size", "64", "--data.batch_size", "2", "--data.num_workers", "0",
                     "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
                     "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                     "--trainer.logger.init_args.save_dir", str(tmp / "runs"),
                     "--trainer.default_root_dir", str(tmp / "runs"))
    assert train.returncode == 0, train.stderr
    best = re.search(r"evaluate: +python tools/eval.py --checkpoint (\S+)", train.stdout).group(1)
    evaluation = run_tool("eval.py", "--checkpoint", best, "--data.num_workers", "0", "--accelerator", "cpu")
    assert evaluation.returncode == 0, evaluation.stderr
    return train, evaluation


def table(stdout: str) -> list[str]:
    """The lines of the printed table, from the metric names to the last VOC line (the title left out)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["AP", "AP50"])
    end = max((i for i, line in enumerate(lines) if line.startswith(("images:", "mAP50"))))
    return lines[start:end + 1]


def test_eval_with_a_coco_validation_json_alone_needs_no_training_json(coco_eval):
    assert coco_eval.returncode == 0, coco_eval.stderr
    assert "images: 2" in coco_eval.stdout


def test_a_voc_training_run_and_eval_print_the_same_table_with_the_voc07_map(voc_runs):
    train, evaluation = voc_runs
    assert any(line.startswith("mAP50_voc07:") for line in table(train.stdout))
    assert table(train.stdout) == table(evaluation.stdout)


def test_a_checkpoint_evaluation_names_no_epoch_and_prints_a_dash_for_nothing_to_score(voc_runs, coco_eval):
    for result in (*voc_runs, coco_eval):
        assert "-100.00" not in result.stdout and " nan" not in result.stdout  # not "-100" alone: tmp paths hold it
    for result in (voc_runs[1], coco_eval):
        assert not re.search(r"epoch \d", result.stdout + result.stderr)
    assert not re.search(r"epoch 1 validation", voc_runs[0].stderr)  # the best checkpoint is epoch 0's


def test_the_table_prints_a_dash_where_there_is_nothing_to_score():
    result = CocoResult({"AP": 0.5, "AP50": 0.75, "AP75": 0.25, "AP_small": -1.0, "AP_medium": 0.5,
                         "AP_large": -1.0}, {"cat": 0.5, "dog": float("nan")})
    lines = format_table(result).splitlines()
    assert lines[1].split() == ["50.00", "75.00", "25.00", "-", "50.00", "-"]
    assert lines[-1].split() == ["dog", "-"]


def test_lightning_tips_and_checkpoint_load_messages_are_quiet(voc_runs, coco_eval):
    train, evaluation = voc_runs
    for result in (train, evaluation, coco_eval):
        for needle in NOISE:
            assert needle not in result.stderr, (needle, result.stderr)
    assert "learning rate" in train.stderr and "epoch 0 validation" in train.stderr  # ours stay


@pytest.mark.parametrize("fmt", ["torchscript"])  # onnx: tests/test_inference_export.py, on the suite's one export
def test_export_prints_no_deprecation_warnings(fmt, tmp_path):
    checkpoint = make_checkpoint(tmp_path / "model.ckpt")
    result = run_tool("export.py", "--checkpoint", str(checkpoint), "--format", fmt, "--output",
                      str(tmp_path / f"model.{fmt}"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_eval_with_one_tile_per_photo_gives_the_plain_detections_and_names_its_passes(tmp_path, capsys):
    """64 x 64 photos, --tile 64: one tile per photo, letterboxed to the input size as the plain evaluation does;
    --test_scales 1 is one pass. The same detections; the table's title names the passes."""
    import json

    from detector.cli import run

    checkpoint = make_checkpoint(tmp_path / "model.ckpt")
    val_json = write_coco_split(tmp_path)
    data = ["--checkpoint", str(checkpoint), "--data.dataset", "coco", "--data.val_json", str(val_json),
            "--data.val_images", str(tmp_path / "images"), "--data.num_workers", "0", "--data.input_size", "128",
            "--accelerator", "cpu"]
    assert run("eval", [*data, "--results", str(tmp_path / "plain.json"), "--output", str(tmp_path / "a")]) == 0
    assert run("eval", [*data, "--results", str(tmp_path / "tiled.json"), "--output", str(tmp_path / "b"),
                        "--tile", "64", "--test_scales", "1"]) == 0
    assert "tiles of 64 px overlapping 0.2" in capsys.readouterr().out
    plain, tiled = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("plain", "tiled"))
    key = lambda d: (d["image_id"], -d["score"], d["category_id"], d["bbox"])  # noqa: E731
    assert len(plain) > 0 and sorted(plain, key=key) == sorted(tiled, key=key)
