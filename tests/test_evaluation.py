import contextlib
import io
import json

import pytest
import torch
from pycocotools.coco import COCO

from detector import evaluation as evaluation_lib
from detector.evaluation import Evaluator, coco_evaluate, detections_to_coco, gather_detections, voc07_map


def make_coco(images, annotations, categories):
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def annotation(ann_id, image_id, category_id, bbox, crowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "area": bbox[2] * bbox[3], "iscrowd": crowd}


def border_dataset():
    images = [{"id": 7, "width": 100, "height": 80}, {"id": 9, "width": 64, "height": 64}]
    cats = [{"id": 3, "name": "cat"}, {"id": 17, "name": "dog"}]
    anns = [annotation(1, 7, 3, [0, 0, 30, 20]),  # top-left corner
            annotation(2, 7, 17, [60, 50, 40, 30]),  # bottom-right corner
            annotation(3, 9, 3, [10, 10, 20, 20]),
            annotation(4, 9, 17, [0, 30, 64, 34])]  # full width, bottom border
    return make_coco(images, anns, cats)


def test_ground_truth_as_detections_scores_one():
    gt = border_dataset()
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt.dataset["annotations"]]
    result = coco_evaluate(gt, results)
    assert result.metrics["AP"] == pytest.approx(1.0)
    assert result.metrics["AP50"] == pytest.approx(1.0)
    assert result.per_class == pytest.approx({"cat": 1.0, "dog": 1.0})


def test_detections_to_coco_maps_labels_to_category_ids_and_xywh():
    out = detections_to_coco(torch.tensor([7]), torch.tensor([[[60.0, 50.0, 100.0, 80.0], [0, 0, 1, 1]]]),
                             torch.tensor([[0.9, 0.0]]), torch.tensor([[1, 0]]), category_ids=[3, 17])
    assert out == [{"image_id": 7, "category_id": 17, "bbox": [60.0, 50.0, 40.0, 30.0], "score": 0.9}]


def hand_case(with_difficult):
    """Two objects; detections: hit (0.9), miss (0.8), hit (0.7). Optionally a difficult object found at 0.95."""
    anns = [annotation(1, 1, 1, [10, 10, 40, 40]), annotation(2, 1, 1, [100, 100, 50, 30])]
    results = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9},
               {"image_id": 1, "category_id": 1, "bbox": [150, 10, 30, 30], "score": 0.8},
               {"image_id": 1, "category_id": 1, "bbox": [100, 100, 50, 30], "score": 0.7}]
    if with_difficult:
        anns.append(annotation(3, 1, 1, [10, 120, 40, 40], crowd=1))
        results.append({"image_id": 1, "category_id": 1, "bbox": [10, 120, 40, 40], "score": 0.95})
    gt = make_coco([{"id": 1, "width": 200, "height": 200}], anns, [{"id": 1, "name": "thing"}])
    return gt, results


@pytest.mark.parametrize("with_difficult", [False, True])
def test_hand_computed_precision_recall(with_difficult):
    gt, results = hand_case(with_difficult)
    # precision/recall after each detection: (1, 0.5), (0.5, 0.5), (2/3, 1). Interpolated precision is 1 up to
    # recall 0.5 and 2/3 above it. COCO: 101 recall points, 51 of them <= 0.5.
    expected_coco = (51 * 1.0 + 50 * 2 / 3) / 101
    result = coco_evaluate(gt, results)
    assert result.metrics["AP"] == pytest.approx(expected_coco, abs=1e-6)
    assert result.metrics["AP50"] == pytest.approx(expected_coco, abs=1e-6)
    voc = voc07_map(gt, results)
    assert voc["mAP50_11pt"] == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)  # recall points 0..0.5 and 0.6..1
    assert voc["mAP50_allpt"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_no_detections_scores_zero():
    result = coco_evaluate(border_dataset(), [])
    assert result.metrics["AP"] == 0.0


def test_gather_counts_each_image_once(monkeypatch):
    """Two ranks (all_gather faked): the sampler padded rank 1 with image 1, which rank 0 also evaluated."""
    rank0 = ([{"image_id": 1, "score": 0.5}, {"image_id": 1, "score": 0.3}, {"image_id": 4, "score": 0.4}], [1, 4])
    rank1 = ([{"image_id": 3, "score": 0.6}, {"image_id": 1, "score": 0.9}], [3, 1])
    dist = evaluation_lib.dist
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)

    def all_gather_object(parts, obj):
        assert obj == rank0 and len(parts) == 2  # this process is rank 0
        parts[:] = [rank0, rank1]

    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)
    merged, ids = gather_detections(*rank0)
    assert ids == [1, 3, 4]
    assert merged == rank0[0] + rank1[0][:1]  # image 1 once, with rank 0's two detections; rank 1's copy dropped


