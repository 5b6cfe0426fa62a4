"""Plots and the confusion matrix (``detector/plots.py``, ``detector/confusion.py``): the confusion matrix and the
precision-recall curves against hand cases, the training curves of results.png from a hand-written results.csv, and
the files a training run and ``tools/eval.py`` write (results.csv per validation, results.png, the PR curves, the
confusion matrix)."""
import csv
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers.commands import HEAVY, modules_after
from helpers.commands import run_tool as tool
from helpers.datasets import annotation, det, make_coco

from detector.confusion import confusion_matrix
from detector.evaluation import coco_evaluate
from detector.plots import (RESULTS_COLUMNS, append_results_row, confusion_figure, drop_results_from, mean_pr_curve,
                            plot_results, pr_figure, pyplot, results_figure, results_row)
from detector.plots import read_results as read_results_csv

CAT, DOG = 3, 17  # dataset category ids of labels 0 and 1


def confusion_hand_case():
    """Image 1: cat A, dog B, cat C. Image 2: dog D and a crowd region."""
    images = [{"id": 1, "width": 200, "height": 200}, {"id": 2, "width": 200, "height": 200}]
    anns = [annotation(1, 1, CAT, [0, 0, 50, 50]), annotation(2, 1, DOG, [100, 100, 50, 50]),
            annotation(3, 1, CAT, [150, 0, 40, 40]), annotation(4, 2, DOG, [20, 20, 60, 60]),
            annotation(5, 2, CAT, [120, 120, 60, 60], crowd=1)]
    results = [
        det(1, DOG, [1, 0, 50, 50], 0.8),  # a dog duplicate on cat A, listed first: the cat (0.9) takes A first
        det(1, CAT, [0, 0, 50, 50], 0.9),  # cat on cat A: correct
        det(1, CAT, [100, 100, 50, 50], 0.7),  # cat on dog B: wrong class on an object
        det(1, DOG, [60, 150, 30, 30], 0.6),  # dog on the background
        det(1, DOG, [150, 0, 40, 40], 0.2),  # dog on cat C below the threshold: ignored, C is missed
        det(2, DOG, [20, 20, 60, 60], 0.3),  # dog on dog D at exactly the threshold: counts
        det(2, DOG, [120, 120, 60, 60], 0.5),  # on the crowd region: counted nowhere
    ]
    categories = [{"id": CAT, "name": "cat"}, {"id": DOG, "name": "dog"}]
    return make_coco(images, anns, categories), results


def test_confusion_matrix_of_the_hand_case():
    gt, results = confusion_hand_case()
    matrix = confusion_matrix(gt, results, [CAT, DOG])
    assert matrix.names == ["cat", "dog", "background"]
    #               predicted: cat dog background
    expected = np.array([[1, 0, 1],   # cat: A found, C missed (its dog was below the threshold)
                         [1, 1, 0],   # dog: B called a cat, D found
                         [0, 2, 0]])  # background: the dog duplicate on A, the dog on the background
    np.testing.assert_array_equal(matrix.counts, expected)


