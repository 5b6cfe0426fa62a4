"""Look at a dataset before training on it: ``centernet check --data.root my_export/`` (the format detected,
``detector.data.detect``) or ``centernet check --data.dataset voc --data.root my_voc/``.

:func:`check_dataset` reads the data as training does (``DetectionDataModule.setup("fit")``) and returns a
:class:`CheckReport`: per class the images and boxes of train and val, the readers' warnings (boxes clipped or
dropped per file, image files that cannot be decoded: every image is decoded once), a PNG of the box width, height
and aspect-ratio histograms (original pixels), and ``num_images`` training images with their ground truth drawn
after the training augmentation (``train_dataset[i]``), so a wrong class map or flipped coordinates show before a
long run.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from detector.data.dataset import DetectionDataset
from detector.data.detect import json_data_name
from detector.errors import OptionError
from detector.images import ImageReadError
from detector.overwrite import Outputs, replacing, write_bytes
from detector.visualize import class_color, draw_label

HISTOGRAM_FILE = "boxes.png"
SAMPLES_FOLDER = "train_samples"


@dataclass
class SplitCounts:
    """Per class (index = label): images holding the class and its boxes; ``images``: all images of the split;
    ``sizes [N, 2]`` float32 width and height of every box in original pixels (training targets, not crowd);
    ``negatives``: images with no object at all (kept: they teach the background)."""

    images: int
    class_images: np.ndarray
    class_boxes: np.ndarray
    sizes: np.ndarray
    negatives: int = 0


@dataclass
class CheckReport:
    """What :func:`check_dataset` found and wrote."""

    class_names: list[str]
    train: SplitCounts
    val: SplitCounts
    warnings: list[str] = field(default_factory=list)
    histogram: Path | None = None
    samples: list[Path] = field(default_factory=list)

    def table(self) -> str:
        """The per-class counts, one row per class and a total row."""
        width = max([len(name) for name in self.class_names] + [5])
        lines = [f"{'class':<{width}}  {'train images':>12}  {'train boxes':>11}  {'val images':>10}  {'val boxes':>9}"]
        for i, name in enumerate(self.class_names):
            lines.append(f"{name:<{width}}  {self.train.class_images[i]:>12}  {self.train.class_boxes[i]:>11}  "
                         f"{self.val.class_images[i]:>10}  {self.val.class_boxes[i]:>9}")
        lines.append(f"{'all':<{width}}  {self.train.images:>12}  {int(self.train.class_boxes.sum()):>11}  "
                     f"{self.val.images:>10}  {int(self.val.class_boxes.sum()):>9}")
        return "\n".join(lines)

    def summary(self) -> str:
        """The table, every warning, and where the files are."""
        parts = [self.table()]
        if self.train.negatives or self.val.negatives:
            parts.append(f"images with no object (negatives, kept): {self.train.negatives} train, "
                         f"{self.val.negatives} val")
        parts += [f"warning: {message}" for message in self.warnings] or ["no box repaired or dropped, every image "
                                                                          "decodes"]
        if self.histogram is not None:
            parts.append(f"box sizes:     {self.histogram}")
        if self.samples:
            parts.append(f"train samples: {self.samples[0].parent} ({len(self.samples)} images, ground truth drawn "
                         "after the training augmentation)")
        return "\n".join(parts)


def check_dataset(data, output: str | Path, num_images: int = 16, exist_ok: bool = False) -> CheckReport:
    """Read ``data`` (a ``DetectionDataModule``) as training would, count, draw and write into ``output``.

    The files it would write are checked first (``detector.overwrite``): never a file of the dataset, a checkpoint,
    an annotation or label file; an existing one only with ``exist_ok`` (:class:`OptionError` otherwise)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data.prepare_data()
        data.setup("fit")
        train, val = data.train_dataset, data.val_dataset
        counts = [split_counts(dataset, data.num_classes) for dataset in (train, val)]
        output = Path(output)
        check_outputs(data, output, sample_indices(len(train), num_images), exist_ok)
        output.mkdir(parents=True, exist_ok=True)
        samples = write_train_samples(train, output / SAMPLES_FOLDER, num_images)
        unreadable = unreadable_files(train) + unreadable_files(val)  # its warnings (an image's size) reported too
    messages = list(dict.fromkeys(str(w.message) for w in caught))  # each once
    report = CheckReport(data.class_names, counts[0], counts[1], messages)
    report.warnings += [f"{file}: cannot be decoded" for file in unreadable]
    report.histogram = write_histograms(report, output / HISTOGRAM_FILE)
    report.samples = samples
    return report


