"""Drawing (``detector/visualize.py``): class colours, boxes and labels, the heatmap overlay and the prediction grid."""
import numpy as np
import pytest
import torch

from helpers.checkpoints import CLASS_NAMES, INPUT_SIZE
from helpers.images import make_image

from detector.detections import Detections
from detector.visualize import class_color, draw_detections, heatmap_overlay, prediction_grid


def one_detection(label=1, box=(10.0, 20.0, 60.0, 70.0), score=0.9):
    return Detections(np.array([box], dtype=np.float32), np.array([score], dtype=np.float32),
                      np.array([label]), np.array([CLASS_NAMES[label]]))


def test_class_colours_are_stable_and_distinct():
    colours = [class_color(i) for i in range(10)]
    assert colours == [class_color(i) for i in range(10)] and len(set(colours)) == 10
    assert all(0 <= c <= 255 for colour in colours for c in colour)


def test_draw_detections_draws_the_class_colour_on_the_box_and_leaves_the_input(tmp_path):
    image = np.zeros((100, 120, 3), dtype=np.uint8)
    drawn = draw_detections(image, one_detection(label=1))
    assert image.max() == 0
    assert tuple(drawn[45, 10]) == class_color(1) and tuple(drawn[70, 35]) == class_color(1)  # left, bottom edges
    assert drawn[45, 35].max() == 0  # inside the box


def test_a_tracked_box_shows_its_id_before_the_class_name():
    plain = one_detection(label=1, box=(10.0, 40.0, 110.0, 90.0))
    tracked = Detections(plain.boxes, plain.scores, plain.labels, plain.names, np.array([12]))
    blank = np.zeros((100, 160, 3), dtype=np.uint8)

    def label_width(drawn):  # the label's filled box: the class colour in the rows above the box's top edge
        columns = np.flatnonzero((drawn[25:38] == class_color(1)).all(axis=2).any(axis=0))
        return columns.max() - columns.min()

    assert label_width(draw_detections(blank, tracked)) > label_width(draw_detections(blank, plain)) + 15


def test_heatmap_overlay_maps_the_input_grid_back_to_the_image():
    image = np.zeros((60, 120, 3), dtype=np.uint8)
    heat = np.zeros((3, INPUT_SIZE // 4, INPUT_SIZE // 4), dtype=np.float32)
    heat[2, 7, 31] = 1.0  # cell of the right end of the 120x60 image letterboxed to 128x64 (rows 16.. are padding)
    overlay = heatmap_overlay(image, heat, INPUT_SIZE)
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    hot = np.unravel_index(np.argmax(overlay[..., 0].astype(int) - overlay[..., 2]), overlay.shape[:2])
    assert abs(hot[0] - 30) <= 3 and hot[1] >= 112


def test_prediction_grid_tiles_images_with_their_detections():
    images = [make_image(90, 140), make_image(120, 100, seed=1), make_image(64, 64, seed=2)]
    detections = [one_detection(0), {"boxes": torch.tensor([[5.0, 5.0, 50.0, 40.0]]), "scores": torch.tensor([0.8]),
                                     "labels": torch.tensor([2])}, one_detection(1, score=0.1)]
    grid = prediction_grid(images, detections, CLASS_NAMES, tile=128)
    assert grid.shape == (256, 256, 3) and grid.dtype == np.uint8
    assert (grid[128:, 128:] == 0).all()  # the fourth cell is empty
    colours = {tuple(p) for p in grid.reshape(-1, 3)}
    assert class_color(0) in colours and class_color(2) in colours and class_color(1) not in colours  # 0.1 < conf
    assert prediction_grid(images * 4, detections * 4, CLASS_NAMES, max_images=8, tile=64).shape == (192, 192, 3)
    with pytest.raises(ValueError, match="at least one image"):
        prediction_grid([], [], CLASS_NAMES)
