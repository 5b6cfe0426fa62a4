"""The letterbox and the normalisation against hand values, on images that are not black (issue 12)."""
import cv2
import numpy as np
import pytest
import torch

from detector.data import EvalTransform, Sample
from detector.preprocess import (IMAGENET_MEAN, IMAGENET_STD, PAD_VALUE, letterbox, letterbox_boxes, letterbox_shape,
                                 normalize, to_chw_tensor, unletterbox_boxes)


def test_normalize_channel_order_and_values():
    red = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    red[:, 0] = 255  # RGB: channel 0 is red
    out = normalize(red)
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225]
    assert out.dtype == torch.float32 and out.shape == (1, 3, 2, 2)
    for channel, value in enumerate(expected):
        assert torch.allclose(out[0, channel], torch.full((2, 2), value), atol=1e-5), channel
    single = normalize(red[0])  # [3, H, W] works too
    assert torch.equal(single, out[0])


def test_pad_value_is_the_mean_and_normalises_to_about_zero():
    assert PAD_VALUE == (124, 116, 104)
    padded = torch.tensor(PAD_VALUE, dtype=torch.uint8).view(1, 3, 1, 1)
    assert normalize(padded).abs().max() < 0.01
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)


@pytest.mark.parametrize("width, height, size, expected", [
    (100, 60, 64, (64, 38, 64, 64)),  # landscape: width fills
    (60, 100, 64, (38, 64, 64, 64)),  # portrait: height fills
    (640, 640, 512, (512, 512, 512, 512)),
    (1000, 1, 64, (64, 1, 64, 64)),  # a side never rounds to 0
    (1, 1000, 64, (1, 64, 64, 64)),
    (100, 67, 64, (64, 43, 64, 64)),  # 67 * 0.64 = 42.88: rounded, not truncated
    (67, 100, 64, (43, 64, 64, 64)),
    (33, 70, None, (33, 70, 64, 96)),  # original resolution: pad up to multiples of 32
    (64, 32, None, (64, 32, 64, 32)),  # already multiples: no padding
    (1, 1, None, (1, 1, 32, 32)),
])
def test_letterbox_shape_hand_values(width, height, size, expected):
    assert letterbox_shape(width, height, size) == expected


def test_letterbox_shape_refuses_empty_images_and_bad_sizes():
    with pytest.raises(ValueError, match="0x5"):
        letterbox_shape(0, 5, 64)
    with pytest.raises(ValueError, match="5x0"):
        letterbox_shape(5, 0, None)
    with pytest.raises(ValueError, match="100"):
        letterbox_shape(50, 50, 100)
    assert letterbox_shape(50, 50, 96, divisor=48) == (96, 96, 96, 96)


def gradient_image(height, width):
    """A non-black image whose every pixel differs from PAD_VALUE: rows, columns and channels are told apart."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([200 + ys % 50, 10 + xs % 50, np.full_like(xs, 250)], axis=-1).astype(np.uint8)


def test_letterbox_puts_the_resized_image_at_the_top_left():
    image = gradient_image(60, 100)
    out, meta = letterbox(image, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:38, :64], cv2.resize(image, (64, 38), interpolation=cv2.INTER_LINEAR))
    assert (out[38:] == PAD_VALUE).all()
    np.testing.assert_allclose(meta, [64 / 100, 38 / 60, 100, 60], rtol=1e-6)
    assert meta.dtype == np.float32


def test_letterbox_at_original_resolution_pads_right_and_bottom_only():
    image = gradient_image(33, 70)
    out, meta = letterbox(image, None)
    assert out.shape == (64, 96, 3)
    np.testing.assert_array_equal(out[:33, :70], image)
    assert (out[33:] == PAD_VALUE).all() and (out[:, 70:] == PAD_VALUE).all()
    np.testing.assert_array_equal(meta, [1, 1, 70, 33])


def test_eval_boxes_land_on_their_pixels_and_come_back():
    image = np.zeros((150, 250, 3), dtype=np.uint8)
    image[100:140, 200:240] = (255, 0, 0)  # bottom right: moving the image in the canvas moves it off its box
    image[5:25, 10:60] = (0, 255, 0)
    boxes = np.array([[200, 100, 240, 140], [10, 5, 60, 25]], dtype=np.float32)
    out = EvalTransform(128)(Sample(image, boxes, np.array([0, 1]), 3))
    pixels = out["image"].permute(1, 2, 0).numpy().astype(int)
    for box, colour in zip(out["boxes"].numpy(), [(255, 0, 0), (0, 255, 0)]):
        ys, xs = np.nonzero(np.abs(pixels - colour).sum(-1) < 60)
        np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1.6)
    restored = unletterbox_boxes(out["boxes"][None], out["meta"][None])[0]
    np.testing.assert_allclose(restored.numpy(), boxes, atol=0.1)


def test_box_mapping_hand_values_and_clipping_to_the_original_image():
    meta = torch.tensor([[0.5, 0.25, 100.0, 80.0]])
    boxes = torch.tensor([[[10.0, 20.0, 30.0, 40.0]]])
    assert torch.equal(letterbox_boxes(boxes, meta[:, None]), torch.tensor([[[5.0, 5.0, 15.0, 10.0]]]))
    outside = torch.tensor([[[-4.0, -2.0, 60.0, 30.0], [5.0, 5.0, 15.0, 10.0]]])  # input pixels
    back = unletterbox_boxes(outside, meta)
    assert torch.equal(back, torch.tensor([[[0.0, 0.0, 100.0, 80.0], [10.0, 20.0, 30.0, 40.0]]]))


def test_to_chw_tensor_layout():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # [H=2, W=3, C=3]
    out = to_chw_tensor(image)
    assert out.shape == (3, 2, 3) and out.dtype == torch.uint8
    assert out[2, 1, 0] == image[1, 0, 2]
