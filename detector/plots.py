"""The files a training run or an evaluation writes beside its checkpoints, for people and for programs:

- ``results.csv``: one row per validation (:data:`RESULTS_COLUMNS`; metrics 0..1, empty where not computed),
  appended as training goes, readable with ``csv.DictReader``;
- ``results.png``: the training curves of ``results.csv`` (each training loss part and the validation AP and AP50,
  against the epoch), drawn at the end of training;
- ``PR_curve.png``: the precision-recall curve of each class at IoU 0.5 and their mean (the legend gives each
  class's AP50, the area under its curve);
- ``confusion_matrix.png`` and ``confusion_matrix.csv``: the counts of ``detector.confusion`` (rows ground truth,
  columns predicted, each with a background entry).

Takes plain values (an ``EvalResult`` read by attribute, dicts, arrays): no model, no trainer. matplotlib (Agg) is
imported when a figure is drawn, so importing this module costs nothing.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detector.overwrite import replacing

if TYPE_CHECKING:
    from detector.confusion import ConfusionMatrix
    from detector.evaluation import EvalResult

RESULTS_CSV = "results.csv"
RESULTS_PNG = "results.png"
PR_CURVE_PNG = "PR_curve.png"
CONFUSION_PNG = "confusion_matrix.png"
CONFUSION_CSV = "confusion_matrix.csv"
TRAIN_LOSSES = ("loss", "heatmap", "offset", "size")
VAL_METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "mAP50_voc07", "mAP50_allpoint")
RESULTS_COLUMNS = ("epoch", "step", "lr", *(f"train/{name}" for name in TRAIN_LOSSES),
                   *(f"val/{name}" for name in VAL_METRICS))
RESULTS_CURVES = (*(f"train/{name}" for name in TRAIN_LOSSES), "val/AP", "val/AP50")  # the panels of results.png
MAX_LEGEND_CLASSES = 20  # more classes than this: the curves without a legend, the matrix without numbers
MAX_ANNOTATED_CLASSES = 30


def results_row(epoch: int | None, step: int | None, metrics: dict[str, float],
                train_losses: dict[str, float] | None = None, lr: float | None = None) -> dict[str, str]:
    """One ``results.csv`` row: the epoch and optimiser step, the learning rate, the mean training losses since the
    previous row (``train_losses`` by :data:`TRAIN_LOSSES` name) and the validation ``metrics`` (``EvalResult.metrics``
    names). A value not given is left empty."""
    values = {"epoch": epoch, "step": step, "lr": lr, **{f"train/{k}": v for k, v in (train_losses or {}).items()},
              **{f"val/{k}": v for k, v in metrics.items()}}
    return {column: _cell(values.get(column)) for column in RESULTS_COLUMNS}


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return str(value) if isinstance(value, int) else f"{float(value):.6g}"


def append_results_row(path: str | Path, row: dict[str, str]) -> Path:
    """Append ``row`` to the csv at ``path``, writing the header first when the file is new."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=RESULTS_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)
    return path


def drop_results_from(path: str | Path, step: int) -> int:
    """Remove the rows of the csv at ``path`` from optimiser step ``step`` on (the validations of weights a resumed
    run discards: it redoes them); how many. The file is rewritten through a temporary file and a rename."""
    path = Path(path)
    if not path.is_file():
        return 0
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        fields, rows = reader.fieldnames or list(RESULTS_COLUMNS), list(reader)
    kept = [row for row in rows if not (row.get("step") or "").isdigit() or int(row["step"]) < step]
    if len(kept) < len(rows):
        temporary = path.with_name(f".{path.name}.tmp")
        with temporary.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fields)
            writer.writeheader()
            writer.writerows(kept)
        temporary.replace(path)
    return len(rows) - len(kept)


def read_results(path: str | Path) -> list[dict[str, str]]:
    """The rows of the ``results.csv`` at ``path`` (column -> text, empty where not computed)."""
    with Path(path).open(newline="") as file:
        return list(csv.DictReader(file))


def results_curves(rows: list[dict[str, str]]) -> dict[str, tuple[list[float], list[float]]]:
    """Each column of :data:`RESULTS_CURVES` as ``(epochs, values)`` over the rows that hold it (a row of an
    evaluation has no losses, a row of an old file may lack a column)."""
    curves = {}
    for column in RESULTS_CURVES:
        points = [(float(row["epoch"]), float(row[column])) for row in rows
                  if (row.get(column) or "") != "" and (row.get("epoch") or "") != ""]
        curves[column] = ([x for x, _ in points], [y for _, y in points])
    return curves


