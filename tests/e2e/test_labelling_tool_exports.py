"""Labelled folders as the labelling tools export them (labelImg, CVAT, Roboflow, Label Studio; written in miniature
by ``tests/helpers/exports.py``) read with ``--data.root FOLDER`` alone: the format detected, the right class and
counts in ``centernet check``, every box where the tool put it, a validation split held out of a one-split export by
a stable hash, and every refusal one ``error:`` line."""
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import exports
from helpers.exports import CLASS, WRITERS, Export, Photo, photos, write_photo

from detector.cli import run
from detector.data import DetectionDataModule
from detector.data.detect import detect_dataset, with_detected_dataset
from detector.data.split import hashed_validation
from detector.data.yolo import resolve_entry
from detector.errors import DatasetError

ROOT = Path(__file__).resolve().parents[2]


def held_out(names: list[str], fraction: float = 0.2) -> set[str]:
    """The rule, restated: a name goes to validation when its SHA-1 (first 8 bytes) / 2**64 is below the fraction."""
    return {n for n in names if int.from_bytes(hashlib.sha1(n.encode()).digest()[:8], "big") / 2 ** 64 < fraction}


def write(tmp_path: Path, name: str) -> Export:
    folder = tmp_path / name
    folder.mkdir()
    return WRITERS[name](folder)


