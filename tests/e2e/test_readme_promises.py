"""The command-line promises of the README, run as a user runs them (``tools/*.py`` in a subprocess): fine-tuning
with ``--model.init_from``, ``tools/eval.py --flip_test`` and ``--nms_iou``, the demo's ``--precision``, ``tools/export.py
--format torchscript`` and mixed-precision training on the CPU. Tiny synthetic runs at 64 px, random init."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.hardware import needs_cpu_bf16
from helpers.images import make_image

from detector import Detector
from torchvision.ops import box_iou  # an independent IoU
from detector.checkpoint import load_checkpoint
from detector.cli import run
from detector.data.synthetic import SYNTHETIC_CLASSES
from detector.training.module import CenterNetModule
from detector.preprocess import letterbox, unletterbox_boxes
from helpers.commands import run_in_process, run_tool

SIZE = 64
SOURCE_CLASSES = ["cat", "dog", "bird"]  # the synthetic set's five classes are others


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def train_args(tmp, *extra):
    return ["--data.dataset", "synthetic",
            "--data.root", str(tmp / "synthetic"), "--data.num_train", "4", "--data.num_val", "3",
            "--data.input_size", str(SIZE), "--data.batch_size", "2", "--data.num_workers", "0",
            "--trainer.logger.init_args.save_dir", str(tmp / "runs"), "--trainer.default_root_dir", str(tmp / "runs"),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1", *extra]


def make_source(path: Path) -> Path:
    """A 3-class checkpoint whose heads are far from any fresh initialisation: offset and size heads perturbed (the
    size bias 4 cells, so boxes of ~16 px overlap their neighbours), the class heatmap bias 0 (many peaks)."""
    torch.manual_seed(1)
    module = CenterNetModule(num_classes=3, class_names=SOURCE_CLASSES, input_size=SIZE)
    head = module.model.head
    with torch.no_grad():
        for branch in (head.heatmap, head.offset, head.size):
            for param in branch.parameters():
                param.add_(0.05 * torch.randn_like(param))
        torch.nn.init.zeros_(head.heatmap[-1].bias)
        head.size[-1].bias.fill_(4.0)
    torch.save({"detector": module.description().to_dict(), "state_dict": module.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("source") / "source.ckpt")


@pytest.fixture(scope="module")
def finetuned(source, tmp_path_factory):
    """``tools/train.py --model.init_from source`` on the synthetic set (5 other classes), one step at lr 0, so that
    every weight it keeps must come out exactly as it went in. Returns (tmp folder, last checkpoint)."""
    tmp = tmp_path_factory.mktemp("finetune")
    result = run_tool("train.py", *train_args(tmp, "--trainer.max_steps", "1", "--model.init_from", str(source),
                                              "--model.optim.lr", "0"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "class heatmap head is new" in result.stderr + result.stdout
    last = result.stdout.split("last: ")[1].split(")")[0]
    return tmp, Path(last)


# fine-tuning through the CLI ----------------------------------------------------------------------------------------

def test_finetune_keeps_the_offset_and_size_heads_and_starts_a_new_class_heatmap_head(source, finetuned):
    _, last = finetuned
    old, new = load_checkpoint(source)["state_dict"], load_checkpoint(last)["state_dict"]
    kept = [k for k in old if k.startswith(("model.head.offset.", "model.head.size.", "model.backbone.",
                                            "model.neck.")) and "running_" not in k and "num_batches" not in k]
    assert any(k.startswith("model.head.offset.") for k in kept) and any(k.startswith("model.head.size.") for k in kept)
    for key in kept:
        assert torch.equal(new[key], old[key]), key
    # the class head: 5 classes now, and every tensor of it is the fresh initialisation, not the source's
    assert new["model.head.heatmap.3.weight"].shape[0] == 5 and old["model.head.heatmap.3.weight"].shape[0] == 3
    for key in ("model.head.heatmap.0.weight", "model.head.heatmap.1.weight", "model.head.heatmap.1.bias"):
        assert new[key].shape == old[key].shape and not torch.allclose(new[key], old[key], atol=1e-3), key
    torch.testing.assert_close(new["model.head.heatmap.3.bias"], torch.full((5,), -2.1972246))  # the 0.1 prior
    assert load_checkpoint(last)["detector"]["class_names"] == list(SYNTHETIC_CLASSES)


# tools/eval.py --flip_test and --nms_iou ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def evaluated(finetuned):
    """The fine-tuned checkpoint's validation detections from ``centernet eval``: plain, ``--flip_test true`` and
    ``--nms_iou 0.3``. Returns ({name: results}, checkpoint, data root)."""
    tmp, last = finetuned
    runs = {}
    for name, extra in (("plain", []), ("flip", ["--flip_test", "true"]), ("nms", ["--nms_iou", "0.3"])):
        out = tmp / f"{name}.json"
        # in this process (tools/eval.py as a subprocess: the fixture of tests/test_plots.py)
        assert run("eval", ["--checkpoint", str(last), "--accelerator", "cpu", "--results", str(out), *extra]) == 0
        runs[name] = json.loads(out.read_text())
    return runs, last, tmp / "synthetic"


def val_images(root: Path) -> dict[int, Path]:
    (annotations,) = root.glob("*/annotations/instances_val.json")
    data = json.loads(annotations.read_text())
    return {image["id"]: annotations.parent.parent / "val" / image["file_name"] for image in data["images"]}


def by_image(results: list[dict]) -> dict[int, list[dict]]:
    grouped: dict[int, list[dict]] = {}
    for r in results:
        grouped.setdefault(r["image_id"], []).append(r)
    return grouped


def xyxy(result: dict) -> list[float]:
    x, y, w, h = result["bbox"]
    return [x, y, x + w, y + h]


def assert_results_match(results: list[dict], detections, names: dict[int, str]):
    """The json's detections of one image equal the Python API's (scores to the json's 5 decimals, boxes to 2)."""
    kept = detections.scores > 0
    assert len(results) == int(kept.sum()) > 50
    order = sorted(range(len(results)), key=lambda i: -results[i]["score"])
    np.testing.assert_allclose([results[i]["score"] for i in order], detections.scores[kept], atol=2e-5)
    for r in results:  # each json box is an API box of the same class and score (ties make the order ambiguous)
        same = (np.abs(detections.scores - r["score"]) <= 2e-5) & (detections.names == names[r["category_id"]])
        assert np.abs(detections.boxes[same] - np.array(xyxy(r))).max(1).min() <= 0.02, r


def category_names(root: Path) -> dict[int, str]:
    (annotations,) = root.glob("*/annotations/instances_val.json")
    return {c["id"]: c["name"] for c in json.loads(annotations.read_text())["categories"]}


def test_eval_flip_test_writes_the_mirror_averaged_detections_of_the_python_api(evaluated):
    runs, last, root = evaluated
    plain, flip = by_image(runs["plain"]), by_image(runs["flip"])
    images, names = val_images(root), category_names(root)
    assert set(plain) == set(flip) == set(images) and len(images) == 3
    detector = Detector.from_checkpoint(last)
    for image_id, path in images.items():
        assert_results_match(flip[image_id], detector.predict(path, conf=0.0, flip=True), names)
        assert_results_match(plain[image_id], detector.predict(path, conf=0.0), names)
        # and the flag changes the output: the mirror-averaged scores are not the plain ones
        scores = lambda rs: sorted(r["score"] for r in rs)
        assert len(scores(flip[image_id])) != len(scores(plain[image_id])) or not np.allclose(
            scores(flip[image_id]), scores(plain[image_id]), atol=1e-3)


def test_eval_nms_iou_leaves_no_two_same_class_boxes_above_the_iou(evaluated):
    runs, last, root = evaluated
    plain, nms = by_image(runs["plain"]), by_image(runs["nms"])
    names = category_names(root)
    detector = Detector.from_checkpoint(last, nms_iou=0.3)

    def worst_overlap(results):
        worst = 0.0
        for category in {r["category_id"] for r in results}:
            boxes = torch.tensor([xyxy(r) for r in results if r["category_id"] == category])
            iou = box_iou(boxes, boxes).nan_to_num(0).fill_diagonal_(0)  # NaN: two empty boxes
            worst = max(worst, float(iou.max()))
        return worst

    for image_id, results in nms.items():
        assert worst_overlap(plain[image_id]) > 0.5  # without it, same-class boxes overlap well above 0.3
        assert worst_overlap(results) <= 0.3 + 1e-3  # (+ the json's rounding to 0.01 px)
        # NMS only removes: every kept box is a plain one, and each class keeps its best box
        key = lambda r: (r["category_id"], r["score"], tuple(r["bbox"]))
        assert {key(r) for r in results} < {key(r) for r in plain[image_id]}
        for category in {r["category_id"] for r in plain[image_id]}:
            best = max(r["score"] for r in plain[image_id] if r["category_id"] == category)
            assert best in {r["score"] for r in results if r["category_id"] == category}
        kept = detector.predict(val_images(root)[image_id], conf=0.0)
        assert_results_match(results, kept, names)


# the demo's --precision ----------------------------------------------------------------------------------------------

def demo_detections(monkeypatch, args):
    """Run ``demo_main`` (what tools/demo.py runs) and record each frame's detector and detections."""
    import detector.inference.detectors
    from detector.cli import demo_main

    seen = []
    original = detector.inference.detectors.BaseDetector.predict_frame

    def recording(self, *a, **k):
        result = original(self, *a, **k)
        seen.append((self.precision, result.detections))
        return result

    monkeypatch.setattr(detector.inference.detectors.BaseDetector, "predict_frame", recording)
    demo_main(["--no-show", "--threads", "1", *args])
    return seen


@needs_cpu_bf16
def test_demo_precision_bf16_moves_the_scores_a_little_and_fp32_is_the_default(source, tmp_path, monkeypatch):
    import cv2
    image = make_image(90, 140)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    common = ["--checkpoint", str(source), "--source", str(tmp_path / "a.png"), "--conf", "0.3"]
    [(default_precision, default)] = demo_detections(monkeypatch, common)
    [(low_precision, low)] = demo_detections(monkeypatch, [*common, "--precision", "bf16"])
    assert (default_precision, low_precision) == ("fp32", "bf16")
    reference = Detector.from_checkpoint(source).predict(image, conf=0.3)  # fp32
    assert len(reference) > 5
    np.testing.assert_allclose(default.scores, reference.scores, atol=1e-6)
    np.testing.assert_allclose(default.boxes, reference.boxes, atol=1e-4)
    # bf16: the same objects (the 5 best, whose margins exceed bf16's error), scores off by up to ~1e-2, not 0
    top = 5
    assert np.abs(low.scores[:top] - reference.scores[:top]).max() > 1e-4
    np.testing.assert_allclose(low.scores[:top], reference.scores[:top], atol=0.03)
    np.testing.assert_array_equal(low.labels[:top], reference.labels[:top])
    np.testing.assert_allclose(low.boxes[:top], reference.boxes[:top], atol=1.5)


# tools/export.py --format torchscript --------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_export_torchscript_from_the_command_line_gives_the_detector_boxes(source, tmp_path):
    out = tmp_path / "model.pt"
    result = run_tool("export.py", "--checkpoint", str(source), "--format", "torchscript", "--output", str(out))
    assert result.returncode == 0, result.stderr
    extra = {"detector.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    info = json.loads(extra["detector.json"])
    assert info["class_names"] == SOURCE_CLASSES and info["input_size"] == SIZE
    image = make_image(90, 140)
    boxed, meta = letterbox(image, info["input_size"])
    with torch.no_grad():
        boxes, scores, labels = loaded(torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1)))[None])
    keep = scores[0] >= 0.3
    boxes = unletterbox_boxes(boxes[0][keep], torch.from_numpy(meta)).numpy()
    reference = Detector.from_checkpoint(source).predict(image, conf=0.3)
    assert len(reference) > 5
    np.testing.assert_allclose(scores[0][keep].numpy(), reference.scores, atol=1e-5)
    np.testing.assert_allclose(boxes, reference.boxes, atol=1e-3)
    np.testing.assert_array_equal(labels[0][keep].numpy(), reference.labels)


# mixed-precision training on the CPU --------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_training_on_the_cpu_gives_a_finite_loss(precision, tmp_path, capsys):
    result = run_in_process(capsys, "train.py", *train_args(tmp_path, "--trainer.max_steps", "2", "--trainer.precision",
                                                            precision, "--trainer.log_every_n_steps", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    last = Path(result.stdout.split("last: ")[1].split(")")[0])
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logged: dict[str, list[float]] = {}
    for events in sorted((tmp_path / "runs").rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            logged.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
    # a step whose loss is not finite is skipped without logging train/loss: two finite values, none skipped
    losses = logged["train/loss_step"]
    assert len(losses) == 2 and np.isfinite(losses).all() and np.isfinite(logged["val/loss"]).all(), logged
    assert "train/nonfinite_steps" not in logged and "non-finite loss" not in result.stderr
