"""Evaluation: COCOeval and VOC07 mAP against hand cases (a duplicate, an IoU-0.6 detection, image-id subsets,
gapped category ids), the results writer, and the DDP gather with two ranks that both saw one image."""
import contextlib
import io
import json
import pytest
import torch
from pycocotools.coco import COCO
import numpy as np

from helpers.datasets import annotation, make_coco
from helpers.datasets import annotation, det, make_coco

from detector import evaluation as evaluation_lib
from detector.evaluation import Evaluator, coco_evaluate, detections_to_coco, gather_detections, voc07_map
from detector.evaluation import (CocoResult, coco_evaluate, detections_to_coco, format_table, voc07_map,
                                 _ap_11_point, _ap_all_point)


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


# hand cases ---------------------------------------------------------------------------------------------------------

def voc_hand_case():
    """Class 'car' (id 3): two objects on image 1; detections: hit A (0.9), duplicate of A (0.8), a box of IoU 0.6
    with B (0.7). Class 'bus' (id 8): one object on image 2, found at 0.5 after a miss at 0.6."""
    images = [{"id": 1, "width": 200, "height": 200}, {"id": 2, "width": 200, "height": 200}]
    anns = [annotation(1, 1, 3, [0, 0, 50, 50]), annotation(2, 1, 3, [100, 100, 50, 50]),
            annotation(3, 2, 8, [20, 20, 60, 60])]
    # IoU 0.6 with B: same height, shifted right by d: (50 - d) / (50 + d) = 0.6 -> d = 12.5
    results = [det(1, 3, [0, 0, 50, 50], 0.9), det(1, 3, [1, 0, 50, 50], 0.8), det(1, 3, [112.5, 100, 50, 50], 0.7),
               det(2, 8, [150, 150, 20, 20], 0.6), det(2, 8, [20, 20, 60, 60], 0.5)]
    return make_coco(images, anns, [{"id": 3, "name": "car"}, {"id": 8, "name": "bus"}]), results


def test_voc07_duplicate_and_iou_0_6_detection_per_class():
    gt, results = voc_hand_case()
    voc = voc07_map(gt, results)
    # car: TP (p 1, r .5), duplicate FP (p .5, r .5), IoU-0.6 TP (p 2/3, r 1): 11-point = (6 * 1 + 5 * 2/3) / 11
    car = (6 * 1.0 + 5 * 2 / 3) / 11
    # bus: FP (p 0, r 0), TP (p 1/2, r 1): every recall threshold reaches precision 1/2
    bus = 0.5
    assert voc["AP50_11pt/car"] == pytest.approx(car)
    assert voc["AP50_11pt/bus"] == pytest.approx(bus)
    assert voc["mAP50_11pt"] == pytest.approx((car + bus) / 2)
    assert voc["mAP50_allpt"] == pytest.approx(((0.5 + 0.5 * 2 / 3) + 0.5) / 2)
    strict = voc07_map(gt, results, iou_threshold=0.7)  # the IoU-0.6 box is now a false positive
    assert strict["AP50_11pt/car"] == pytest.approx(6 / 11)
    assert voc07_map(gt, results, iou_threshold=0.6)["AP50_11pt/car"] == pytest.approx(car)  # >= threshold counts


def test_voc07_detection_on_an_image_without_objects_of_its_class_is_a_false_positive():
    gt, results = voc_hand_case()
    extra = results + [det(2, 3, [0, 0, 50, 50], 0.95)]  # a car on image 2, which has only a bus
    # (p, r) after each: (0, 0), (1/2, 1/2), (1/3, 1/2), (1/2, 1): the best precision at every recall is 1/2
    assert voc07_map(gt, extra)["AP50_11pt/car"] == pytest.approx(0.5)


def test_voc07_image_subset_and_empty_results():
    gt, results = voc_hand_case()
    only_2 = voc07_map(gt, results, image_ids=[2])
    assert only_2["AP50_11pt/bus"] == pytest.approx(0.5)
    assert only_2["AP50_11pt/car"] == 0.0  # no car object on image 2: nothing to recall
    # a class with detections but no object on the chosen images scores 0, not NaN
    no_cars = voc07_map(gt, results + [det(2, 3, [0, 0, 50, 50], 0.95)], image_ids=[2])
    assert no_cars["AP50_11pt/car"] == 0.0 and no_cars["mAP50_allpt"] == pytest.approx(0.25)
    empty = voc07_map(gt, [])
    assert empty["mAP50_11pt"] == 0.0 and empty["mAP50_allpt"] == 0.0