def check(export: Export, tmp_path: Path, capsys, *options: str) -> tuple[int, str, str]:
    code = run("check", [*export.args, "--output", str(tmp_path / "out"), "--num_images", "1", "--exist_ok", "true",
                         *options])  # some tests check twice into one folder
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> dict[str, list[int]]:
    """class -> [train images, train boxes, val images, val boxes] from check's table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("class "))
    rows = {}
    for line in lines[start + 1:]:
        fields = line.split()
        if len(fields) != 5 or not all(f.isdigit() for f in fields[1:]):
            break
        rows[fields[0]] = [int(v) for v in fields[1:]]
    return rows


def boxes_of(items: list[Photo]) -> int:
    return sum(len(p.boxes) for p in items)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_check_reads_each_export_with_the_root_alone(tmp_path, capsys, name):
    export = write(tmp_path, name)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, out, err = check(export, tmp_path, capsys)
    assert code == 0, err
    assert out.startswith("data: ")  # what was found, one line
    rows = table(out)
    assert list(rows) == [CLASS, "all"]  # one class: no root category, no background, no synthetic shapes
    if export.val is not None:  # the export's own validation split
        expected = [len(export.train), boxes_of(export.train), len(export.val), boxes_of(export.val)]
        assert rows["all"] == expected
        assert "split:" not in out
    else:  # held out of the one split by the hash of each file name
        val = held_out([p.name for p in export.train])
        val_photos = [p for p in export.train if p.name in val]
        expected = [len(export.train) - len(val), boxes_of(export.train) - boxes_of(val_photos), len(val),
                    boxes_of(val_photos)]
        assert rows["all"] == expected
        assert sum("split:" in line for line in out.splitlines()) == 1
    # nothing written into the labelled folder (check writes into --output only)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "out" not in p.parts) == before


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_box_is_read_where_the_tool_put_it(tmp_path, name):
    export = write(tmp_path, name)
    found = detect_dataset(export.root, dict(zip(export.options[::2], export.options[1::2])).get("--data.xml_dir"))
    data = DetectionDataModule(found.dataset, **found.options, num_workers=0)
    data.setup("fit")
    truth = {p.name: p for p in export.train + (export.val or [])}
    seen = set()
    for dataset in (data.train_dataset, data.val_dataset):
        for ann in dataset.annotations:
            expected = np.array(truth[ann.file.name].boxes, dtype=np.float32).reshape(-1, 4)
            np.testing.assert_allclose(ann.boxes, expected, atol=1e-3, err_msg=f"{name}: {ann.file}")
            assert (ann.width, ann.height) == (exports.W, exports.H)
            seen.add(ann.file.name)
    assert data.class_names == [CLASS]
    assert seen == {p.name for p in export.train + (export.val or [])}


def test_unlabelled_photos_are_counted_and_can_be_trained_as_negatives(tmp_path, capsys):
    export = write(tmp_path, "labelimg_beside")
    code, out, _ = check(export, tmp_path, capsys)
    assert code == 0 and "unlabelled: 1 photos" in out and "left out" in out
    skipped = table(out)["all"]
    code, out, _ = check(export, tmp_path, capsys, "--data.unlabelled", "negatives")
    assert code == 0 and "kept as negatives" in out
    kept = table(out)["all"]
    assert kept[0] + kept[2] == skipped[0] + skipped[2] + 1  # one more image ...
    assert kept[1] + kept[3] == skipped[1] + skipped[3]  # ... and no more boxes


def test_an_explicit_dataset_forces_the_format_and_voc_reads_a_labelimg_folder(tmp_path, capsys):
    export = write(tmp_path, "labelimg_beside")
    code, out, err = check(export, tmp_path, capsys, "--data.dataset", "voc")
    assert code == 0, err
    assert not out.startswith("data: ")  # nothing detected: the flag chose
    assert sum(table(out)["all"][::2]) == 10
    code, _, err = check(export, tmp_path, capsys, "--data.dataset", "yolo")
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: ")


def test_roboflow_root_category_is_said_once_and_is_no_class(tmp_path, capsys):
    code, out, _ = check(write(tmp_path, "roboflow_coco"), tmp_path, capsys)
    assert code == 0
    assert sum("'kangaroos-sgxe' (id 0)" in line and "not a class" in line for line in out.splitlines()) == 1


def test_yolo_negatives_and_polygons(tmp_path):
    export = write(tmp_path, "label_studio_yolo")
    data = DetectionDataModule("yolo", str(export.root), num_workers=0)
    data.setup("fit")
    annotations = {a.file.name: a for d in (data.train_dataset, data.val_dataset) for a in d.annotations}
    assert len(annotations) == 9  # the photo with an empty label file is kept ...
    assert sum(len(a.boxes) == 0 for a in annotations.values()) == 1  # ... with no object


def test_check_counts_the_negatives(tmp_path, capsys):
    code, out, _ = check(write(tmp_path, "label_studio_yolo"), tmp_path, capsys)
    line = next(line for line in out.splitlines() if line.startswith("images with no object"))
    train, val = (int(v) for v in line.split(": ")[1].replace(" train,", "").replace(" val", "").split())
    assert code == 0 and train + val == 1


@pytest.mark.parametrize("name, file", [("roboflow_yolo", "data.yaml"), ("label_studio_coco", "result.json"),
                                        ("cvat_yolo", "obj.data")])
def test_the_dataset_file_itself_as_root(tmp_path, capsys, name, file):
    export = write(tmp_path, name)
    whole = check(export, tmp_path, capsys)
    by_file = check(Export(export.root / file), tmp_path, capsys)
    assert whole[0] == by_file[0] == 0
    assert table(whole[1]) == table(by_file[1])


@pytest.mark.parametrize("make, message", [
    (lambda f: (exports.roboflow_yolo(f), exports.label_studio_coco(f)), "more than one dataset here"),
    (lambda f: [write_photo(f / p.name, p) for p in photos("x", 3)], "no dataset recognised (3 images"),
    (lambda f: None, "no dataset recognised (it is empty"),
])
def test_a_folder_that_is_not_one_dataset_is_one_error_line(tmp_path, capsys, make, message):
    folder = tmp_path / "data"
    folder.mkdir()
    make(folder)
    assert run("check", ["--data.root", str(folder), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_a_root_that_does_not_exist_is_refused_and_a_synthetic_cache_keeps_the_config(tmp_path, capsys):
    assert run("check", ["--data.root", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err == f"error: --data.root {tmp_path / 'nowhere'}: does not exist\n"
    (tmp_path / "cache" / "v1-seed0-train4-val2").mkdir(parents=True)
    args = ["--data.root", str(tmp_path / "cache"), "--data.num_train", "4"]
    assert with_detected_dataset(args) == args


@pytest.mark.parametrize("yaml_text, message", [
    ("train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['kangaroo']\n", "'nc: 2' but 'names' holds 1"),
    ("train: ../nowhere/images\nval: ../valid/images\nnames: ['kangaroo']\n", "nowhere/images is neither"),
])
def test_bad_roboflow_yaml_is_one_error_line(tmp_path, capsys, yaml_text, message):
    export = write(tmp_path, "roboflow_yolo")
    (export.root / "data.yaml").write_text(yaml_text)
    code, _, err = check(export, tmp_path, capsys)
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_split_entries_resolve_as_ultralytics_does(tmp_path):
    """Relative to ``path``; ``../x`` missing retried as ``x``; then the YAML's folder."""
    root, yaml_folder = tmp_path / "root", tmp_path / "yaml"
    for folder in (root / "a", root / "b", yaml_folder / "c", tmp_path / "d"):
        folder.mkdir(parents=True)
    assert resolve_entry("a", root, yaml_folder) == root / "a"
    assert resolve_entry("../d", root, yaml_folder) == root / "../d"  # it exists: kept as written
    assert resolve_entry("../b", root, yaml_folder) == root / "b"
    assert resolve_entry("c", root, yaml_folder) == yaml_folder / "c"
    assert resolve_entry("../c", root, yaml_folder) == yaml_folder / "c"


