import numpy as np
import pytest
import torch

from detector.boxes import iou_xyxy
from detector.decode import decode
from detector.losses import CenterNetLoss
from detector.model import CenterNet
from detector.preprocess import normalize, to_chw_tensor
from detector.targets import encode


def one_image():
    """A 128x128 noisy image with three filled shapes: two squares of class 0, a bar of class 1."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (128, 128, 3), dtype=np.uint8)
    boxes = np.array([[8, 10, 48, 50], [70, 60, 110, 100], [20, 80, 60, 120]], dtype=np.float32)
    colours = [(230, 40, 40), (230, 40, 40), (40, 200, 240)]
    for (x1, y1, x2, y2), colour in zip(boxes.astype(int), colours):
        image[y1:y2, x1:x2] = colour
    return image, torch.from_numpy(boxes), torch.tensor([0, 0, 1])


@pytest.mark.slow
def test_tiny_model_overfits_one_image():
    image, boxes, labels = one_image()
    x = normalize(to_chw_tensor(image)[None])
    model = CenterNet(num_classes=2, neck="lean", weights=None)
    criterion = CenterNetLoss()
    targets = encode(boxes[None], labels[None], torch.ones(1, 3, dtype=torch.bool), 2, (32, 32), model.stride)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(300):
        loss = criterion(model(x), targets)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < np.mean(losses[:3]) / 10, (losses[:3], losses[-10:])
    model.eval()
    with torch.no_grad():
        out = decode(model(x), k=3, stride=model.stride)
    ious = iou_xyxy(boxes, out["boxes"][0])
    best, match = ious.max(dim=1)
    assert (best >= 0.8).all(), ious
    assert torch.equal(out["labels"][0][match], labels)