def test_confusion_matrix_image_subset_threshold_and_csv(tmp_path):
    gt, results = confusion_hand_case()
    only_2 = confusion_matrix(gt, results, [CAT, DOG], image_ids=[2])
    np.testing.assert_array_equal(only_2.counts, [[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    strict = confusion_matrix(gt, results, [CAT, DOG], image_ids=[2], score_threshold=0.31)
    np.testing.assert_array_equal(strict.counts, [[0, 0, 0], [0, 0, 1], [0, 0, 0]])  # D now missed
    rows = list(csv.reader(confusion_matrix(gt, results, [CAT, DOG]).to_csv(tmp_path / "m.csv").open()))
    assert rows[0][1:] == ["cat", "dog", "background"]
    assert rows[3] == ["background", "0", "2", "0"]


def pr_hand_case():
    """'car': two objects on image 1, detected at 0.9 (exact), a false positive at 0.8, the second at 0.7 with IoU
    0.6; 'bus': one object, no detection; 'van': no object."""
    images = [{"id": 1, "width": 200, "height": 200}]
    anns = [annotation(1, 1, 1, [0, 0, 50, 50]), annotation(2, 1, 1, [100, 100, 50, 50]),
            annotation(3, 1, 2, [0, 120, 40, 40])]
    # IoU 0.6 with the second car: same height, shifted right by d: (50 - d) / (50 + d) = 0.6 -> d = 12.5
    results = [det(1, 1, [0, 0, 50, 50], 0.9), det(1, 1, [150, 0, 30, 30], 0.8), det(1, 1, [112.5, 100, 50, 50], 0.7)]
    categories = [{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}, {"id": 3, "name": "van"}]
    return make_coco(images, anns, categories), results


def test_pr_curve_at_iou_0_5_of_the_hand_case():
    gt, results = pr_hand_case()
    result = coco_evaluate(gt, results)
    car, bus, van = (result.pr50[name] for name in ("car", "bus", "van"))
    # car: (precision, recall) 1/.5, .5/.5, 2/3/1; interpolated: 1 up to recall .5, 2/3 beyond (the IoU-0.6 hit
    # counts at IoU 0.5; at 0.75 it would be a false positive and recall would stop at .5)
    np.testing.assert_allclose(car[:51], 1.0)
    np.testing.assert_allclose(car[51:], 2 / 3)
    np.testing.assert_array_equal(bus, np.zeros(101))  # an object, no detection
    np.testing.assert_array_equal(van, np.full(101, -1.0))  # nothing to score
    mean = mean_pr_curve(result.pr50)
    np.testing.assert_allclose(mean, (car + bus) / 2)
    assert mean.mean() == pytest.approx(result.metrics["AP50"])


def test_the_pr_figure_draws_each_scored_class_and_the_mean_of_the_hand_case():
    gt, results = pr_hand_case()
    curves = coco_evaluate(gt, results).pr50
    figure = pr_figure(curves)
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    # 'van' has no object: no line; the legend gives each curve's mean (AP50): car (51 + 50 * 2/3) / 101
    assert sorted(lines) == ["all classes 0.417 AP50", "bus 0.000", "car 0.835"]
    np.testing.assert_allclose(lines["car 0.835"].get_xydata(), np.stack([np.linspace(0, 1, 101), curves["car"]], 1))
    np.testing.assert_array_equal(lines["bus 0.000"].get_ydata(), np.zeros(101))
    mean = lines["all classes 0.417 AP50"]
    np.testing.assert_allclose(mean.get_ydata(), (curves["car"] + curves["bus"]) / 2)
    assert mean.get_linewidth() == 3 and mean.get_color() == "black"
    pyplot().close(figure)


def test_the_confusion_figure_colours_each_row_by_its_fractions_and_writes_the_counts():
    gt, results = confusion_hand_case()
    figure = confusion_figure(confusion_matrix(gt, results, [CAT, DOG]))
    axis = figure.axes[0]
    np.testing.assert_allclose(axis.get_images()[0].get_array(), [[0.5, 0, 0.5], [0.5, 0.5, 0], [0, 1, 0]])
    written = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in axis.texts}
    assert written == {(0, 0): "1", (0, 2): "1", (1, 0): "1", (1, 1): "1", (2, 1): "2"}  # row, column: no zeros
    assert [t.get_text() for t in axis.get_xticklabels()] == ["cat", "dog", "background"]
    pyplot().close(figure)


def test_results_csv_rows_append_under_one_header(tmp_path):
    path = tmp_path / "results.csv"
    append_results_row(path, results_row(0, 10, {"AP": 0.25, "AP_small": -1.0, "images": 5.0},
                                         {"loss": 2.5, "heatmap": 2.0, "offset": 0.25, "size": 0.25}, 1e-3))
    append_results_row(path, results_row(1, 20, {"AP": 0.5, "mAP50_voc07": 0.75}))
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == RESULTS_COLUMNS and len(rows) == 2
    assert rows[0]["epoch"] == "0" and rows[0]["step"] == "10" and float(rows[0]["train/loss"]) == 2.5
    assert float(rows[0]["val/AP"]) == 0.25 and float(rows[0]["val/AP_small"]) == -1.0
    assert rows[0]["val/mAP50_voc07"] == "" and float(rows[1]["val/mAP50_voc07"]) == 0.75
    assert rows[1]["train/loss"] == "" and rows[1]["lr"] == ""


def test_a_resume_drops_the_rows_of_the_steps_it_redoes(tmp_path):
    path = tmp_path / "results.csv"
    for epoch, step in ((3, 4), (7, 8), (11, 12)):
        append_results_row(path, results_row(epoch, step, {"AP": 0.1 * step}))
    assert drop_results_from(path, 9) == 1  # resumed at step 8: the row of step 12 is redone
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == RESULTS_COLUMNS and [(r["epoch"], r["step"]) for r in rows] == [("3", "4"), ("7", "8")]
    assert float(rows[1]["val/AP"]) == pytest.approx(0.8)
    assert drop_results_from(path, 9) == 0 and drop_results_from(path, 8) == 1  # a redone validation at step 8
    assert [r["step"] for r in csv.DictReader(path.open())] == ["4"]
    assert drop_results_from(tmp_path / "absent.csv", 0) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]  # no temporary file left


RESULTS_TEXT = """epoch,step,lr,train/loss,train/heatmap,train/offset,train/size,val/AP,val/AP50,val/AP75
3,40,0.002,4.5,3.0,0.5,10,0.05,0.12,0.01
7,80,0.001,3.25,2.25,0.25,7.5,0.125,0.25,0.1
11,120,0.0005,2.5,1.75,0.125,6.25,0.2,0.375,0.15
11,120,,,,,,0.25,0.5,0.2
"""  # the last row: an evaluation's (no losses); the file lacks the other metric columns (an older run)


def test_results_png_draws_each_loss_part_and_the_ap_of_results_csv_against_the_epoch(tmp_path):
    (tmp_path / "results.csv").write_text(RESULTS_TEXT)
    figure = results_figure(read_results_csv(tmp_path / "results.csv"))
    drawn = {axis.get_title(): axis.get_lines()[0] for axis in figure.axes if axis.get_lines()}
    assert {title: (list(line.get_xdata()), list(line.get_ydata())) for title, line in drawn.items()} == {
        "train/loss": ([3, 7, 11], [4.5, 3.25, 2.5]), "train/heatmap": ([3, 7, 11], [3.0, 2.25, 1.75]),
        "train/offset": ([3, 7, 11], [0.5, 0.25, 0.125]), "train/size": ([3, 7, 11], [10, 7.5, 6.25]),
        "val/AP": ([3, 7, 11, 11], [0.05, 0.125, 0.2, 0.25]), "val/AP50": ([3, 7, 11, 11], [0.12, 0.25, 0.375, 0.5])}
    path = plot_results(tmp_path / "results.csv")
    assert path == tmp_path / "results.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] >= 400 and image.shape[1] >= 800
    assert (image < 128).any() and (image > 200).mean() > 0.5  # drawn: lines and text on a white page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.png"]  # no temporary file left


def test_the_default_eval_folder_is_a_new_val_folder_in_the_run_folder(tmp_path):
    from detector.training.evaluate import eval_output_folder

    checkpoint = tmp_path / "runs" / "version_0" / "checkpoints" / "best.ckpt"
    checkpoint.parent.mkdir(parents=True)
    assert eval_output_folder(checkpoint) == (tmp_path / "runs" / "version_0" / "val").resolve()
    (tmp_path / "runs" / "version_0" / "val").mkdir()
    assert eval_output_folder(checkpoint).name == "val2"
    assert eval_output_folder(tmp_path / "model.ckpt") == (tmp_path / "val").resolve()


@pytest.mark.slow
def test_importing_the_plots_loads_no_lightning_pycocotools_or_matplotlib():
    heavy = {*HEAVY, "matplotlib", "detector.training.module", "detector.evaluation"}
    assert not modules_after("import detector.plots") & heavy


# a tiny training run and tools/eval.py --------------------------------------------------------------------------

def run_tool(script, *args):
    result = tool(script, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def train_and_eval(tmp_path_factory):
    """Two epochs of 2 steps on 8 synthetic 64 px images, then tools/eval.py on the best checkpoint:
    (tmp, run folder, eval folder, val json)."""
    tmp = tmp_path_factory.mktemp("plots")
    train = run_tool("train.py", "--data.dataset", "synthetic",
                     "--data.root", str(tmp / "synthetic"), "--data.num_train", "8",
                     "--data.num_val", "4", "--data.input_size", "64", "--data.batch_size", "4",
                     "--data.num_workers", "0", "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu",
                     "--trainer.check_val_every_n_epoch", "1", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                     "--trainer.logger.init_args.save_dir", str(tmp / "runs"),
                     "--trainer.default_root_dir", str(tmp / "runs"))
    run = Path(re.search(r"^run folder: +(\S+)", train.stdout, flags=re.M).group(1))
    best = re.search(r"evaluate: +python tools/eval.py --checkpoint (\S+)", train.stdout).group(1)
    evaluation = run_tool("eval.py", "--checkpoint", best, "--data.num_workers", "0", "--accelerator", "cpu")
    folder = Path(re.search(r"confusion matrix written to (\S+)", evaluation.stdout).group(1))
    val_json = next((tmp / "synthetic").glob("**/instances_val.json"))
    return run, folder, val_json, best


def assert_plots(folder: Path, val_json: Path):
    for name in ("PR_curve.png", "confusion_matrix.png"):
        image = cv2.imread(str(folder / name))
        assert image is not None and image.shape[0] > 100, name
    rows = list(csv.reader((folder / "confusion_matrix.csv").open()))
    names = rows[0][1:]
    assert names[-1] == "background" and [row[0] for row in rows[1:]] == names
    counts = np.array([[int(v) for v in row[1:]] for row in rows[1:]])
    # each ground-truth row holds every object of its class once: found, called another class, or missed
    data = json.loads(val_json.read_text())
    category = {c["id"]: c["name"] for c in data["categories"]}
    objects = [category[a["category_id"]] for a in data["annotations"] if not a.get("iscrowd", 0)]
    assert counts[:-1].sum(axis=1).tolist() == [objects.count(name) for name in names[:-1]]
    return counts


def read_results(path: Path) -> list[dict]:
    with path.open() as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_training_writes_results_csv_per_epoch_and_the_plots(train_and_eval):
    run, _, val_json, _ = train_and_eval
    rows = read_results(run / "results.csv")
    assert [(row["epoch"], row["step"]) for row in rows] == [("0", "2"), ("1", "4")]
    assert float(rows[0]["lr"]) > 0  # the learning rate of the next step (the cosine reaches 0 at the end)
    for row in rows:
        assert tuple(row) == RESULTS_COLUMNS
        assert float(row["train/loss"]) > 0 and float(row["lr"]) >= 0
        assert 0 <= float(row["val/AP"]) <= 1 and 0 <= float(row["val/AP50"]) <= 1
        assert row["val/mAP50_voc07"] == ""  # not a VOC set
        assert float(row["train/loss"]) == pytest.approx(
            float(row["train/heatmap"]) + float(row["train/offset"]) + 0.1 * float(row["train/size"]), rel=1e-3)
    assert_plots(run, val_json)
    image = cv2.imread(str(run / "results.png"))  # the curves, drawn at the end of training
    assert image is not None and image.shape[0] > 100


@pytest.mark.slow
def test_eval_writes_its_row_and_the_same_plots_in_the_run_folder(train_and_eval):
    run, folder, val_json, best = train_and_eval
    assert folder == run.resolve() / "val"
    [row] = read_results(folder / "results.csv")
    epoch = int(re.search(r"epoch(\d+)", Path(best).name).group(1))
    trained = read_results(run / "results.csv")[epoch]
    assert row["epoch"] == trained["epoch"] and row["step"] == trained["step"] and row["train/loss"] == ""
    for name in ("val/AP", "val/AP50", "val/AP75"):
        assert float(row[name]) == pytest.approx(float(trained[name]), abs=1e-6)
    # the training's plots are of its reported (best) checkpoint: the same counts
    np.testing.assert_array_equal(assert_plots(folder, val_json), assert_plots(run, val_json))
