"""Prediction files (``detector/results.py``): the MOTChallenge tracks format by hand (frames from 1, xywh in
pixels, the id), written through a temporary file; ``track_id`` in the COCO-style results of tracked detections.
The COCO and YOLO formats against the API are in ``test_demo_outputs.py``."""
import numpy as np
import pytest

from detector.detections import Detections
from detector.results import MotWriter, coco_results, mot_lines


def tracked():
    """Two tracked boxes: id 7 at (10, 20)-(50, 60), id 3 at (0.5, 1.25)-(100.5, 41.25)."""
    return Detections(np.array([[10, 20, 50, 60], [0.5, 1.25, 100.5, 41.25]], dtype=np.float32),
                      np.array([0.75, 0.125], dtype=np.float32), np.array([2, 0]), np.array(["bird", "cat"]),
                      np.array([7, 3]))


def test_mot_lines_by_hand():
    assert mot_lines(tracked(), 1) == ["1,7,10.00,20.00,40.00,40.00,0.75000,-1,-1,-1",
                                       "1,3,0.50,1.25,100.00,40.00,0.12500,-1,-1,-1"]
    untracked = Detections(tracked().boxes, tracked().scores, tracked().labels, tracked().names)
    with pytest.raises(ValueError, match="tracked detections"):
        mot_lines(untracked, 1)


def test_the_mot_file_appears_complete_when_closed(tmp_path):
    path = tmp_path / "tracks.txt"
    writer = MotWriter(path)
    writer.write(tracked(), 1)
    writer.write(tracked().select(np.array([False, True])), 2)
    assert not path.exists()  # written beside it, renamed by close
    writer.close()
    rows = [line.split(",") for line in path.read_text().splitlines()]
    assert [(r[0], r[1]) for r in rows] == [("1", "7"), ("1", "3"), ("2", "3")]
    assert all(len(r) == 10 and r[7:] == ["-1", "-1", "-1"] for r in rows)
    assert [p.name for p in tmp_path.iterdir()] == ["tracks.txt"]


def test_coco_results_carry_the_track_id_of_tracked_detections_only():
    rows = coco_results(tracked(), 0, [1, 3, 7], "clip.mp4", frame=0)
    assert [r["track_id"] for r in rows] == [7, 3] and [r["category_id"] for r in rows] == [7, 1]
    untracked = Detections(tracked().boxes, tracked().scores, tracked().labels, tracked().names)
    assert all("track_id" not in r for r in coco_results(untracked, 0, [1, 3, 7], "a.jpg"))
