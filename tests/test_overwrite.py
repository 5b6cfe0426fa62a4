"""The overwrite rule of every command that writes (``detector/overwrite.py``): no output replaces an input, a
checkpoint, an annotation or label file; an existing output only with ``--exist_ok true``; nothing is truncated before
every check passed, and files are written through a temporary file renamed over them. Each case runs the command in
process and checks one ``error:`` line, the exit status, and that no file changed (hashed before and after)."""
import hashlib
import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from helpers.checkpoints import make_checkpoint
from helpers.datasets import CHECK_CONTENT as CONTENT, write_coco_split, write_voc_folder
from helpers.images import make_image, write_video

from detector.cli import run
from detector.demo.outputs import open_sink, output_guard
from detector.errors import DemoError, OptionError
from detector.inference.sources import open_source
from detector.overwrite import Outputs, numbered, protected_kind, replacing, write_text
from detector.training.run import refuse_overwriting_run


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt")


def digest(*paths: Path) -> dict[Path, str]:
    """Every file under ``paths`` (files or folders) -> its sha256."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def refused(capsys, code: int, *needles: str) -> str:
    """The command exited 1 with exactly one ``error:`` line holding every needle; that line."""
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1, errors
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def image_folder(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"img{i}.png"), make_image(64, 80, seed=i))
    return folder


# the rule itself ----------------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_protected_kinds_are_checkpoints_annotations_and_labels_but_not_our_outputs(tmp_path, checkpoint):
    (tmp_path / "labels").mkdir()
    files = {
        "a.ckpt": b"x", "w.pth": b"x", "gt.json": b' {"images": []}', "dets.json": b"[]", "a.xml": b"<annotation/>",
        "labels/l.txt": b"0 0.5 0.5 0.2 0.2\n", "preds.txt": b"0 0.5 0.5 0.2 0.2 0.91\n", "empty.txt": b"",
        "notes.md": b"hello", "model.bin": b"x",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"state_dict": {}}, tmp_path / "weights.pt")
    torch.save({"state_dict": {}}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)  # no zip archive
    traced = torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    torch.jit.save(traced, str(tmp_path / "export.pt"))
    kinds = {name: protected_kind(tmp_path / name)
             for name in [*files, "weights.pt", "legacy.pt", "export.pt", "missing.ckpt"]}
    assert kinds == {"a.ckpt": "a checkpoint", "w.pth": "a checkpoint", "gt.json": "an annotation file",
                     "dets.json": None, "a.xml": "an annotation file", "labels/l.txt": "a label file",
                     "preds.txt": None, "empty.txt": None, "notes.md": None, "model.bin": "a checkpoint",
                     "weights.pt": "a checkpoint", "legacy.pt": "a checkpoint", "export.pt": None,
                     "missing.ckpt": None}


def test_label_files_by_layout_empty_ones_too(tmp_path):
    dataset = tmp_path / "dataset"
    (dataset / "images" / "train").mkdir(parents=True)
    (dataset / "labels" / "train").mkdir(parents=True)
    (dataset / "labels" / "train" / "negative.txt").write_text("")
    beside = tmp_path / "darknet"
    beside.mkdir()
    (beside / "photo.jpg").write_bytes(b"")
    (beside / "photo.txt").write_text("")
    studio = tmp_path / "studio"
    studio.mkdir()
    (studio / "classes.txt").write_text("cat\n")
    (studio / "a.txt").write_text("")
    for path in (dataset / "labels" / "train" / "negative.txt", beside / "photo.txt", studio / "a.txt"):
        assert protected_kind(path) == "a label file", path
    (tmp_path / "preds").mkdir()
    (tmp_path / "preds" / "a.txt").write_text("")
    assert protected_kind(tmp_path / "preds" / "a.txt") is None


def test_a_labels_folder_protects_only_where_the_same_path_with_images_is_a_folder(tmp_path):
    label = tmp_path / "out" / "labels" / "val" / "a.txt"
    label.parent.mkdir(parents=True)
    label.write_text("")
    (tmp_path / "out" / "images").mkdir()  # images/ but no images/val/: not this file's dataset
    assert protected_kind(label) is None
    (tmp_path / "out" / "images" / "val").mkdir()
    assert protected_kind(label) == "a label file"


def test_a_label_file_is_five_numbers_on_each_of_its_first_twenty_lines(tmp_path):
    line = "0 0.5 0.5 0.2 0.2\n"
    files = {"long.txt": line * 20 + "a note after the twentieth line\n", "mixed.txt": line + line[:-1] + " 0.91\n",
             "words.txt": "one two three four five\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert {name: protected_kind(tmp_path / name) for name in files} == {"long.txt": "a label file",
                                                                         "mixed.txt": None, "words.txt": None}


def test_an_unreadable_txt_file_is_no_label_file_by_its_lines(tmp_path, monkeypatch):
    text = tmp_path / "notes.txt"
    text.write_text("0 0.5 0.5 0.2 0.2\n")
    assert protected_kind(text) == "a label file"
    opened = Path.open

    def refuse(path, *args, **kwargs):  # EACCES as a user meets it (the suite may run as root, who reads anything)
        if path == text:
            raise PermissionError(13, "Permission denied", str(path))
        return opened(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    assert protected_kind(text) is None


def test_a_folder_is_no_output_file_even_with_exist_ok(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(OptionError, match="out is a folder; give a file name"):
        Outputs(exist_ok=True, error=OptionError).check("--x", tmp_path / "out")


def test_a_written_file_gets_the_permissions_of_a_new_file_and_its_missing_folders(tmp_path):
    mask = os.umask(0o022)
    try:
        write_text(tmp_path / "a.json", "[]")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644  # not mkstemp's 0o600
    assert (tmp_path / "a.json").read_text() == "[]"
    write_text(tmp_path / "new" / "nested" / "b.json", "[]")  # its missing folders made
    assert (tmp_path / "new" / "nested" / "b.json").read_text() == "[]"


def test_outputs_check_inputs_by_identity_protected_files_and_exist_ok(tmp_path):
    source = tmp_path / "in.png"
    source.write_bytes(b"png")
    (tmp_path / "old.json").write_text("[]")
    (tmp_path / "run.ckpt").write_bytes(b"x")
    os.link(source, tmp_path / "link.png")
    assert list(Outputs([None, source]).inputs.values()) == [source]  # an input not given is no input
    guard = Outputs([source], exist_ok=True, error=OptionError)
    with pytest.raises(OptionError, match="an input of this command"):
        guard.check("--x", tmp_path / "link.png")  # another name of the same file
    with pytest.raises(OptionError, match="a checkpoint, which no command overwrites"):
        guard.check("--x", tmp_path / "run.ckpt")
    assert guard.check("--x", tmp_path / "old.json") == tmp_path / "old.json"  # exist_ok: an earlier output
    with pytest.raises(OptionError, match="exists; give another path, or --exist_ok true"):
        Outputs([source], error=OptionError).check("--x", tmp_path / "old.json")


def test_replacing_keeps_the_old_file_whole_when_writing_fails_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(path) as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old" and sorted(tmp_path.iterdir()) == [path]
    with replacing(path) as temporary:
        assert temporary.suffix == ".json" and temporary.parent == tmp_path
        temporary.write_text("new")
    assert path.read_text() == "new" and sorted(tmp_path.iterdir()) == [path]


def test_numbered_takes_the_first_free_name(tmp_path):
    assert numbered(tmp_path / "voc") == tmp_path / "voc"
    (tmp_path / "voc").mkdir()
    assert numbered(tmp_path / "voc") == tmp_path / "voc2"
    (tmp_path / "voc2").mkdir()
    assert numbered(tmp_path / "voc") == tmp_path / "voc3"


# export -------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_refuses_to_replace_its_checkpoint(tmp_path, checkpoint, capsys, fmt):
    model = tmp_path / "model.pt"
    model.write_bytes(Path(checkpoint).read_bytes())
    before = digest(tmp_path)
    code = run("export", ["--checkpoint", str(model), "--format", fmt, "--output", str(model), "--exist_ok", "true"])
    refused(capsys, code, "--output", "an input of this command")
    assert digest(tmp_path) == before


def test_export_replaces_an_earlier_export_only_with_exist_ok_and_never_another_checkpoint(tmp_path, checkpoint,
                                                                                          capsys):
    output = tmp_path / "model.pt"
    assert run("export", ["--checkpoint", str(checkpoint), "--format", "torchscript", "--output", str(output)]) == 0
    before = digest(tmp_path)
    code = run("export", ["--checkpoint", str(checkpoint), "--format", "torchscript", "--output", str(output)])
    refused(capsys, code, "--output", "exists", "--exist_ok true")
    assert digest(tmp_path) == before
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"someone's weights")
    code = run("export", ["--checkpoint", str(checkpoint), "--output", str(other), "--exist_ok", "true"])
    refused(capsys, code, "a checkpoint")
    assert other.read_bytes() == b"someone's weights"
    assert run("export", ["--checkpoint", str(checkpoint), "--format", "torchscript", "--output", str(output),
                          "--exist_ok", "true"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "other.ckpt"]  # no temporary left


# eval ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def coco(tmp_path, checkpoint):
    """A run folder (checkpoints/last.ckpt, hparams.yaml, a results.csv of two validations) and a COCO split."""
    run_folder = tmp_path / "runs" / "version_0"
    (run_folder / "checkpoints").mkdir(parents=True)
    last = run_folder / "checkpoints" / "last.ckpt"
    last.write_bytes(Path(checkpoint).read_bytes())
    (run_folder / "hparams.yaml").write_text("{}\n")
    (run_folder / "results.csv").write_text("epoch,step\n3,4\n7,8\n")
    val_json = write_coco_split(tmp_path / "data")
    options = ["--checkpoint", str(last), "--data.dataset", "coco", "--data.val_json", str(val_json),
               "--data.val_images", str(tmp_path / "data" / "images"), "--data.num_workers", "0",
               "--accelerator", "cpu"]
    return SimpleNamespace(run=run_folder, last=last, val_json=val_json, options=options, data=tmp_path / "data")


@pytest.mark.parametrize("target,needle", [("last", "an input of this command"),
                                           ("val_json", "an input of this command")])
def test_eval_results_never_replace_the_checkpoint_or_the_ground_truth(coco, capsys, target, needle):
    before = digest(coco.run, coco.data)
    code = run("eval", [*coco.options, "--results", str(getattr(coco, target)), "--exist_ok", "true"])
    refused(capsys, code, "--results", needle)
    assert digest(coco.run, coco.data) == before


def test_eval_results_refuse_another_annotation_file_and_an_existing_json(coco, capsys, tmp_path):
    other = tmp_path / "instances_train.json"
    other.write_text('{"images": [], "annotations": []}')
    refused(capsys, run("eval", [*coco.options, "--results", str(other), "--exist_ok", "true"]), "annotation file")
    earlier = tmp_path / "dets.json"
    earlier.write_text("[]")
    refused(capsys, run("eval", [*coco.options, "--results", str(earlier)]), "exists", "--exist_ok true")
    assert earlier.read_text() == "[]" and other.read_text().startswith('{"images"')


def test_eval_output_is_never_a_training_run_folder(coco, capsys):
    before = digest(coco.run)
    code = run("eval", [*coco.options, "--output", str(coco.run), "--exist_ok", "true"])
    refused(capsys, code, "--output", "training run's folder", "results.csv")
    assert digest(coco.run) == before


def test_eval_output_holding_an_evaluation_needs_exist_ok(coco, capsys, tmp_path):
    folder = tmp_path / "evaluation"
    folder.mkdir()
    (folder / "results.csv").write_text("epoch\n1\n")
    refused(capsys, run("eval", [*coco.options, "--output", str(folder)]), "--output", "already holds 1",
            "--exist_ok true")
    assert (folder / "results.csv").read_text() == "epoch\n1\n"


@pytest.mark.slow
def test_eval_with_exist_ok_replaces_its_earlier_results(coco, capsys, tmp_path):
    earlier = tmp_path / "dets.json"
    earlier.write_text('["an earlier evaluation"]')
    folder = tmp_path / "evaluation"
    folder.mkdir()
    (folder / "results.csv").write_text("old\n")
    code = run("eval", [*coco.options, "--results", str(earlier), "--output", str(folder), "--exist_ok", "true"])
    assert code == 0, capsys.readouterr().err
    assert isinstance(json.loads(earlier.read_text()), list) and "an earlier" not in earlier.read_text()
    assert (folder / "results.csv").read_text().startswith("epoch,step")
    assert not [p for p in tmp_path.rglob("*.partial*")]


# demo ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def yolo(tmp_path):
    """A YOLO dataset's train split: images/train/img0..1.png and their labels (one box, and one negative)."""
    images = image_folder(tmp_path / "dataset" / "images" / "train")
    labels = tmp_path / "dataset" / "labels" / "train"
    labels.mkdir(parents=True)
    (labels / "img0.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (labels / "img1.txt").write_text("")
    return SimpleNamespace(images=images, labels=labels, root=tmp_path / "dataset")


def demo(checkpoint, source, *options):
    return run("demo", ["--checkpoint", str(checkpoint), "--source", str(source), "--show", "false",
                        "--device", "cpu", *options])


@pytest.mark.parametrize("exist_ok", ["false", "true"])
def test_demo_save_txt_never_replaces_a_datasets_labels(checkpoint, yolo, capsys, exist_ok):
    before = digest(yolo.root)
    code = demo(checkpoint, yolo.images, "--save_txt", str(yolo.labels), "--exist_ok", exist_ok)
    refused(capsys, code, "--save_txt", str(yolo.labels / "img0.txt"))
    assert digest(yolo.root) == before


def test_demo_save_json_is_not_truncated_when_save_txt_is_refused(checkpoint, yolo, capsys, tmp_path):
    prior = tmp_path / "prior.json"
    prior.write_text('[{"image_id": 1}]')
    code = demo(checkpoint, yolo.images, "--save_json", str(prior), "--save_txt", str(yolo.labels),
                "--exist_ok", "true")
    refused(capsys, code, "--save_txt")
    assert prior.read_text() == '[{"image_id": 1}]'


def test_demo_output_folder_with_same_named_images_needs_exist_ok(checkpoint, capsys, tmp_path):
    photos = image_folder(tmp_path / "photos")
    annotated = image_folder(tmp_path / "annotated")  # same names: an earlier run, or other photos
    before = digest(photos, annotated)
    code = demo(checkpoint, photos, "--output", str(annotated))
    refused(capsys, code, "--output", "already holds 2", "--exist_ok true")
    assert digest(photos, annotated) == before
    assert demo(checkpoint, photos, "--output", str(annotated), "--exist_ok", "true") == 0
    after = digest(photos, annotated)
    assert all(after[f] == before[f] for f in photos.iterdir())
    assert all(after[f] != before[f] for f in annotated.iterdir())
    assert sorted(p.name for p in annotated.iterdir()) == ["img0.png", "img1.png"]  # no temporary left


def test_demo_json_and_txt_outputs_are_replaced_only_with_exist_ok(checkpoint, capsys, tmp_path):
    photos = image_folder(tmp_path / "photos")
    json_path, txt = tmp_path / "dets.json", tmp_path / "preds"
    assert demo(checkpoint, photos, "--save_json", str(json_path), "--save_txt", str(txt)) == 0
    before = digest(json_path, txt)
    refused(capsys, demo(checkpoint, photos, "--save_json", str(json_path)), "--save_json", "exists")
    refused(capsys, demo(checkpoint, photos, "--save_txt", str(txt)), "--save_txt", "already holds 2")
    assert digest(json_path, txt) == before
    assert demo(checkpoint, photos, "--save_json", str(json_path), "--save_txt", str(txt), "--exist_ok", "true") == 0
    assert isinstance(json.loads(json_path.read_text()), list)


def test_demo_video_output_is_replaced_only_with_exist_ok_and_never_the_video_itself(tmp_path):
    video = open_source(str(write_video(tmp_path / "in.mp4", frames=2)))
    (tmp_path / "out.mp4").write_bytes(b"an earlier video")
    with pytest.raises(DemoError, match="out.mp4 exists; give another path, or --exist_ok true"):
        open_sink(tmp_path / "out.mp4", video)
    with pytest.raises(DemoError, match="in.mp4"):
        open_sink(tmp_path / "in.mp4", video, output_guard(video, exist_ok=True))
    sink = open_sink(tmp_path / "out.mp4", video, output_guard(video, exist_ok=True))
    assert (tmp_path / "out.mp4").read_bytes() == b"an earlier video"  # untouched until the new one is complete
    sink.write("frame", make_image(64, 80))
    assert (tmp_path / "out.mp4").read_bytes() == b"an earlier video"
    sink.close()
    assert (tmp_path / "out.mp4").read_bytes() != b"an earlier video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


def test_the_results_json_replaces_the_old_one_only_when_closed(tmp_path):
    from detector.detections import Detections
    from detector.results import CocoResultsWriter

    path = tmp_path / "dets.json"
    path.write_text('["the earlier run"]')
    writer = CocoResultsWriter(path, [1])
    found = Detections(np.array([[1, 2, 11, 22]], np.float32), np.array([0.9], np.float32), np.array([0]),
                       np.array(["cat"]))
    writer.write(found, 0, "a.png")
    assert path.read_text() == '["the earlier run"]'  # not truncated while the run goes on
    writer.close()
    assert [entry["bbox"] for entry in json.loads(path.read_text())] == [[1, 2, 10, 20]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dets.json"]


# check --------------------------------------------------------------------------------------------------------------

def test_check_refuses_an_output_holding_its_files_and_numbers_its_default(tmp_path, capsys, monkeypatch):
    root = write_voc_folder(tmp_path / "voc", CONTENT)
    options = ["--data.dataset", "voc", "--data.root", str(root), "--data.input_size", "64", "--num_images", "1"]
    output = tmp_path / "out"
    assert run("check", [*options, "--output", str(output)]) == 0
    before = digest(output, root)
    refused(capsys, run("check", [*options, "--output", str(output)]), "--output", "--exist_ok true")
    assert digest(output, root) == before
    assert run("check", [*options, "--output", str(output), "--exist_ok", "true"]) == 0
    monkeypatch.chdir(tmp_path)
    assert run("check", options) == 0 and run("check", options) == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "check").iterdir()) == ["voc", "voc2"]