def results_figure(rows: list[dict[str, str]]):
    """The figure of ``results.png``: one panel per :data:`RESULTS_CURVES` column against the epoch, each
    validation a marker (the caller saves and closes it)."""
    plt = pyplot()
    figure, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for axis, (column, (epochs, values)) in zip(axes.flat, results_curves(rows).items()):
        axis.plot(epochs, values, marker="o", markersize=3, linewidth=1.5)
        axis.set(title=column, xlabel="epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
    return figure


def plot_results(csv_path: str | Path, path: str | Path | None = None) -> Path:
    """Draw ``results.png`` (:func:`results_figure`) of the ``results.csv`` at ``csv_path`` into ``path`` (default:
    beside it); returns its path."""
    csv_path = Path(csv_path)
    figure = results_figure(read_results(csv_path))
    return _save(pyplot(), figure, path or csv_path.with_name(RESULTS_PNG))


def save_evaluation_plots(result: EvalResult, folder: str | Path) -> list[Path]:
    """Write the PR curves and the confusion matrix (png and csv) of ``result`` into ``folder``; their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [plot_pr_curves(result.coco.pr50, folder / PR_CURVE_PNG)]
    if result.confusion is not None:
        paths += [plot_confusion_matrix(result.confusion, folder / CONFUSION_PNG),
                  result.confusion.to_csv(folder / CONFUSION_CSV)]
    return paths


def save_evaluation(result: EvalResult, folder: str | Path, epoch: int | None = None,
                    step: int | None = None) -> list[Path]:
    """One evaluation's files in ``folder``: ``results.csv`` with its one row (``epoch`` and ``step`` those of the
    checkpoint, if known) and :func:`save_evaluation_plots`; their paths."""
    path = Path(folder) / RESULTS_CSV
    with replacing(path) as temporary:  # the old file stays whole until the new one is
        append_results_row(temporary, results_row(epoch, step, result.metrics))
    return [path, *save_evaluation_plots(result, folder)]


def mean_pr_curve(curves: dict[str, np.ndarray]) -> np.ndarray | None:
    """The mean precision at each recall over the classes with ground truth (a curve of -1 has none); None if no
    class has any. Its mean is the AP50 of the COCO metric."""
    scored = [curve for curve in curves.values() if (curve > -1).any()]
    return np.mean(scored, axis=0) if scored else None


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files, no window), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(curves: dict[str, np.ndarray], path: str | Path) -> Path:
    """Draw :func:`pr_figure` into ``path``; returns it."""
    return _save(pyplot(), pr_figure(curves), path)


def pr_figure(curves: dict[str, np.ndarray]):
    """Precision against recall at IoU 0.5: one thin line per class with ground truth, the mean in bold (the caller
    saves and closes it).

    ``curves``: class name -> ``[R]`` precision at ``R`` evenly spaced recalls from 0 to 1 (``CocoResult.pr50``)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 5.5))
    scored = {name: curve for name, curve in curves.items() if (curve > -1).any()}
    for name, curve in scored.items():
        recall = np.linspace(0.0, 1.0, len(curve))
        axis.plot(recall, curve, linewidth=1, label=f"{name} {curve.mean():.3f}")
    mean = mean_pr_curve(curves)
    if mean is not None:
        axis.plot(np.linspace(0.0, 1.0, len(mean)), mean, linewidth=3, color="black",
                  label=f"all classes {mean.mean():.3f} AP50")
    axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
             title="precision-recall at IoU 0.5 (legend: AP50)")
    axis.grid(alpha=0.3)
    if mean is not None:
        handles, labels = axis.get_legend_handles_labels()
        if len(scored) > MAX_LEGEND_CLASSES:
            handles, labels = handles[-1:], labels[-1:]
        axis.legend(handles, labels, loc="lower left", fontsize=8)
    return figure


def plot_confusion_matrix(matrix: ConfusionMatrix, path: str | Path) -> Path:
    """Draw :func:`confusion_figure` into ``path``; returns it."""
    return _save(pyplot(), confusion_figure(matrix), path)


def confusion_figure(matrix: ConfusionMatrix):
    """The counts as a grid coloured by each row's fraction (what became of each ground-truth class's objects;
    the background row by its share of all false positives), with the counts written in when there are few
    classes (the caller saves and closes it)."""
    plt = pyplot()
    counts = matrix.counts
    size = counts.shape[0]
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(4 + 0.5 * size, 24)
    figure, axis = plt.subplots(figsize=(side + 1.5, side))
    image = axis.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, fraction=0.046, label="fraction of the row")
    ticks = range(size)
    axis.set_xticks(ticks, matrix.names, rotation=90 if size > 6 else 0)
    axis.set_yticks(ticks, matrix.names)
    axis.set(xlabel="predicted", ylabel="ground truth", title=f"confusion matrix: detections of score >= "
             f"{matrix.score_threshold:g} matched at IoU >= {matrix.iou_threshold:g}")
    if size <= MAX_ANNOTATED_CLASSES + 1:
        for (row, column), count in np.ndenumerate(counts):
            if count:
                axis.text(column, row, str(count), ha="center", va="center", fontsize=9,
                          color="white" if fractions[row, column] > 0.5 else "black")
    return figure


def _save(plt, figure, path: str | Path) -> Path:
    path = Path(path)
    figure.tight_layout()
    with replacing(path) as temporary:
        figure.savefig(temporary, dpi=100)
    plt.close(figure)
    return path
