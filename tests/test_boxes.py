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
