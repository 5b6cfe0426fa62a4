"""``centernet check``: counts of a tiny VOC folder with known boxes, the files it writes, ground truth drawn where
the augmented boxes are, and a bad path as one ``error:`` line."""
from pathlib import Path

import cv2
import numpy as np

from helpers.datasets import CHECK_CONTENT as CONTENT, write_voc_folder

from detector.check import check_dataset, histogram_figure
from detector.cli import run
from detector.data import AugmentOptions, DetectionDataModule
from detector.plots import pyplot
from detector.visualize import class_color


def check(tmp_path: Path, *options: str) -> tuple[int, Path]:
    root = write_voc_folder(tmp_path / "voc", CONTENT)
    output = tmp_path / "out"
    code = run("check", ["--data.dataset", "voc", "--data.root", str(root), "--data.input_size", "64",
                         "--output", str(output), *options])
    return code, output


def test_counts_per_class_and_split(tmp_path, capsys):
    code, _ = check(tmp_path, "--num_images", "1")
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    rows = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in lines[1:5]}
    # class: train images, train boxes, val images, val boxes
    assert rows == {"Platelets": [1, 1, 0, 0], "RBC": [2, 3, 1, 1], "wbc": [0, 0, 1, 1], "all": [2, 4, 1, 2]}
    assert any("['train']: 1 boxes clipped" in line for line in lines)  # the reader's warning, per split


def test_unreadable_image_is_reported(tmp_path, capsys):
    root = write_voc_folder(tmp_path / "voc", CONTENT)
    (root / "JPEGImages" / "img_b.png").write_bytes(b"not an image")
    assert run("check", ["--data.dataset", "voc", "--data.root", str(root), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"{root / 'JPEGImages' / 'img_b.png'}: cannot be decoded" in out


def test_writes_the_histograms_and_num_images_samples(tmp_path, capsys):
    code, output = check(tmp_path, "--num_images", "2")
    assert code == 0
    histogram = cv2.imread(str(output / "boxes.png"))
    assert histogram is not None and histogram.shape[1] > 500
    samples = sorted((output / "train_samples").glob("*.png"))
    assert len(samples) == 2
    assert cv2.imread(str(samples[0])).shape == (64, 64, 3)  # the training input, after augmentation
    assert str(output / "boxes.png") in capsys.readouterr().out


def test_the_histograms_draw_each_split_s_box_widths_heights_and_aspect_ratios(tmp_path):
    data = DetectionDataModule("voc", str(write_voc_folder(tmp_path / "voc", CONTENT)), input_size=64, num_workers=0)
    report = check_dataset(data, tmp_path / "out", num_images=0)
    figure = histogram_figure(report)
    for axis, column in zip(figure.axes, ("width", "height", "ratio")):
        labels = [text.get_text() for text in axis.get_legend().get_texts()]
        bars = {label: [bar.get_height() for bar in bars] for label, bars in zip(labels, axis.containers)}
        assert sorted(bars) == ["train (4 boxes)", "val (2 boxes)"]  # CONTENT: 4 train boxes, 2 val boxes
        for split, counts in (("train (4 boxes)", report.train), ("val (2 boxes)", report.val)):
            width, height = counts.sizes[:, 0], counts.sizes[:, 1]
            value = {"width": width, "height": height, "ratio": np.log2(width / height)}[column]
            assert bars[split] == np.histogram(value, bins=40)[0].tolist(), (column, split)
    # the train widths by hand: VOC x1 - 1 .. x2, the difficult wbc left out, the RBC at 20..80 clipped to the 50 px image
    assert sorted(report.train.sizes[:, 0].tolist()) == [7, 10, 26, 31]
    pyplot().close(figure)


def test_drawn_box_lands_on_the_augmented_object(tmp_path):
    """A green rectangle annotated as its box, flipped and rescaled by the augmentation: the drawn box's left,
    right and bottom edges are the green region's (the label sits above the top edge)."""
    root = write_voc_folder(tmp_path / "voc", {"train": {"a": ("a.png", 128, 128, [("thing", 0, 11, 41, 60, 110)])},
                                               "val": {"b": ("b.png", 32, 32, [("thing", 0, 1, 1, 9, 9)])}})
    image = np.full((128, 128, 3), 120, dtype=np.uint8)
    image[40:110, 10:60] = (0, 200, 0)  # BGR green, pixels 10..59 x 40..109 = VOC 11..60 x 41..110
    cv2.imwrite(str(root / "JPEGImages" / "a.png"), image)
    data = DetectionDataModule("voc", str(root), input_size=128, num_workers=0,
                               augment=AugmentOptions(flip_prob=1.0, colour_jitter=0.0, scale_range=(0.7, 0.8)))
    report = check_dataset(data, tmp_path / "out", num_images=1)
    drawn = cv2.cvtColor(cv2.imread(str(report.samples[0])), cv2.COLOR_BGR2RGB).astype(int)
    green = (drawn[..., 1] > 150) & (drawn[..., 0] < 80) & (drawn[..., 2] < 80)
    line = (np.abs(drawn - np.array(class_color(0))).sum(axis=-1) < 30)
    gy, gx = np.nonzero(green)
    ly, lx = np.nonzero(line)
    assert len(gx) > 500 and len(lx) > 100  # the object survived the augmentation, and a box was drawn
    assert abs(lx.min() - gx.min()) <= 2 and abs(lx.max() - gx.max()) <= 2 and abs(ly.max() - gy.max()) <= 2


def test_bad_dataset_path_prints_one_error_line(tmp_path, capsys):
    code = run("check", ["--data.dataset", "voc", "--data.root", str(tmp_path / "missing"),
                         "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error:") and "missing" in err[0]
