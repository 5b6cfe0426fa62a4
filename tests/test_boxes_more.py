"""Every box function against hand values (the round trips alone cannot see a bug shared by a pair) (issue 12)."""
import torch

from detector.boxes import (area_xyxy, clip_xyxy, cxcywh_to_xyxy, iou_xyxy, matched_iou_xyxy, xywh_to_xyxy,
                            xyxy_to_cxcywh, xyxy_to_xywh)


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
