"""A corpus of hostile or mistaken inputs, each run through the command a careless user would run it with.

Every case runs the command in this process (``detector.cli.run``, as ``tools/<command>.py`` does) and asserts what
the user sees: one ``error:`` line naming the culprit and exit status 1, or a counted repair and exit status 0; no
traceback (any exception other than the package's own fails the test); and that no input file changed (a hash of
every input file before and after). Tiny inputs: a 64 px network of random weights, 64x48 images.
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
import torch

from helpers.commands import run_in_process
from helpers.images import huge_png

from detector.training.module import CenterNetModule

CLASSES = ["a", "b"]
SIZE = 64  # the network's input size
W, H = 64, 48  # the images


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


# inputs ------------------------------------------------------------------------------------------------------------

def network_checkpoint() -> dict:
    torch.manual_seed(0)
    module = CenterNetModule(num_classes=2, class_names=CLASSES, category_ids=[1, 2], input_size=SIZE,
                             head_channels=8)
    return {"detector": module.description().to_dict(), "state_dict": module.state_dict()}


@pytest.fixture(scope="module")
def checkpoint_state() -> dict:
    return network_checkpoint()


def write_image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    cv2.imwrite(str(path), image)
    return path


def coco_set(root: Path, images: list[dict] | None = None, boxes: list[list[float]] | None = None) -> list[str]:
    """Two images ``0.png``, ``1.png`` in ``root/images`` and ``root/data.json`` (``images`` entries replace the
    json's); returns the ``--data.*`` options reading it as both splits."""
    folder = root / "images"
    for i in range(2):
        write_image(folder / f"{i}.png", seed=i)
    entries = images or [{"id": i + 1, "file_name": f"{i}.png", "width": W, "height": H} for i in range(2)]
    boxes = boxes or [[4, 4, 20, 16], [30, 10, 24, 30]]
    annotations = [{"id": i + 1, "image_id": entries[i % len(entries)]["id"], "category_id": 1 + i % 2, "bbox": box,
                    "area": 1.0, "iscrowd": 0} for i, box in enumerate(boxes)]
    data = {"images": entries, "annotations": annotations,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    (root / "data.json").write_text(json.dumps(data))
    return ["--data.dataset", "coco", "--data.train_json", str(root / "data.json"), "--data.train_images",
            str(folder), "--data.val_json", str(root / "data.json"), "--data.val_images", str(folder),
            "--data.num_workers", "0", "--data.input_size", str(SIZE), "--data.batch_size", "2"]


def save_checkpoint(path: Path, state: dict, description: dict | None = None) -> Path:
    torch.save({**state, "detector": {**state["detector"], **(description or {})}}, path)
    return path


class Payload:
    """An object a weights_only load refuses (a pickle that could run code)."""


# running a command -------------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    status: int
    out: str
    err: str
    warnings: list[str] = field(default_factory=list)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]

    @property
    def text(self) -> str:
        return "\n".join([self.out, self.err, *self.warnings])


def run_command(command: str, args: list[str], capsys) -> Outcome:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_in_process(capsys, command, *args)
    return Outcome(result.returncode, result.stdout, result.stderr, [str(w.message) for w in caught])


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(outcome: Outcome, *words: str) -> None:
    """One ``error:`` line (the only line of the message) naming ``words``, exit status 1."""
    assert outcome.status == 1, outcome.text
    assert len(outcome.error_lines) == 1, outcome.err
    assert "Traceback" not in outcome.err and "usage:" not in outcome.err, outcome.err
    for word in words:
        assert word in outcome.error_lines[0], (word, outcome.error_lines[0])


# the corpus ---------------------------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    command: str
    make: Callable[[Path, dict], list[str]]  # (input folder, checkpoint state) -> the command's arguments
    check: Callable[[Outcome, Path], None]  # (outcome, output folder)


def demo_args(checkpoint: Path, source: Path, out: Path | None, *extra: str) -> list[str]:
    output = ["--output", str(out / "demo")] if out is not None else []
    return ["--checkpoint", str(checkpoint), "--source", str(source), *output, "--show", "false", "--threads", "1",
            *extra]


def huge_image_in_a_demo_folder(inputs, state):
    write_image(inputs / "photos" / "ok.png")
    huge_png(inputs / "photos" / "huge.png")
    return demo_args(save_checkpoint(inputs / "model.ckpt", state), inputs / "photos", inputs.parent / "out")


def named_and_skipped(outcome, out):
    assert outcome.status == 0, outcome.text
    assert "huge.png" in outcome.err and "1 frames" in outcome.out and "1 unreadable skipped" in outcome.out


def check_args(inputs, data, *extra):
    return [*data, "--output", str(inputs.parent / "out" / "check"), "--num_images", "2", *extra]


def huge_image_in_a_training_set(inputs, state):
    data = coco_set(inputs)
    huge_png(inputs / "images" / "1.png")
    return check_args(inputs, data)


def replaced_and_named(outcome, out):
    assert outcome.status == 0, outcome.text
    assert "1.png: cannot be decoded" in outcome.out


def declared_size_differs(inputs, state):
    images = [{"id": i + 1, "file_name": f"{i}.png", "width": 2 * W, "height": 2 * H} for i in range(2)]
    return check_args(inputs, coco_set(inputs, images, boxes=[[60, 40, 50, 40], [8, 8, 20, 20]]))


def rescaled_and_named(outcome, out):
    assert outcome.status == 0, outcome.text
    assert "0.png: the image is 64x48 pixels but its annotation declares 128x96" in outcome.out
    assert len(list((out / "check" / "train_samples").iterdir())) == 2


def bad_image_entry(key, value):
    def make(inputs, state):
        images = [{"id": i + 1, "file_name": f"{i}.png", "width": W, "height": H} for i in range(2)]
        images[1][key] = value
        return check_args(inputs, coco_set(inputs, images))
    return make


def image_outside_the_folder(*extra):
    def make(inputs, state):
        write_image(inputs / "secret.png")
        images = [{"id": 1, "file_name": "0.png", "width": W, "height": H},
                  {"id": 2, "file_name": "../secret.png", "width": W, "height": H}]
        return check_args(inputs, coco_set(inputs, images), *extra)
    return make


def huge_box(inputs, state):
    return check_args(inputs, coco_set(inputs, boxes=[[4, 4, 20, 16], [0, 0, 1e30, 1e30], [3, 3, 10, 10]]))


def dropped_and_counted(outcome, out):
    assert outcome.status == 0, outcome.text
    assert "0 boxes clipped to their image, 1 boxes dropped" in outcome.out


def onnx_file(content: bytes):
    def make(inputs, state):
        (inputs / "model.onnx").write_bytes(content)
        return ["--backend", "onnx", "--onnx", str(inputs / "model.onnx"), "--source", str(write_image(
            inputs / "0.png")), "--show", "false"]
    return make


def train_args(inputs, *extra):
    return [*coco_set(inputs), "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
            "--trainer.logger.init_args.save_dir", str(inputs.parent / "out" / "runs"),
            "--trainer.default_root_dir", str(inputs.parent / "out" / "runs"), "--model.head_channels", "8",
            "--trainer.enable_progress_bar", "false", *extra]


def option(*extra):
    return lambda inputs, state: train_args(inputs, *extra)


def refused_before_any_folder(*words):
    def check(outcome, out):
        refused(outcome, *words)
        assert not (out / "runs").exists() or not list((out / "runs").rglob("version_*")), list(out.rglob("*"))
    return check


def described(**description):
    def make(inputs, state):
        path = save_checkpoint(inputs / "model.ckpt", state, description)
        return demo_args(path, write_image(inputs / "0.png"), None)
    return make


def foreign_network(inputs, state):
    weights = {f"model.{k}": v for k, v in torch.nn.Linear(3, 4).state_dict().items()}
    path = inputs / "model.ckpt"
    torch.save({"detector": state["detector"], "state_dict": weights}, path)
    return demo_args(path, write_image(inputs / "0.png"), None)


def evil_weights(inputs, state):
    torch.save({"conv1.weight": Payload()}, inputs / "evil.pth")
    return train_args(inputs, "--model.weights", str(inputs / "evil.pth"))


def threshold(value):
    def make(inputs, state):
        return demo_args(save_checkpoint(inputs / "model.ckpt", state), write_image(inputs / "0.png"), None,
                         "--conf", value)
    return make


def demo_with(*flags):
    """The demo on one image with ``flags``; ``{inputs}`` in a flag is the input folder."""
    def make(inputs, state):
        return demo_args(save_checkpoint(inputs / "model.ckpt", state), write_image(inputs / "0.png"), None,
                         *(flag.format(inputs=inputs) for flag in flags))
    return make


def gif_in_a_demo_folder(inputs, state):
    write_image(inputs / "photos" / "ok.png")
    (inputs / "photos" / "anim.gif").write_bytes(b"GIF89a" + bytes(20))
    return demo_args(save_checkpoint(inputs / "model.ckpt", state), inputs / "photos", inputs.parent / "out")


def gif_counted(outcome, out):
    assert outcome.status == 0, outcome.text
    assert "1 non-image file left out" in outcome.out and "anim.gif" in outcome.err


def unreadable_validation_image(inputs, state):
    data = coco_set(inputs)
    (inputs / "images" / "1.png").write_bytes(b"\x89PNG cut short")
    return ["--checkpoint", str(save_checkpoint(inputs / "model.ckpt", state)), *data, "--accelerator", "cpu",
            "--output", str(inputs.parent / "out" / "val")]


def left_out_of_the_metric(outcome, out):
    assert outcome.status == 0, outcome.text
    assert "images: 1" in outcome.out
    assert any("1.png" in w and "left out of the evaluation" in w for w in outcome.warnings), outcome.warnings


def eval_nms_iou(value):
    def make(inputs, state):
        return ["--checkpoint", str(save_checkpoint(inputs / "model.ckpt", state)), *coco_set(inputs),
                "--accelerator", "cpu", "--output", str(inputs.parent / "out" / "val"), "--nms_iou", value]
    return make


def demo_option(*option):
    def make(inputs, state):
        return demo_args(save_checkpoint(inputs / "model.ckpt", state), write_image(inputs / "0.png"), None, *option)
    return make


def eval_option(*option):
    def make(inputs, state):
        return ["--checkpoint", str(save_checkpoint(inputs / "model.ckpt", state)), *coco_set(inputs),
                "--accelerator", "cpu", "--output", str(inputs.parent / "out" / "val"), *option]
    return make


CASES = [
    Case("huge PNG header in a demo folder", "demo", huge_image_in_a_demo_folder, named_and_skipped),
    Case("huge PNG header in a training set", "check", huge_image_in_a_training_set, replaced_and_named),
    Case("declared image size disagrees with the file", "check", declared_size_differs, rescaled_and_named),
    Case("COCO image id not an integer", "check", bad_image_entry("id", "x7"),
         lambda o, out: refused(o, "data.json", "images[1]", "integers")),
    Case("COCO width NaN", "check", bad_image_entry("width", math.nan), lambda o, out: refused(o, "images[1]", "width")),
    Case("COCO height 0", "check", bad_image_entry("height", 0), lambda o, out: refused(o, "images[1]", "height 0")),
    Case("COCO file_name leaving the image folder", "check", image_outside_the_folder(),
         lambda o, out: refused(o, "secret.png", "outside the image folder", "--data.allow_outside_images")),
    Case("COCO file_name leaving the image folder, allowed", "check",
         image_outside_the_folder("--data.allow_outside_images", "true"), lambda o, out: _ok(o)),
    Case("a box coordinate of 1e30", "check", huge_box, dropped_and_counted),
    Case("empty .onnx", "demo", onnx_file(b""), lambda o, out: refused(o, "model.onnx", "not an ONNX model")),
    Case("corrupt .onnx", "demo", onnx_file(b"\x08\x07garbage" * 10),
         lambda o, out: refused(o, "model.onnx", "not an ONNX model")),
    Case("--data.input_size 100", "train", option("--data.input_size", "100"),
         refused_before_any_folder("--data.input_size 100", "multiple of 32")),
    Case("--data.batch_size 0", "train", option("--data.batch_size", "0"),
         refused_before_any_folder("--data.batch_size 0")),
    Case("--trainer.max_epochs -5", "train", option("--trainer.max_epochs", "-5"),
         refused_before_any_folder("--trainer.max_epochs -5")),
    Case("--early_stopping.patience -1", "train", option("--early_stopping.patience", "-1"),
         refused_before_any_folder("--early_stopping.patience -1")),
    Case("--data.augment.flip_prob 2", "train", option("--data.augment.flip_prob", "2"),
         refused_before_any_folder("--data.augment.flip_prob 2")),
    Case("--model.optim.lr -1", "train", option("--model.optim.lr", "-1"),
         refused_before_any_folder("--model.optim.lr -1")),
    Case("--data.num_workers -1", "train", option("--data.num_workers", "-1"),
         refused_before_any_folder("--data.num_workers -1")),
    Case("--model.weights evil.pth", "train", evil_weights,
         refused_before_any_folder("evil.pth", "would run code")),
    Case("checkpoint with fewer class names than classes", "demo", described(class_names=["a"]),
         lambda o, out: refused(o, "model.ckpt", "class_names")),
    Case("checkpoint with input_size 0", "demo", described(input_size=0),
         lambda o, out: refused(o, "model.ckpt", "input_size 0")),
    Case("checkpoint of a foreign network", "demo", foreign_network,
         lambda o, out: refused(o, "model.ckpt", "do not fit")),
    Case("--conf 2", "demo", threshold("2"), lambda o, out: refused(o, "--conf 2")),
    Case("--conf -1", "demo", threshold("-1"), lambda o, out: refused(o, "--conf -1")),
    Case("--save_mot without --track", "demo", demo_with("--save_mot", "tracks.txt"),
         lambda o, out: refused(o, "--save_mot tracks.txt", "--track")),
    Case("--track_low above --conf", "demo", demo_with("--track", "--track_low", "0.5"),
         lambda o, out: refused(o, "--track_low 0.5", "--conf 0.3")),
    Case("--track_low 2", "demo", demo_with("--track", "--track_low", "2"), lambda o, out: refused(o, "--track_low 2")),
    Case("--track_buffer 0", "demo", demo_with("--track", "--track_buffer", "0"),
         lambda o, out: refused(o, "--track_buffer 0")),
    Case("--save_mot a folder", "demo", demo_with("--track", "--save_mot", "{inputs}"),
         lambda o, out: refused(o, "--save_mot", "is a folder")),
    Case("a GIF in a demo folder", "demo", gif_in_a_demo_folder, gif_counted),
    Case("eval --nms_iou 2", "eval", eval_nms_iou("2"), lambda o, out: refused(o, "--nms_iou 2", "at most 1")),
    Case("an unreadable validation image", "eval", unreadable_validation_image, left_out_of_the_metric),
    Case("demo --tile 16", "demo", demo_option("--tile", "16"), lambda o, out: refused(o, "--tile 16", "32")),
    Case("demo --tile_overlap 1", "demo", demo_option("--tile", "64", "--tile_overlap", "1"),
         lambda o, out: refused(o, "--tile_overlap 1", "[0, 1)")),
    Case("demo --test_scales 0", "demo", demo_option("--test_scales", "1", "0"),
         lambda o, out: refused(o, "--test_scales 0", "above 0")),
    Case("eval --tile 16", "eval", eval_option("--tile", "16"), lambda o, out: refused(o, "--tile 16", "32")),
    Case("eval --test_scales -1", "eval", eval_option("--test_scales", "-1"),
         lambda o, out: refused(o, "--test_scales -1", "above 0")),
]


def _ok(outcome: Outcome) -> None:
    assert outcome.status == 0, outcome.text


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_hostile_input_ends_in_one_error_line_or_a_counted_repair_and_changes_no_input(case, tmp_path,
                                                                                       checkpoint_state, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    args = case.make(inputs, checkpoint_state)
    before = hashes(inputs)
    outcome = run_command(case.command, args, capsys)
    assert hashes(inputs) == before, "an input file changed"
    case.check(outcome, tmp_path / "out")