def test_evaluator_counts_a_repeated_image_once_and_writes_results(tmp_path):
    gt, _ = hand_case(with_difficult=False)
    boxes = torch.tensor([[[10.0, 10, 50, 50], [100, 100, 150, 130]]])  # xyxy original pixels: both objects
    detections = {"boxes": boxes, "scores": torch.tensor([[0.9, 0.7]]), "labels": torch.tensor([[0, 0]])}
    evaluator = Evaluator(gt, category_ids=[1], voc07=True, results_path=tmp_path / "out" / "dets.json")
    evaluator.update(torch.tensor([1]), detections)
    decoy = {"boxes": boxes + 500, "scores": torch.tensor([[0.99, 0.98]]), "labels": torch.tensor([[0, 0]])}
    evaluator.update(torch.tensor([1]), decoy)  # the sampler's repeat of image 1: ignored
    evaluator.synchronize()
    result = evaluator.compute()
    assert result.images == 1 and result.metrics["images"] == 1.0
    assert result.metrics["AP50"] == pytest.approx(1.0) and result.voc["mAP50_11pt"] == pytest.approx(1.0)
    assert result.metrics["mAP50_voc07"] == pytest.approx(1.0)
    written = json.loads((tmp_path / "out" / "dets.json").read_text())
    assert [r["score"] for r in written] == [0.9, 0.7]
    assert "mAP50_voc07: 100.00" in result.table("title")


def test_evaluator_without_voc07_reports_coco_only():
    gt, results = hand_case(with_difficult=False)
    evaluator = Evaluator(gt, category_ids=[1])
    evaluator.update(torch.tensor([1]), {"boxes": torch.zeros(1, 1, 4), "scores": torch.zeros(1, 1),
                                         "labels": torch.zeros(1, 1, dtype=torch.int64)})
    evaluator.synchronize()
    result = evaluator.compute()
    assert result.voc is None and "mAP50_voc07" not in result.metrics and result.metrics["AP"] == 0.0


def test_detections_of_an_image_whose_file_disagrees_with_its_declared_size_are_scored_in_the_declared_frame():
    # The json declares 100x80; the file is 200x160: the reader rescaled the boxes to the file, the detections come
    # back in the file's pixels, and the metric must score them against the json's boxes (the declared frame).
    gt = make_coco([{"id": 7, "width": 100, "height": 80}, {"id": 9, "width": 64, "height": 64}],
                   [annotation(1, 7, 3, [10, 10, 30, 20]), annotation(2, 9, 3, [5, 5, 20, 20])], [{"id": 3, "name": "a"}])
    boxes = torch.tensor([[[20.0, 20, 80, 60]], [[5.0, 5, 25, 25]]])  # image 7 in file pixels (x2); image 9 as is
    detections = {"boxes": boxes, "scores": torch.tensor([[0.9], [0.8]]), "labels": torch.tensor([[0], [0]])}
    evaluator = Evaluator(gt, category_ids=[3])
    evaluator.update(torch.tensor([7, 9]), detections, image_sizes=torch.tensor([[200.0, 160], [64, 64]]))
    evaluator.synchronize()
    result = evaluator.compute()
    assert result.metrics["AP"] == pytest.approx(1.0)
    assert [r["bbox"] for r in evaluator.results] == [[10.0, 10.0, 30.0, 20.0], [5.0, 5.0, 20.0, 20.0]]