def test_ap_interpolations_by_hand():
    recall, precision = np.array([0.25, 0.25, 0.75]), np.array([1.0, 0.5, 2 / 3])
    # 11 points: t in 0..0.2 -> 1 (3 points), 0.3..0.7 -> 2/3 (5 points), 0.8..1 -> 0 (3 points)
    assert _ap_11_point(recall, precision) == pytest.approx((3 * 1 + 5 * 2 / 3) / 11)
    assert _ap_all_point(recall, precision) == pytest.approx(0.25 * 1 + 0.5 * 2 / 3)


def two_image_dataset():
    images = [{"id": 7, "width": 100, "height": 80}, {"id": 9, "width": 64, "height": 64}]
    anns = [annotation(1, 7, 90, [10, 10, 30, 20]), annotation(2, 9, 90, [5, 5, 40, 40]),
            annotation(3, 9, 2, [30, 30, 20, 20])]
    return make_coco(images, anns, [{"id": 2, "name": "bicycle"}, {"id": 90, "name": "toothbrush"}])


def test_coco_evaluate_restricts_to_the_given_image_ids():
    gt = two_image_dataset()
    results = [det(7, 90, [10, 10, 30, 20], 0.9)]  # image 7 perfect, image 9 missed entirely
    assert coco_evaluate(gt, results, image_ids=[7, 7]).metrics["AP"] == pytest.approx(1.0)
    everything = coco_evaluate(gt, results)
    assert everything.metrics["AP"] < 0.6  # toothbrush recall 1/2, bicycle never found
    assert everything.per_class["bicycle"] == 0.0
    # toothbrush: precision 1 up to recall 0.5, 0 beyond, at every IoU threshold: 51 of 101 recall points
    assert everything.per_class["toothbrush"] == pytest.approx(51 / 101)
    subset = coco_evaluate(gt, results, image_ids=[7]).per_class
    assert subset["toothbrush"] == pytest.approx(1.0) and np.isnan(subset["bicycle"])  # no bicycle on image 7