def split_counts(dataset: DetectionDataset, num_classes: int) -> SplitCounts:
    """Counts from the annotations alone (no image decoded)."""
    class_images = np.zeros(num_classes, dtype=np.int64)
    class_boxes = np.zeros(num_classes, dtype=np.int64)
    sizes, negatives = [], 0
    for ann in dataset.annotations:
        negatives += len(ann.labels) == 0 and len(ann.crowd_labels) == 0
        labels = np.asarray(ann.labels, dtype=np.int64)
        class_boxes += np.bincount(labels, minlength=num_classes)
        class_images[np.unique(labels)] += 1
        boxes = np.asarray(ann.boxes, dtype=np.float32).reshape(-1, 4)
        sizes.append(boxes[:, 2:] - boxes[:, :2])  # [N, 2] width, height
    return SplitCounts(len(dataset), class_images, class_boxes, np.concatenate(sizes) if sizes else np.zeros((0, 2)),
                       int(negatives))


def unreadable_files(dataset: DetectionDataset) -> list[str]:
    """The image files of ``dataset`` that do not decode (each one read once, without the transform)."""
    bad = []
    for index in range(len(dataset)):
        try:
            dataset.load(index)
        except ImageReadError:
            bad.append(str(dataset.annotations[index].file))
    return bad


def draw_ground_truth(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                      class_names: list[str]) -> np.ndarray:
    """A copy of the RGB ``image`` with each xyxy box (in the image's pixels) and its class name drawn."""
    out = image.copy()
    for box, label in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(labels).tolist()):
        x1, y1, x2, y2 = (int(round(v)) for v in box.tolist())
        color = class_color(int(label))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, 1)
        draw_label(out, class_names[int(label)], x1, y1, color)
    return out


def sample_indices(length: int, num_images: int) -> list[int]:
    """The training images drawn: ``num_images`` indices spread over a split of ``length``."""
    return np.linspace(0, length - 1, min(num_images, length)).round().astype(int).tolist()


def sample_name(index: int) -> str:
    return f"{index:06d}.png"


def check_outputs(data, output: Path, indices: list[int], exist_ok: bool) -> None:
    """The overwrite rule for ``--output``: the files check writes there, against the dataset's files (the
    annotations' images and the data options naming files)."""
    options = [value for value in vars(data).values() if isinstance(value, (str, Path)) and Path(value).is_file()]
    images = [ann.file for dataset in (data.train_dataset, data.val_dataset) for ann in dataset.annotations]
    guard = Outputs([*options, *images], exist_ok, OptionError)
    names = [output / HISTOGRAM_FILE, *(output / SAMPLES_FOLDER / sample_name(i) for i in indices)]
    guard.check_all("--output", names, output)


def write_train_samples(dataset: DetectionDataset, folder: Path, num_images: int) -> list[Path]:
    """``num_images`` training images spread over the split, augmented (``dataset[i]``), boxes drawn, as PNG (each
    written through a temporary file)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in sample_indices(len(dataset), num_images):
        item = dataset[index]
        image = item["image"].permute(1, 2, 0).numpy()  # [3, S, S] -> [S, S, 3] RGB uint8 (float32: colour_float)
        image = image if image.dtype == np.uint8 else np.rint(image.clip(0, 255)).astype(np.uint8)
        drawn = draw_ground_truth(image, item["boxes"].numpy(), item["labels"].numpy(), dataset.class_names)
        path = folder / sample_name(index)
        write_bytes(path, cv2.imencode(".png", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))[1].tobytes())
        paths.append(path)
    return paths


def write_histograms(report: CheckReport, path: Path) -> Path:
    """Box width, height and aspect ratio (width / height) histograms of train and val (:func:`histogram_figure`),
    in one PNG."""
    from detector.plots import pyplot

    plt = pyplot()
    figure = histogram_figure(report)
    with replacing(path) as temporary:
        figure.savefig(temporary, dpi=80)
    plt.close(figure)
    return path


def histogram_figure(report: CheckReport):
    """The figure of :func:`write_histograms`: three panels, train and val overlaid (the caller saves and closes
    it)."""
    from detector.plots import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, counts in (("train", report.train), ("val", report.val)):
        width, height = counts.sizes[:, 0], counts.sizes[:, 1]
        values = (width, height, np.log2(width / np.maximum(height, 1e-6)))
        for axis, value in zip(axes, values):
            if len(value):
                axis.hist(value, bins=40, alpha=0.6, label=f"{name} ({len(value)} boxes)")
    for axis, title in zip(axes, ("box width (original pixels)", "box height (original pixels)",
                                  "log2 aspect ratio (width / height)")):
        axis.set_title(title)
        axis.legend()
    figure.tight_layout()
    return figure


def default_output(dataset: str, root: str | None, train_json: str | None) -> Path:
    """``runs/check/<dataset name>``: the root's name (a YAML's stem), the train json's stem, or the format
    (the command numbers it, ``<name>2``, ..., when it exists: ``detector.overwrite.numbered``)."""
    if root:
        name = Path(root).stem if dataset == "yolo" else Path(root).resolve().name
    elif train_json:
        name = json_data_name(train_json)
    else:
        name = dataset
    return Path("runs") / "check" / name
