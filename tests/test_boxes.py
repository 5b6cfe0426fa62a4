"""The box conversions, clipping, area and IoU: round trips, and every function against hand values (the round
trips alone cannot see a bug shared by a pair)."""
import torch

from detector.boxes import (area_xyxy, clip_xyxy, cxcywh_to_xyxy, iou_xyxy, matched_iou_xyxy, xywh_to_xyxy,
                            xyxy_to_cxcywh, xyxy_to_xywh)


def random_xyxy(n):
    xy = torch.rand(n, 2) * 100
    return torch.cat([xy, xy + torch.rand(n, 2) * 50 + 0.1], dim=1)


def test_conversions_round_trip():
    boxes = random_xyxy(50)
    assert torch.allclose(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes, atol=1e-5)
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes, atol=1e-5)
    assert torch.equal(xyxy_to_xywh(torch.tensor([[1.0, 2.0, 4.0, 8.0]])), torch.tensor([[1.0, 2.0, 3.0, 6.0]]))


def test_iou_matches_a_plain_formula():
    a, b = random_xyxy(7), random_xyxy(5)
    ious = iou_xyxy(a, b)
    for i in range(7):
        for j in range(5):
            w = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            h = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            inter = w * h
            union = float(area_xyxy(a[i]) + area_xyxy(b[j])) - inter
            assert abs(float(ious[i, j]) - inter / union) < 1e-5
    assert torch.allclose(matched_iou_xyxy(a[:5], b), ious[:5].diagonal(), atol=1e-6)


def test_clip_keeps_boxes_inside_per_image_sizes():
    boxes = torch.tensor([[[-5.0, -5.0, 200.0, 50.0]], [[10.0, 10.0, 20.0, 300.0]]])
    clipped = clip_xyxy(boxes, torch.tensor([[100.0], [50.0]]), torch.tensor([[40.0], [60.0]]))
    assert torch.equal(clipped, torch.tensor([[[0.0, 0.0, 100.0, 40.0]], [[10.0, 10.0, 20.0, 60.0]]]))


# hand values --------------------------------------------------------------------------------------------------------

def test_conversions_hand_values_keep_shape_and_dtype():
    xyxy = torch.tensor([[[1.0, 2.0, 4.0, 8.0]]], dtype=torch.float64)  # [1, 1, 4]
    assert torch.equal(xyxy_to_xywh(xyxy), torch.tensor([[[1.0, 2.0, 3.0, 6.0]]], dtype=torch.float64))
    assert torch.equal(xywh_to_xyxy(torch.tensor([[[1.0, 2.0, 3.0, 6.0]]], dtype=torch.float64)), xyxy)
    assert torch.equal(xyxy_to_cxcywh(xyxy), torch.tensor([[[2.5, 5.0, 3.0, 6.0]]], dtype=torch.float64))
    assert torch.equal(cxcywh_to_xyxy(torch.tensor([[[2.5, 5.0, 3.0, 6.0]]], dtype=torch.float64)), xyxy)
    assert xyxy_to_cxcywh(xyxy).dtype == torch.float64 and xyxy_to_xywh(xyxy).shape == (1, 1, 4)


def test_area_hand_values_and_inverted_boxes():
    boxes = torch.tensor([[1.0, 2.0, 4.0, 8.0], [5.0, 5.0, 3.0, 9.0], [0.0, 4.0, 2.0, 1.0], [2.0, 2.0, 2.0, 7.0]])
    assert torch.equal(area_xyxy(boxes), torch.tensor([18.0, 0.0, 0.0, 0.0]))


def test_iou_hand_values():
    a = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    b = torch.tensor([[2.0, 0.0, 6.0, 4.0],  # half overlap: 8 / 24
                      [0.0, 0.0, 4.0, 4.0],  # identical
                      [4.0, 0.0, 8.0, 4.0],  # touching edge
                      [10.0, 10.0, 12.0, 12.0],  # apart
                      [1.0, 1.0, 3.0, 3.0],  # inside: 4 / 16
                      [0.0, 0.0, 2.0, 10.0]])  # narrower and taller: 8 / 28
    expected = torch.tensor([[1 / 3, 1.0, 0.0, 0.0, 0.25, 2 / 7]])
    assert torch.allclose(iou_xyxy(a, b), expected)
    assert torch.allclose(matched_iou_xyxy(a.expand(6, 4), b), expected[0])
    batched = matched_iou_xyxy(a.expand(2, 6, 4), b.expand(2, 6, 4))  # any leading shape: [2, 6, 4] -> [2, 6]
    assert batched.shape == (2, 6) and torch.allclose(batched, expected.expand(2, 6))
    assert torch.allclose(iou_xyxy(b, a), expected.T)  # symmetric: b's boxes are not square, a's is
    assert torch.allclose(matched_iou_xyxy(b, a.expand(6, 4)), expected[0])
    empty = torch.zeros(1, 4)  # two empty boxes: 0, not NaN
    assert iou_xyxy(empty, empty).item() == 0 and matched_iou_xyxy(empty, empty).item() == 0


def test_clip_every_coordinate_on_both_sides():
    boxes = torch.tensor([[-3.0, -4.0, -1.0, -2.0], [150.0, 90.0, 160.0, 95.0], [10.0, 20.0, 30.0, 40.0]])
    clipped = clip_xyxy(boxes, 100.0, 50.0)
    assert torch.equal(clipped, torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 50.0, 100.0, 50.0],
                                              [10.0, 20.0, 30.0, 40.0]]))