def test_per_class_ap_counts_up_to_100_detections_per_image():
    anns = [annotation(i + 1, 1, 5, [20 * (i % 6), 30 * (i // 6), 10, 10]) for i in range(12)]  # 12 objects
    gt = make_coco([{"id": 1, "width": 200, "height": 200}], anns, [{"id": 5, "name": "coin"}])
    results = [det(1, 5, a["bbox"], 0.9 - 0.01 * i) for i, a in enumerate(anns)]
    result = coco_evaluate(gt, results)
    assert result.metrics["AP"] == pytest.approx(1.0)
    assert result.per_class["coin"] == pytest.approx(1.0)  # maxDets 100, not 1 or 10
    # the PR curve too: at 10 detections per image recall would stop at 10/12 and precision be 0 beyond it
    np.testing.assert_array_equal(result.pr50["coin"], np.ones(101))


def test_coco_summary_and_table_name_each_metric():
    gt = two_image_dataset()
    result = coco_evaluate(gt, [det(7, 90, [10, 10, 30, 20], 0.9), det(9, 2, [30, 30, 20, 20], 0.8)])
    assert result.summary.count("Average Precision") == 6
    table = format_table(result, "title line")
    lines = table.splitlines()
    assert lines[0] == "title line" and "AP_large" in lines[1]
    assert lines[2].split()[0] == f"{100 * result.metrics['AP']:.2f}"
    assert "per-class AP:" in table and "toothbrush" in table
    no_title = format_table(CocoResult({name: 0.5 for name in ("AP", "AP50", "AP75", "AP_small", "AP_medium",
                                                                 "AP_large")}))
    assert no_title.splitlines()[1].split() == ["50.00"] * 6 and "per-class" not in no_title


def test_no_detections_score_zero_for_every_class():
    result = coco_evaluate(two_image_dataset(), [])
    assert result.per_class == {"bicycle": 0.0, "toothbrush": 0.0}
    assert set(result.metrics.values()) == {0.0}
    # the PR curves: precision 0 at COCOeval's 101 recall thresholds, as a run with detections gives them
    assert sorted(result.pr50) == ["bicycle", "toothbrush"]
    assert all(curve.shape == (101,) and not curve.any() for curve in result.pr50.values())


def test_voc07_without_classes_and_annotations_without_iscrowd():
    empty = voc07_map(make_coco([{"id": 1, "width": 10, "height": 10}], [], []), [])
    assert empty == {"mAP50_11pt": 0.0, "mAP50_allpt": 0.0}
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100}]  # no iscrowd key
    gt = make_coco([{"id": 1, "width": 50, "height": 50}], anns, [{"id": 1, "name": "thing"}])
    assert voc07_map(gt, [det(1, 1, [0, 0, 10, 10], 0.8)])["mAP50_11pt"] == pytest.approx(1.0)


def test_per_class_table_aligns_the_ap_column():
    result = CocoResult({name: 0.0 for name in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")},
                        {"a": 0.5, "toothbrush": 0.25})
    lines = format_table(result).splitlines()
    rows = lines[lines.index("per-class AP:") + 1:]
    assert rows == ["  a            50.00", "  toothbrush   25.00"]


def test_detections_to_coco_rounds_boxes_to_2_and_scores_to_5_decimals():
    out = detections_to_coco(torch.tensor([1]), torch.tensor([[[1.23456, 2.0, 4.56789, 3.0]]]),
                             torch.tensor([[0.123456789]]), torch.tensor([[0]]), [3])
    assert out[0]["bbox"] == pytest.approx([1.23, 2.0, 3.33, 1.0], abs=1e-6) and out[0]["score"] == 0.12346


def test_detections_to_coco_gapped_category_ids_and_min_score():
    boxes = torch.tensor([[[10.0, 20.0, 40.0, 60.0], [0.0, 0.0, 5.0, 5.0], [1, 1, 2, 2]],
                          [[3.0, 4.0, 13.0, 24.0], [0, 0, 1, 1], [0, 0, 1, 1]]])
    scores = torch.tensor([[0.9, 0.2, 0.05], [0.7, 0.1, 0.0]])
    labels = torch.tensor([[2, 0, 1], [1, 0, 0]])
    out = detections_to_coco(torch.tensor([11, 42]), boxes, scores, labels, category_ids=[1, 7, 90], min_score=0.1)
    assert [(r["image_id"], r["category_id"], r["score"]) for r in out] == [(11, 90, 0.9), (11, 1, 0.2), (42, 7, 0.7)]
    assert out[0]["bbox"] == [10.0, 20.0, 30.0, 40.0] and out[2]["bbox"] == [3.0, 4.0, 10.0, 20.0]
    assert len(detections_to_coco(torch.tensor([11, 42]), boxes, scores, labels, [1, 7, 90])) == 5  # default: > 0


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


def test_a_metric_of_zero_prints_as_zero_and_no_value_as_a_dash():
    from detector.evaluation import _percent

    assert [_percent(v) for v in (0.0, 0.1234, 1.0, -1.0, float("nan"))] == ["0.00", "12.34", "100.00", "-", "-"]


def test_an_image_whose_declared_size_is_missing_or_zero_keeps_its_real_pixels():
    """Only a declared width and height both given rescale the boxes: an entry with a height of 0 (or none) leaves
    them in the file's pixels rather than squashing them to a zero height."""
    gt = make_coco([{"id": 9, "width": 64, "height": 0}], [annotation(1, 9, 3, [5, 5, 20, 20])],
                   [{"id": 3, "name": "a"}])
    detections = {"boxes": torch.tensor([[[5.0, 5, 25, 25]]]), "scores": torch.tensor([[0.9]]),
                  "labels": torch.tensor([[0]])}
    evaluator = Evaluator(gt, category_ids=[3])
    evaluator.update(torch.tensor([9]), detections, image_sizes=torch.tensor([[32.0, 32]]))
    assert [r["bbox"] for r in evaluator.results] == [[5.0, 5.0, 20.0, 20.0]]


def test_an_evaluation_result_counts_no_image_unless_told():
    from detector.evaluation import EvalResult

    coco = CocoResult({name: 0.0 for name in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")})
    assert EvalResult(coco).metrics["images"] == 0.0 and EvalResult(coco, images=3).metrics["images"] == 3.0