# train --------------------------------------------------------------------------------------------------------------

def fake_trainer(save_dir: Path, version: int | None, dirpath: Path | None = None):
    return SimpleNamespace(logger=TensorBoardLogger(str(save_dir), name="run", version=version),
                           checkpoint_callback=ModelCheckpoint(dirpath=dirpath))


def test_a_new_run_never_writes_into_another_runs_checkpoints(tmp_path):
    folder = tmp_path / "run" / "version_0"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(OptionError, match="another run's checkpoints"):
        refuse_overwriting_run(fake_trainer(tmp_path, 0), resuming=False, exist_ok=True)
    with pytest.raises(OptionError, match="another run's checkpoints"):
        refuse_overwriting_run(fake_trainer(tmp_path, None, folder / "checkpoints"), resuming=False, exist_ok=True)
    without_logger = SimpleNamespace(logger=None, checkpoint_callback=ModelCheckpoint(), default_root_dir=tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(OptionError, match="another run's checkpoints"):
        refuse_overwriting_run(without_logger, resuming=False, exist_ok=True)
    refuse_overwriting_run(fake_trainer(tmp_path, 0), resuming=True, exist_ok=False)  # the run's own: resumed
    refuse_overwriting_run(fake_trainer(tmp_path, None), resuming=False, exist_ok=False)  # a new version_1


def test_a_new_run_writes_into_a_run_folder_holding_files_only_with_exist_ok(tmp_path):
    folder = tmp_path / "run" / "version_0"
    folder.mkdir(parents=True)
    (folder / "results.csv").write_text("epoch\n")
    with pytest.raises(OptionError, match="--exist_ok true"):
        refuse_overwriting_run(fake_trainer(tmp_path, 0), resuming=False, exist_ok=False)
    refuse_overwriting_run(fake_trainer(tmp_path, 0), resuming=False, exist_ok=True)
