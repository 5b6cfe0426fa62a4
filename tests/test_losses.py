import numpy as np
import pytest
import torch

from detector.losses import CenterNetLoss, focal_loss, masked_l1


def numpy_focal(logits, target, alpha=2.0, beta=4.0):
    x, t = logits.astype(np.float64), target.astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    pos = t == 1
    pos_loss = ((1 - p) ** alpha * np.log(p))[pos].sum()
    neg_loss = ((1 - t) ** beta * p**alpha * np.log(1 - p))[~pos].sum()
    return -(pos_loss + neg_loss) / max(1, pos.sum())


@pytest.mark.parametrize("seed", range(5))
def test_focal_loss_matches_numpy(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 16, 16, generator=g) * 3
    target = torch.rand(2, 3, 16, 16, generator=g) ** 3
    target[target > 0.9] = 1.0
    ours = float(focal_loss(logits, target))
    assert abs(ours - numpy_focal(logits.numpy(), target.numpy())) <= 1e-5 * max(1.0, abs(ours))


def test_focal_gradients_finite_for_extreme_logits():
    logits = torch.linspace(-50, 50, 2 * 3 * 8 * 8).view(2, 3, 8, 8).requires_grad_()
    target = torch.zeros(2, 3, 8, 8)
    target[0, 0, 0, 0] = 1  # a positive at logit -50: the hardest case for a clamped sigmoid
    target[1, 2, 7, 7] = 1  # a positive at logit +50
    target[0, 1] = 0.5
    loss = focal_loss(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert logits.grad[0, 0, 0, 0] < 0  # still pushed up: the gradient was not clamped away


def test_empty_image_gives_finite_loss_and_gradient():
    logits = torch.randn(1, 4, 8, 8, requires_grad=True)
    loss = focal_loss(logits, torch.zeros(1, 4, 8, 8))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and torch.isfinite(logits.grad).all()


def test_focal_loss_is_float32_under_bf16_autocast():
    """bfloat16 logits AND target (a bf16 target does not promote the sums back to float32): the losses are float32
    and equal the float32 losses of the same values, to float32 precision (bf16 arithmetic is off by ~1e-2)."""
    logits, target = (torch.randn(1, 2, 8, 8) * 3).bfloat16(), (torch.rand(1, 2, 8, 8) ** 4).bfloat16()
    target[0, 1, 4, 4] = 1
    index, mask = torch.tensor([[3, 9]]), torch.tensor([[True, True]])
    sizes = torch.tensor([[[1.5, 2.25], [0.75, 3.0]]]).bfloat16()  # [B=1, N=2, D=2]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = focal_loss(logits, target)
        l1 = masked_l1(logits, index, sizes, mask)
    assert loss.dtype == torch.float32 and l1.dtype == torch.float32
    assert torch.isclose(loss, focal_loss(logits.float(), target.float()), rtol=1e-6)
    assert torch.isclose(l1, masked_l1(logits.float(), index, sizes.float(), mask), rtol=1e-6)


def test_ignore_removes_cells_from_the_loss():
    logits, target = torch.randn(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    ignore = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    ignore[..., :2, :] = True
    assert torch.isclose(focal_loss(logits, target, ignore=ignore), focal_loss(logits[..., 2:, :], target[..., 2:, :]))


def test_masked_l1_reads_the_centre_cells():
    pred = torch.zeros(1, 2, 4, 4)
    pred[0, :, 1, 2] = torch.tensor([3.0, 5.0])  # cell index 1 * 4 + 2 = 6
    index = torch.tensor([[6, 0, 0]])
    target = torch.tensor([[[1.0, 1.0], [2.0, 4.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    # object 0: (|3-1| + |5-1|) / 2 = 3; object 1 at cell 0 (pred 0): (2 + 4) / 2 = 3; padding ignored
    assert torch.isclose(masked_l1(pred, index, target, mask), torch.tensor(3.0))
    assert masked_l1(pred, index, target, torch.zeros_like(mask)) == 0


def test_centernet_loss_weights_and_parts():
    outputs = {"heatmap": torch.randn(2, 3, 8, 8), "offset": torch.randn(2, 2, 8, 8), "size": torch.randn(2, 2, 8, 8)}
    targets = {"heatmap": torch.zeros(2, 3, 8, 8), "index": torch.tensor([[3], [9]]),
               "offset": torch.rand(2, 1, 2), "size": torch.rand(2, 1, 2) * 5, "mask": torch.ones(2, 1, dtype=torch.bool)}
    parts = CenterNetLoss()(outputs, targets)
    assert set(parts) == {"loss", "heatmap", "offset", "size"}
    assert torch.isclose(parts["loss"], parts["heatmap"] + parts["offset"] + 0.1 * parts["size"])
