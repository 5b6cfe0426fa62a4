"""bench/peer_train.py's own arithmetic: the YOLO labels it writes for the peer (normalised by the image's real size,
crowd boxes left out), the epochs of the equal wall-clock row, and the table's mean ± spread over seeds."""
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "peer_train.py"
_spec = importlib.util.spec_from_file_location("bench_peer_train", SCRIPT)  # bench/ is no package of the install
peer_train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peer_train)


def annotation(boxes, labels, width, height, crowd=((0, 0, 5, 5),)):
    return SimpleNamespace(boxes=np.array(boxes, dtype=np.float32), labels=np.array(labels), width=width,
                           height=height, crowd_boxes=np.array(crowd, dtype=np.float32))


def test_yolo_labels_are_centre_and_size_over_the_real_image_size_without_crowd_boxes():
    boxes = [(10, 20, 50, 60), (0, 0, 100, 200)]
    assert peer_train.yolo_label_lines(annotation(boxes, [2, 0], 100, 200), 100, 200) == [
        "2 0.300000 0.200000 0.400000 0.200000", "0 0.500000 0.500000 1.000000 1.000000"]
    # an xml declaring half the real size: its boxes are scaled to the pixels, as the reader does
    halved = [(5, 10, 25, 30), (0, 0, 50, 100)]
    assert peer_train.yolo_label_lines(annotation(halved, [2, 0], 50, 100), 100, 200) == [
        "2 0.300000 0.200000 0.400000 0.200000", "0 0.500000 0.500000 1.000000 1.000000"]


def row(arm, seed, epochs, train_s, AP=10.0, budget=24):
    return {"arm": arm, "seed": seed, "epochs": epochs, "budget_epochs": budget, "train_s": train_s, "AP": AP,
            "AP50": 2 * AP, "images_per_s": 100.0, "threads": 1 if arm == "peer" else 2, "imgsz": 256, "batch": 16,
            "checkpoint": "best"}


def test_equal_time_epochs_fill_the_peers_mean_time_at_our_mean_seconds_per_epoch():
    rows = [row("peer", 0, 24, 60.0), row("peer", 1, 24, 80.0), row("ours", 0, 24, 120.0), row("ours", 1, 24, 168.0),
            row("ours", 0, 12, 10.0, budget=12)]  # other settings: not counted
    assert peer_train.equal_time_epochs(rows, 24) == 12  # 70 s / 6 s per epoch (5 and 7) = 11.7
    assert peer_train.equal_time_epochs([r for r in rows if r["arm"] != "peer"], 24) is None
    assert peer_train.equal_time_epochs([row("peer", 0, 24, 1.0), row("ours", 0, 24, 240.0)], 24) == 1


def test_the_table_gives_mean_and_spread_over_seeds_per_side():
    rows = [row("peer", 0, 24, 60.0, AP=5.0), row("peer", 1, 24, 80.0, AP=7.0), row("ours", 0, 24, 120.0, AP=4.0),
            row("ours@peer-time", 0, 13, 65.0, AP=3.0)]
    lines = peer_train.summary(rows).splitlines()
    assert len(lines) == 5 and "| 0,1 | 6.0 ± 1.4 | 12.0 ± 2.8 | 70 ± 14 |" in lines[2]
    assert "| 1 |" in lines[2] and "| 2 |" in lines[3]  # the torch threads of each side
    assert "peer's wall time" in lines[4] and "| 256 px, 13, 16 |" in lines[4]  # the scaled epochs are shown
    assert peer_train.mean_spread([1.0]) == "1.0 ± 0.0"