def test_hashed_split_follows_the_rule_and_adding_photos_moves_none():
    names = [f"IMG_{i:04d}.jpg" for i in range(200)]
    chosen = hashed_validation(names, 0.2)
    assert {n for n, c in zip(names, chosen) if c} == held_out(names)
    assert 25 <= sum(chosen) <= 55  # about a fifth
    more = names + [f"new_{i}.png" for i in range(100)]
    assert hashed_validation(more, 0.2)[:200] == chosen  # the old photos stay where they were
    assert hashed_validation(list(reversed(names)), 0.2) == list(reversed(chosen))  # order plays no part


def test_a_tiny_split_keeps_both_sides_and_a_bad_fraction_is_refused():
    assert sorted(hashed_validation(["a.jpg", "b.jpg"], 0.01)) == [False, True]
    assert sorted(hashed_validation(["a.jpg", "b.jpg"], 0.99)) == [False, True]
    with pytest.raises(DatasetError, match="val_fraction 1.5"):
        hashed_validation(["a.jpg"], 1.5)


def test_recorded_validation_names_win_over_the_hash(tmp_path):
    export = write(tmp_path, "label_studio_coco")
    found = detect_dataset(export.root)
    data = DetectionDataModule(found.dataset, **found.options, num_workers=0)
    recorded = [export.train[0].name, export.train[1].name]
    data.restore_split({"DetectionDataModule": {"split": {"val": recorded}}})
    data.setup("fit")
    assert [a.file.name for a in data.val_dataset.annotations] == recorded
    assert data.state_dict()["split"]["val"] == recorded
    assert len(data.train_dataset) == len(export.train) - 2


@pytest.mark.slow
def test_tools_check_in_a_subprocess_on_a_roboflow_export(tmp_path):
    export = write(tmp_path, "roboflow_yolo")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "check.py"), "--data.root", str(export.root),
                             "--output", str(tmp_path / "out"), "--num_images", "1"], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert table(result.stdout)["all"] == [6, 6, 3, 3]


@pytest.mark.slow
def test_a_run_on_a_one_split_export_records_its_split_and_eval_uses_the_same_photos(tmp_path, capsys):
    """One short training run on a labelImg folder: the held-out lists in the run folder and the checkpoint; a photo
    added afterwards whose hash would put it in validation does not move into the evaluation of that checkpoint."""
    import re

    import torch

    export = write(tmp_path, "labelimg_beside")
    before = sorted(export.root.rglob("*"))
    runs = tmp_path / "runs"
    code = run("train", ["--data.root", str(export.root), "--data.input_size", "64", "--data.batch_size", "4",
                         "--data.num_workers", "0", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
                         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                         "--trainer.logger.init_args.save_dir", str(runs), "--trainer.default_root_dir", str(runs)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("data: labelImg folder")
    assert sorted(export.root.rglob("*")) == before  # nothing written into the labelled folder
    val = held_out([p.name for p in export.train])
    run_folder = next(runs.glob("*/version_0"))
    assert run_folder.parent.name == export.root.name  # named after the data, not "synthetic"
    listed = (run_folder / "split_val.txt").read_text().split()
    assert {Path(line).name for line in listed} == val
    assert len((run_folder / "split_train.txt").read_text().split()) == len(export.train) - len(val)
    best = re.search(r"evaluate: +python tools/eval.py --checkpoint (\S+)", out).group(1)
    state = torch.load(best, map_location="cpu", weights_only=True)
    assert set(state["DetectionDataModule"]["split"]["val"]) == val

    new = next(Photo(f"new{i}.jpg", ((3, 3, 20, 20),)) for i in range(100) if held_out([f"new{i}.jpg"]))
    write_photo(export.root / new.name, new)
    (export.root / new.name).with_suffix(".xml").write_text(exports.voc_xml(new))
    assert run("eval", ["--checkpoint", best, "--data.num_workers", "0", "--accelerator", "cpu",
                        "--output", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert f"images: {len(val)}" in out  # the recorded photos, not the new one
    assert "validation images recorded in the checkpoint" in out


@pytest.mark.parametrize("json_path, name", [
    ("exp/annotations/instances_default.json", "exp"), ("exp/train/_annotations.coco.json", "exp"),
    ("exp/result.json", "exp"), ("mine/cells_train.json", "cells_train"),
])
def test_a_tool_named_json_names_its_runs_after_the_export_folder(tmp_path, json_path, name):
    from detector.training.naming import own_data_name
    from detector.data.detect import json_data_name

    assert json_data_name(tmp_path / json_path) == name
    assert own_data_name("coco", None, str(tmp_path / json_path)) == name
